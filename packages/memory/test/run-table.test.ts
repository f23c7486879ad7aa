import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RUN_TABLE_CHUNK_SHIFT, RunTable } from '../src/index.js';

const CHUNK = 1 << RUN_TABLE_CHUNK_SHIFT;
const U64 = (1n << 64n) - 1n;

/** The reference: one bigint per entry. */
class Reference {
  readonly values: bigint[];
  constructor(readonly entries: number) {
    this.values = new Array(entries).fill(0n);
  }
  setRun(first: number, count: number, value: bigint, stride: bigint): void {
    for (let k = 0; k < count; k++) this.values[first + k] = (value + BigInt(k) * stride) & U64;
  }
}

const op = (entries: number) =>
  fc.record({
    first: fc.integer({ min: 0, max: entries - 1 }),
    count: fc.integer({ min: 1, max: CHUNK + 100 }),
    value: fc.oneof(
      fc.constant(0n),
      fc.bigInt({ min: 0n, max: U64 }),
      fc.bigInt({ min: 0n, max: 1n << 48n }).map((v) => v | 3n),
      fc.constant(U64 - 5n),
    ),
    stride: fc.oneof(
      fc.constant(0n),
      fc.constant(0x1000n),
      fc.constant(0x10000n),
      fc.bigInt({ min: 0n, max: (1n << 36n) - 1n }),
    ),
  });

function check(table: RunTable, ref: Reference): void {
  const seen: bigint[] = new Array(ref.entries).fill(0n);
  let last = -1;
  const problems: string[] = [];
  table.forEachRun((first, count, high, low, stride) => {
    // Runs are in order, do not overlap, and hold only non-zero entries.
    if (first <= last || count <= 0) problems.push(`run ${first}+${count} after ${last}`);
    for (let k = 0; k < count; k++) {
      const v = (((BigInt(high) << 32n) | BigInt(low)) + BigInt(k) * BigInt(stride)) & U64;
      if (v === 0n) problems.push(`zero entry ${first + k} in a run`);
      seen[first + k] = v;
    }
    last = first + count - 1;
  });
  const wrong = seen.findIndex((v, i) => v !== ref.values[i]);
  if (wrong >= 0) problems.push(`entry ${wrong}: runs give ${seen[wrong]}, expected ${ref.values[wrong]}`);
  for (let i = 0; i < ref.entries; i += 97)
    if (table.get(i) !== ref.values[i])
      problems.push(`get(${i}) = ${table.get(i)}, expected ${ref.values[i]}`);
  const nonZero = ref.values.filter((v) => v !== 0n).length;
  if (table.countNonZero() !== nonZero) problems.push(`countNonZero ${table.countNonZero()} != ${nonZero}`);
  expect(problems.slice(0, 3)).toEqual([]);
}

describe('RunTable', () => {
  it('reads exactly what a per-entry table would hold, whatever the writes (property)', () => {
    const entries = 2 * CHUNK + 123;
    fc.assert(
      fc.property(fc.array(op(entries), { maxLength: 16 }), (ops) => {
        const table = new RunTable(entries);
        const ref = new Reference(entries);
        for (const o of ops) {
          const count = Math.min(o.count, entries - o.first);
          table.setRun(
            o.first,
            count,
            Number(o.value >> 32n),
            Number(o.value & 0xffffffffn),
            Number(o.stride),
          );
          ref.setRun(o.first, count, o.value, o.stride);
        }
        check(table, ref);
      }),
      { numRuns: 40 },
    );
  }, 60_000);

  it('keeps a progression written in pieces as one run, with no slot per entry', () => {
    const entries = 1 << 24;
    const table = new RunTable(entries);
    for (let c = 0; c < entries / 512; c++) {
      const page = c * 512;
      table.setRun(page, 512, Math.floor(page / 0x10000), (((page & 0xffff) << 16) | 3) >>> 0, 0x10000);
    }
    const runs: number[][] = [];
    table.forEachRun((...r) => runs.push(r));
    expect(runs).toEqual([[0, entries, 0, 3, 0x10000]]);
    expect(table.denseChunks).toBe(0);
    expect(table.get(entries - 1)).toBe((BigInt(entries - 1) << 16n) | 3n);
    expect(table.residentBytes).toBeLessThan(64 * 1024 * 40);
  });

  it('materialises an irregular chunk and gives it back when a progression rewrites it whole', () => {
    const table = new RunTable(CHUNK * 2);
    for (let i = 0; i < 20; i++) table.setHalves(i * 3, 0, 0x1000 * (i * 7 + 1) + 1);
    expect(table.denseChunks).toBe(1);
    table.setRun(0, CHUNK, 0, 3, 0x1000);
    expect(table.denseChunks).toBe(0);
    expect(table.get(CHUNK - 1)).toBe(BigInt(CHUNK - 1) * 0x1000n + 3n);
  });

  it('clears ranges and the whole table', () => {
    const table = new RunTable(100);
    table.setRun(0, 100, 0, 0x1003, 0x1000);
    table.clearRange(10, 20);
    expect(table.get(9)).toBe(0x1003n + 9n * 0x1000n);
    expect(table.get(10)).toBe(0n);
    expect(table.get(30)).toBe(0x1003n + 30n * 0x1000n);
    expect(table.countNonZero()).toBe(80);
    table.clear();
    expect(table.countNonZero()).toBe(0);
  });

  it('refuses writes outside the table and bad strides', () => {
    const table = new RunTable(10);
    expect(() => table.setRun(8, 3, 0, 1, 0)).toThrow(RangeError);
    expect(() => table.setRun(0, 3, 0, 1, 2 ** 40)).toThrow(RangeError);
    expect(table.get(-1)).toBe(0n);
    expect(table.get(10)).toBe(0n);
  });
});
