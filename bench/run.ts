/**
 * `npm run bench [-- --json] [-- --filter NAME]`: runs every benchmark in bench/*.bench.ts and
 * prints its figure, its same-run baseline and their ratio. Benchmarks are not tests: nothing here
 * fails on a slow machine.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { type Benchmark, type BenchResult, runBenchmark } from './harness.js';

const { values: options } = parseArgs({
  options: { json: { type: 'boolean', default: false }, filter: { type: 'string' } },
});

const dir = fileURLToPath(new URL('.', import.meta.url));
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .sort();
const benchmarks: Benchmark[] = [];
for (const file of files) {
  const mod = (await import(pathToFileURL(`${dir}${file}`).href)) as { benchmarks: Benchmark[] };
  benchmarks.push(...mod.benchmarks);
}
const selected = benchmarks.filter((b) => !options.filter || b.name.includes(options.filter));

const results: BenchResult[] = [];
for (const b of selected) {
  const r = await runBenchmark(b);
  results.push(r);
  if (!options.json) {
    const target = b.target
      ? ` (target${b.target.value !== undefined ? ` >= ${b.target.value} ${b.unit}` : ''}${b.target.ratio !== undefined ? ` ratio >= ${b.target.ratio}` : ''})`
      : '';
    console.log(
      `${r.name.padEnd(28)} ${fmt(r.value).padStart(10)} ${r.unit.padEnd(8)} baseline ${fmt(r.baseline).padStart(10)} ${r.unit.padEnd(8)} (${b.baselineLabel})  ratio ${r.ratio.toFixed(3)}${target}`,
    );
    if (r.details) {
      console.log(
        `${''.padEnd(28)} ${Object.entries(r.details)
          .map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`)
          .join(', ')}`,
      );
    }
  }
}
if (options.json) console.log(JSON.stringify(results));

function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3);
}
