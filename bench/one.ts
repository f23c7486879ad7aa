/**
 * `node --import tsx --expose-gc bench/one.ts FILE [--filter NAME]`: runs the benchmarks of one
 * bench/*.bench.ts file in this process and prints each result as soon as it has it, on a line of
 * its own: RESULT_PREFIX, then a LabelledResult as JSON. bench/run.ts spawns one of these per file
 * and aggregates the lines (anything else the child prints goes on to stderr). A benchmark that
 * throws is reported on stderr, the file's other benchmarks still run, and the exit code is 1.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { type Benchmark, collectGarbage, RESULT_PREFIX, runBenchmark, selected } from './harness.js';

const { values: options, positionals } = parseArgs({
  options: { filter: { type: 'string' } },
  allowPositionals: true,
});
const file = positionals[0];
if (!file || positionals.length > 1) throw new Error('usage: bench/one.ts FILE [--filter NAME]');
const mod = (await import(pathToFileURL(resolve(file)).href)) as { benchmarks?: Benchmark[] };
if (!Array.isArray(mod.benchmarks)) throw new Error(`${file} exports no benchmarks array`);
for (const b of mod.benchmarks.filter((x) => selected(x, options.filter))) {
  collectGarbage();
  try {
    for (const r of await runBenchmark(b)) process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(r)}\n`);
  } catch (error) {
    process.exitCode = 1;
    console.error(`${b.name} failed:`, error);
  }
}
