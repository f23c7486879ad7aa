/**
 * The benchmark contract: each benchmark measures its own figure and a baseline doing comparable
 * plain work in the same run, so ratios stay meaningful on a shared, noisy machine. Figures are
 * medians over several rounds.
 */
export interface Benchmark {
  readonly name: string;
  /** Unit of `value` and `baseline`, e.g. "GiB/s", "M/s". */
  readonly unit: string;
  /** What the baseline is, for the human-readable table. */
  readonly baselineLabel: string;
  /** Minimum acceptable ratio, when the issue sets one (reported, never asserted). */
  readonly target?: { ratio?: number; value?: number };
  /** Builds state once; returns the two measured loops. Each returns its figure for one round. */
  setup(): BenchLoops | Promise<BenchLoops>;
  /** Rounds to take the median over (default 7). */
  readonly rounds?: number;
}

export interface BenchLoops {
  measure(): number;
  baseline(): number;
  /** Figures beside the main one (peak memory, wall time, ...), read once after the rounds. */
  details?(): Record<string, number | string>;
}

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  ratio: number;
  details?: Record<string, number | string>;
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

export async function runBenchmark(b: Benchmark): Promise<BenchResult> {
  const { measure, baseline, details } = await b.setup();
  // Warm both paths so neither round pays for compilation.
  measure();
  baseline();
  const values: number[] = [];
  const baselines: number[] = [];
  for (let i = 0; i < (b.rounds ?? 7); i++) {
    // Interleave, so a burst of load on the machine hits both sides alike.
    values.push(measure());
    baselines.push(baseline());
  }
  const value = median(values);
  const base = median(baselines);
  return {
    name: b.name,
    value,
    unit: b.unit,
    baseline: base,
    ratio: base === 0 ? 0 : value / base,
    ...(details ? { details: details() } : {}),
  };
}
