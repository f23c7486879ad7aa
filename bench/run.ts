/**
 * `npm run bench [-- --json] [-- --filter NAME]`: runs the benchmarks of bench/*.bench.ts and
 * prints each one's figure, its same-run baseline, their ratio and its target. Each file runs in a
 * process of its own (bench/one.ts, one file after the other), so one file's heap, caches and
 * compiled code cannot skew another's figures. `--filter` keeps the benchmarks with NAME in their
 * name (or in the name of a result they report beside it); files with none are not run. `--json`
 * prints one JSON array of `{name, value, unit, baseline, ratio, target?, details?}`.
 *
 * Benchmarks are not tests: a slow figure or a missed target fails nothing. A file whose process
 * crashes or is killed is reported on one line naming the file, and the exit code is then 1.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  type Benchmark,
  type BenchResult,
  type LabelledResult,
  RESULT_PREFIX,
  resultNames,
  type Target,
  targetMet,
} from './harness.js';

const { values: options } = parseArgs({
  options: { json: { type: 'boolean', default: false }, filter: { type: 'string' } },
});

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = dirname(benchDir);
// tsx's ESM loader by file URL, so the children find it whatever the working directory.
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const files = readdirSync(benchDir)
  .filter((f) => f.endsWith('.bench.ts'))
  .sort()
  .map((f) => join(benchDir, f));

const results: BenchResult[] = [];
let failures = 0;
let ran = 0;
for (const file of files) {
  if (options.filter !== undefined && !(await namesIn(file)).some((n) => n.includes(options.filter!)))
    continue;
  ran++;
  const status = await runFile(file, (r) => {
    results.push(r.result);
    if (!options.json) printResult(r);
  });
  if (status !== undefined) {
    failures++;
    // One line naming the file; with --json on stderr, so stdout stays one JSON array.
    (options.json ? console.error : console.log)(`${relative(root, file)}: FAILED (${status})`);
  }
}
if (ran === 0) {
  console.error(`no benchmark matches --filter ${options.filter}`);
  failures++;
}
if (options.json) console.log(JSON.stringify(results));
if (failures > 0) process.exitCode = 1;

/**
 * Runs one file's benchmarks in a child process; `onResult` gets each result as it arrives.
 * Resolves to undefined when the child ended well, else to why it did not.
 */
function runFile(file: string, onResult: (r: LabelledResult) => void): Promise<string | undefined> {
  return new Promise((resolvePromise) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        tsxLoader,
        '--expose-gc',
        join(benchDir, 'one.ts'),
        file,
        ...(options.filter !== undefined ? ['--filter', options.filter] : []),
      ],
      { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let count = 0;
    let malformed: string | undefined;
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      if (!line.startsWith(RESULT_PREFIX)) {
        process.stderr.write(`${line}\n`); // the benchmark's own output
        return;
      }
      try {
        onResult(JSON.parse(line.slice(RESULT_PREFIX.length)) as LabelledResult);
        count++;
      } catch (error) {
        malformed ??= `unreadable result line: ${(error as Error).message}`;
      }
    });
    let spawnError: Error | undefined;
    child.on('error', (error) => {
      spawnError = error;
    });
    // 'close': the process has exited and its stdout has been read to the end.
    child.on('close', (code, signal) => {
      if (spawnError) resolvePromise(`could not start: ${spawnError.message}`);
      else if (signal) resolvePromise(`killed by ${signal}${count ? ` after ${count} result(s)` : ''}`);
      else if (code !== 0) resolvePromise(`exit code ${code}${count ? ` after ${count} result(s)` : ''}`);
      else if (malformed) resolvePromise(malformed);
      else if (count === 0) resolvePromise('no results');
      else resolvePromise(undefined);
    });
  });
}

/**
 * The names a file's benchmarks report under, to decide whether --filter selects the file without
 * running it. From the module's `benchmarks` when it imports (importing runs no benchmark); when it
 * does not (a package API it uses is being changed), from the `name: '...'` literals in its text,
 * so the file still runs, in its own process, and reports what is wrong there.
 */
async function namesIn(file: string): Promise<string[]> {
  try {
    const mod = (await import(pathToFileURL(file).href)) as { benchmarks?: Benchmark[] };
    if (Array.isArray(mod.benchmarks)) return mod.benchmarks.flatMap(resultNames);
  } catch {
    // fall through to the text
  }
  return [...readFileSync(file, 'utf8').matchAll(/\bname:\s*['"`]([^'"`]+)['"`]/g)].map((m) => m[1]!);
}

function printResult({ result: r, baselineLabel }: LabelledResult): void {
  console.log(
    `${r.name.padEnd(28)} ${fmt(r.value).padStart(10)} ${r.unit.padEnd(8)} baseline ${fmt(r.baseline).padStart(10)} ${r.unit.padEnd(8)} (${baselineLabel})  ratio ${r.ratio.toFixed(3)}${targetText(r)}`,
  );
  if (r.details) {
    console.log(
      `${''.padEnd(28)} ${Object.entries(r.details)
        .map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`)
        .join(', ')}`,
    );
  }
}

function targetText(r: BenchResult): string {
  const t: Target | undefined = r.target;
  if (!t) return '';
  const parts = [
    ...(t.value !== undefined ? [`>= ${t.value} ${r.unit}`] : []),
    ...(t.max !== undefined ? [`<= ${t.max} ${r.unit}`] : []),
    ...(t.ratio !== undefined ? [`ratio >= ${t.ratio}`] : []),
  ];
  if (parts.length === 0) return '';
  return ` (target ${parts.join(', ')}: ${targetMet(r) ? 'met' : 'missed'})`;
}

function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3);
}
