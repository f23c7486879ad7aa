/**
 * The benchmark contract: each benchmark measures its own figure and a baseline doing comparable
 * plain work in the same run, so ratios stay meaningful on a shared, noisy machine. Figures are
 * medians over several rounds. Every bench/*.bench.ts file runs in its own process (bench/run.ts
 * spawns bench/one.ts per file), so one file's heap and caches cannot skew another's figures.
 */

/**
 * What the issue asks of a figure; reported, never asserted. `value`: figure >= value; `max`:
 * figure <= max (sizes, memory); `ratio`: figure / baseline >= ratio.
 */
export interface Target {
  ratio?: number;
  value?: number;
  max?: number;
}

export interface Benchmark {
  readonly name: string;
  /** Unit of `value` and `baseline`, e.g. "GiB/s", "M/s". */
  readonly unit: string;
  /** What the baseline is, for the human-readable table. */
  readonly baselineLabel: string;
  readonly target?: Target;
  /** Builds state once; returns the two measured loops. Each returns its figure for one round. */
  setup(): BenchLoops | Promise<BenchLoops>;
  /** Rounds to take the median over (default 7). */
  readonly rounds?: number;
  /**
   * Run measure and baseline once, unrecorded, before the rounds (default true). Benchmarks whose
   * round takes long warm their paths in setup instead and set this to false.
   */
  readonly warmup?: boolean;
  /**
   * Results this benchmark reports beside its own, from the same rounds (e.g. memory or file size
   * next to a rate); listed here so `--filter` finds them by name. Their figures come from
   * BenchLoops.extra.
   */
  readonly extra?: readonly ExtraResultSpec[];
}

export interface ExtraResultSpec {
  readonly name: string;
  readonly unit: string;
  readonly baselineLabel: string;
  readonly target?: Target;
}

export interface BenchLoops {
  measure(): number | Promise<number>;
  baseline(): number | Promise<number>;
  /** Figures beside the main one (peak memory, wall time, ...), read once after the rounds. */
  details?(): Record<string, number | string>;
  /** The figures of the benchmark's `extra` results, by name, read once after the rounds. */
  extra?(): Record<string, ExtraFigures>;
}

export interface ExtraFigures {
  value: number;
  baseline: number;
  details?: Record<string, number | string>;
}

/** One result, as `npm run bench -- --json` prints it. */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  ratio: number;
  target?: Target;
  details?: Record<string, number | string>;
}

/** A result with what the human-readable table needs beside it (what bench/one.ts emits). */
export interface LabelledResult {
  result: BenchResult;
  baselineLabel: string;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Runs `fn` repeatedly for at least `minMs` and returns operations per second (ops per call × calls / s). */
export function throughput(fn: () => number, minMs = 150): number {
  let ops = 0;
  const start = performance.now();
  let elapsed = 0;
  do {
    ops += fn();
    elapsed = performance.now() - start;
  } while (elapsed < minMs);
  return (ops / elapsed) * 1000;
}

/** Collects garbage when the process runs with --expose-gc (bench/one.ts does), so rounds start alike. */
export function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/** Every name a benchmark reports under (its own and its extra results'), for --filter. */
export function resultNames(b: Benchmark): string[] {
  return [b.name, ...(b.extra ?? []).map((e) => e.name)];
}

/** Whether `--filter` selects `b`: a substring of its name or of one of its extra results'. */
export function selected(b: Benchmark, filter: string | undefined): boolean {
  return !filter || resultNames(b).some((n) => n.includes(filter));
}

/** bench/one.ts prints each result on a line of its own: this, then a LabelledResult as JSON. */
export const RESULT_PREFIX = '@ddw-bench-result ';

export async function runBenchmark(b: Benchmark): Promise<LabelledResult[]> {
  const { measure, baseline, details, extra } = await b.setup();
  if (b.warmup ?? true) {
    // Warm both paths so neither round pays for compilation.
    await measure();
    await baseline();
  }
  const values: number[] = [];
  const baselines: number[] = [];
  for (let i = 0; i < (b.rounds ?? 7); i++) {
    // Interleave, so a burst of load on the machine hits both sides alike.
    values.push(await measure());
    baselines.push(await baseline());
  }
  const value = median(values);
  const base = median(baselines);
  const out: LabelledResult[] = [
    {
      result: {
        name: b.name,
        value,
        unit: b.unit,
        baseline: base,
        ratio: base === 0 ? 0 : value / base,
        ...(b.target ? { target: b.target } : {}),
        ...(details ? { details: details() } : {}),
      },
      baselineLabel: b.baselineLabel,
    },
  ];
  const figures = b.extra?.length ? (extra?.() ?? {}) : {};
  for (const spec of b.extra ?? []) {
    const f = figures[spec.name];
    if (!f) throw new Error(`${b.name}: no figures for its extra result ${spec.name}`);
    out.push({
      result: {
        name: spec.name,
        value: f.value,
        unit: spec.unit,
        baseline: f.baseline,
        ratio: f.baseline === 0 ? 0 : f.value / f.baseline,
        ...(spec.target ? { target: spec.target } : {}),
        ...(f.details ? { details: f.details } : {}),
      },
      baselineLabel: spec.baselineLabel,
    });
  }
  return out;
}

/** Whether a result meets its target (undefined when it has none). */
export function targetMet(r: BenchResult): boolean | undefined {
  const t = r.target;
  if (!t || (t.value === undefined && t.max === undefined && t.ratio === undefined)) return undefined;
  return (
    (t.value === undefined || r.value >= t.value) &&
    (t.max === undefined || r.value <= t.max) &&
    (t.ratio === undefined || r.ratio >= t.ratio)
  );
}
