import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createMachine,
  loadSnapshot,
  type Machine,
  MachineTokens,
  SnapshotError,
  saveSnapshot,
  snapshotInfo,
  type VarraySource,
  type VarrayView,
  VMState,
  type VMStateDescription,
  type VMStateElementType,
  type VMStateLoaded,
} from '../src/index.js';
import { VARRAY_BLOCK_ELEMENTS } from '../src/vmstate/varray/format.js';
import { reseal } from './support/snapshot-layout.js';

/** Affine VARRAY blocks: sources with forEachRun, their encoding, and the loaded view's runs. */

const B = VARRAY_BLOCK_ELEMENTS;
const U64 = 1n << 64n;
type RunFn = (first: number, count: number, high: number, low: number, stride: number) => void;

class Holder {
  n = 0;
  table: unknown = null;
  loaded: VMStateLoaded | undefined;
}

const holderDescription = (element: VMStateElementType): VMStateDescription<Holder> => ({
  name: 'holder',
  version: 1,
  fields: [VMState.uint32('n'), VMState.varrayUint32Alloc('table', 'n', element)],
  postLoad: (o, loaded) => {
    o.loaded = loaded;
  },
});

async function holderMachine(holder: Holder, element: VMStateElementType = 'uint64'): Promise<Machine> {
  return createMachine(
    [
      {
        name: 'holder',
        register: (ctx) =>
          void ctx.get(MachineTokens.Vmstate).register(holderDescription(element), 0, holder, ctx.plugin),
      },
    ],
    { ram: '256M' },
  );
}

const halves = (v: bigint): [number, number] => [Number(v >> 32n), Number(v & 0xffffffffn)];

/** A run: `count` elements from `first`, value + k*stride. */
interface Run {
  first: number;
  count: number;
  value: bigint;
  stride: number;
}

/** The elements `runs` describe, in an array of `length`. */
function materialise(length: number, runs: readonly Run[]): BigUint64Array {
  const out = new BigUint64Array(length);
  for (const r of runs) {
    let v = r.value;
    const s = BigInt(r.stride);
    for (let k = 0; k < r.count; k++) {
      out[r.first + k] = v;
      v = (v + s) % U64;
    }
  }
  return out;
}

/** A source that gives `runs` as they are through forEachRun, and the elements through forEachNonZero. */
function runSource(length: number, runs: readonly Run[]): VarraySource {
  const values = materialise(length, runs);
  return {
    length,
    forEachNonZero(fn) {
      for (let i = 0; i < length; i++) if (values[i] !== 0n) fn(i, ...halves(values[i]!));
    },
    forEachRun(fn: RunFn) {
      for (const r of runs) fn(r.first, r.count, ...halves(r.value), r.stride);
    },
  };
}

/** The same elements through forEachNonZero only. */
function elementSource(values: BigUint64Array): VarraySource {
  return {
    length: values.length,
    forEachNonZero(fn) {
      for (let i = 0; i < values.length; i++) if (values[i] !== 0n) fn(i, ...halves(values[i]!));
    },
  };
}

/** Every element of a view, through forEachNonZero. */
function elementsOf(view: VarrayView): BigUint64Array {
  const out = new BigUint64Array(view.length);
  view.forEachNonZero((i, h, l) => {
    if (h === 0 && l === 0) throw new Error(`forEachNonZero gave element ${i} = 0`);
    out[i] = (BigInt(h) << 32n) | BigInt(l);
  });
  return out;
}

/** Every element of a view, through forEachRun, checking what a run promises. */
function runsOf(view: VarrayView): { values: BigUint64Array; runs: number } {
  const out = new BigUint64Array(view.length);
  let next = 0;
  let runs = 0;
  let previous: { end: number; last: bigint; stride: number; count: number } | undefined;
  view.forEachRun((first, count, high, low, stride) => {
    runs++;
    const broken = (what: string) =>
      new Error(`forEachRun(${first}, ${count}, ${high}, ${low}, ${stride}): ${what}`);
    if (!(first >= next && count >= 1 && first + count <= view.length)) throw broken('out of order or range');
    if (!(Number.isInteger(stride) && stride >= 0 && stride < 2 ** 36)) throw broken('bad stride');
    let v = (BigInt(high) << 32n) | BigInt(low);
    // Runs are maximal: one that continues the previous progression would have been joined to it.
    if (previous && previous.end === first && previous.count > 1 && count > 1)
      if (previous.stride === stride && (previous.last + BigInt(stride)) % U64 === v)
        throw broken('not maximal');
    for (let k = 0; k < count; k++) {
      if (v === 0n) throw broken(`element ${first + k} is 0`);
      out[first + k] = v;
      if (k < count - 1) v = (v + BigInt(stride)) % U64;
    }
    previous = { end: first + count, last: v, stride, count };
    next = first + count;
  });
  return { values: out, runs };
}

const same = (a: BigUint64Array, b: BigUint64Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

let src: Machine;
let dst: Machine;
const source = new Holder();
const target = new Holder();
beforeAll(async () => {
  src = await holderMachine(source);
  dst = await holderMachine(target);
});
afterAll(() => {
  src.dispose();
  dst.dispose();
});

/** Saves `table` (of `n` elements), loads it into the target; the bytes and the loaded view. */
function roundTrip(n: number, table: unknown): { bytes: Uint8Array; view: VarrayView; size: number } {
  source.n = n;
  source.table = table;
  const bytes = saveSnapshot(src);
  loadSnapshot(dst, bytes);
  const view = target.loaded!.fields.table as VarrayView;
  return { bytes, view, size: snapshotInfo(bytes).sections[1]!.size };
}

describe('affine VARRAY blocks', () => {
  it('a 16M-element uint64 table that is one progression costs a few dozen bytes, and loads as one run', () => {
    const n = 1 << 24;
    const table = runSource(n, [{ first: 0, count: n, value: 0x2000_0000_0003n, stride: 0x1_0000 }]);
    table.forEachNonZero = () => {
      throw new Error('a source with runs is saved from its runs');
    };
    const t0 = performance.now();
    const { view, size, bytes } = roundTrip(n, table);
    const elapsed = performance.now() - t0;
    // Section header (marker, index, name, instance, version: 20 bytes), n, one affine record
    // (tag, count, value, stride: 21 bytes), footer (5 bytes).
    expect(size).toBe(20 + 4 + 21 + 5);
    expect(bytes.length).toBeLessThan(400);
    expect(elapsed).toBeLessThan(1000);
    const runs: number[][] = [];
    view.forEachRun((...run) => void runs.push(run));
    expect(runs).toEqual([[0, n, 0x2000, 3, 0x1_0000]]);
    expect(view.get(0)).toBe(0x2000_0000_0003n);
    expect(view.get(n - 1)).toBe(0x2000_0000_0003n + BigInt(n - 1) * 0x1_0000n);
    expect(view.get(12_345_678)).toBe(0x2000_0000_0003n + 12_345_678n * 0x1_0000n);
    expect(view.get(n)).toBe(0n);
    let count = 0;
    view.forEachNonZero(() => count++);
    expect(count).toBe(n);
  });

  it('blocks wholly in one run are affine, others literal, empty ones a zero run', () => {
    const n = 6 * B + 100;
    const runs: Run[] = [
      { first: 5, count: 2 * B, value: 7n, stride: 3 }, // block 0 partly (literal), block 1 wholly, block 2 partly
      { first: 3 * B, count: B, value: U64 - 1n, stride: 0 }, // block 3: a constant
      { first: 4 * B, count: B, value: 1n << 40n, stride: 2 ** 36 - 1 }, // block 4, the largest stride
      { first: 6 * B, count: 100, value: 1n, stride: 1 }, // the short last block
    ];
    const { view, size } = roundTrip(n, runSource(n, runs));
    expect(same(elementsOf(view), materialise(n, runs))).toBe(true);
    // Literal: block 0 and 2. Affine: 1, 3, 4, 6 (each its own progression). Zero: 5.
    const header = 20 + 4 + 5;
    expect(size).toBe(header + 2 * (1 + 8 * B) + 4 * 21 + 5);
    const { values, runs: count } = runsOf(view);
    expect(same(values, materialise(n, runs))).toBe(true);
    expect(count).toBe(4);
  });

  it('consecutive blocks of one progression are one record, however the source cuts its runs', () => {
    const n = 4 * B;
    const whole = [{ first: 0, count: n, value: 0x1000n, stride: 0x1000 }];
    const cut = [
      { first: 0, count: 10, value: 0x1000n, stride: 0x1000 },
      { first: 10, count: 1, value: 0x1000n * 11n, stride: 0 },
      { first: 11, count: B + 1, value: 0x1000n * 12n, stride: 0x1000 },
      { first: B + 12, count: n - B - 12, value: 0x1000n * BigInt(B + 13), stride: 0x1000 },
    ];
    const a = roundTrip(n, runSource(n, whole));
    const b = roundTrip(n, runSource(n, cut));
    expect(Buffer.from(b.bytes).equals(a.bytes)).toBe(true);
    expect(a.size).toBe(20 + 4 + 21 + 5);
    // Saved again from the loaded view (which has forEachRun): the same bytes.
    expect(Buffer.from(roundTrip(n, b.view).bytes).equals(a.bytes)).toBe(true);
  });

  it('a run that wraps through 2^64 has a zero element there: its block is literal', () => {
    const n = 2 * B;
    const runs = [{ first: 0, count: n, value: U64 - 5n * 0x10n, stride: 0x10 }];
    const { view } = roundTrip(n, runSource(n, runs));
    const expected = materialise(n, runs);
    expect(expected[5]).toBe(0n);
    expect(same(elementsOf(view), expected)).toBe(true);
    expect(view.get(5)).toBe(0n);
    expect(view.get(6)).toBe(0x10n);
    const { values, runs: count } = runsOf(view);
    expect(same(values, expected)).toBe(true);
    expect(count).toBe(2);
  });

  it('an affine record that wraps through zero (as another writer may write it) loads with the zero left out', () => {
    const n = 2 * B;
    // Save a progression, then make its value wrap: a single record over both blocks.
    const { bytes } = roundTrip(n, runSource(n, [{ first: 0, count: n, value: 0x100n, stride: 0x10 }]));
    const wrapped = reseal(bytes, undefined, (payload, at) => {
      const view = new DataView(payload.buffer, payload.byteOffset);
      const record = at(1) + 20 + 4; // the holder section's header and n
      expect(payload[record]).toBe(0x02);
      view.setBigUint64(record + 5, U64 - 0x10n * 100n);
    });
    loadSnapshot(dst, wrapped);
    const view = target.loaded!.fields.table as VarrayView;
    const expected = materialise(n, [{ first: 0, count: n, value: U64 - 0x10n * 100n, stride: 0x10 }]);
    expect(same(elementsOf(view), expected)).toBe(true);
    const { values, runs } = runsOf(view);
    expect(same(values, expected)).toBe(true);
    expect(runs).toBe(2);
  });

  it('literal, zero and affine blocks round-trip exactly, for any run layout and any way of cutting it', () => {
    const value = fc.oneof(
      fc.bigInt({ min: 1n, max: 0xffffn }),
      fc.bigInt({ min: U64 - 0x10000n, max: U64 - 1n }),
      fc.bigInt({ min: 0n, max: U64 - 1n }),
    );
    const stride = fc.oneof(
      fc.constantFrom(0, 1, 0x1000, 2 ** 36 - 1),
      fc.integer({ min: 0, max: 2 ** 36 - 1 }),
    );
    const piece = fc.record({
      gap: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 2 * B })),
      align: fc.boolean(),
      count: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 3 * B }), fc.constant(B)),
      value,
      stride,
    });
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 8 }),
        fc.integer({ min: 0, max: 100 }),
        fc.array(fc.integer({ min: 1, max: 1 << 20 }), { maxLength: 6 }),
        (pieces, tail, cuts) => {
          const runs: Run[] = [];
          let at = 0;
          for (const p of pieces) {
            let first = at + p.gap;
            if (p.align) first = Math.ceil(first / B) * B;
            if (first + p.count > 8 * B) break;
            runs.push({ first, count: p.count, value: p.value, stride: p.stride });
            at = first + p.count;
          }
          const n = at + tail || 1;
          const expected = materialise(n, runs);
          const { bytes, view } = roundTrip(n, runSource(n, runs));
          expect(same(elementsOf(view), expected)).toBe(true);
          const { values } = runsOf(view);
          expect(same(values, expected)).toBe(true);
          for (const i of [0, n - 1, ...cuts.map((c) => c % n)]) expect(view.get(i)).toBe(expected[i]);
          // Cut the same runs elsewhere: the same file.
          const recut: Run[] = [];
          for (const r of runs) {
            let k = 0;
            for (const c of cuts) {
              const len = Math.min(r.count - k, c % 40 === 0 ? 1 : c % (r.count + 1));
              if (len <= 0) continue;
              recut.push({
                ...r,
                first: r.first + k,
                count: len,
                value: (r.value + BigInt(k) * BigInt(r.stride)) % U64,
              });
              k += len;
            }
            if (k < r.count)
              recut.push({
                ...r,
                first: r.first + k,
                count: r.count - k,
                value: (r.value + BigInt(k) * BigInt(r.stride)) % U64,
              });
          }
          expect(Buffer.from(roundTrip(n, runSource(n, recut)).bytes).equals(bytes)).toBe(true);
          // From the loaded view: the same file; from the elements alone (literal blocks): the same elements.
          expect(Buffer.from(roundTrip(n, view).bytes).equals(bytes)).toBe(true);
          expect(same(elementsOf(roundTrip(n, elementSource(expected)).view), expected)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  }, 60_000);

  it('a source whose runs break their promise cannot be saved, naming the section and the field', () => {
    const n = 2 * B;
    const bad = (runs: [number, number, number, number, number][]) => {
      source.n = n;
      source.table = {
        length: n,
        forEachNonZero() {},
        forEachRun(fn: RunFn) {
          for (const r of runs) fn(...r);
        },
      };
      try {
        saveSnapshot(src);
      } catch (error) {
        expect(error).toBeInstanceOf(SnapshotError);
        return (error as Error).message;
      }
      throw new Error('saved');
    };
    const prefix = 'snapshot section "holder" (instance 0x0): cannot be saved: VARRAY table: ';
    expect(
      bad([
        [5, 2, 0, 1, 1],
        [6, 1, 0, 1, 0],
      ]),
    ).toBe(`${prefix}a run of 1 elements at 6 is out of order or out of range`);
    expect(bad([[n - 1, 2, 0, 1, 1]])).toBe(
      `${prefix}a run of 2 elements at ${n - 1} is out of order or out of range`,
    );
    // Beyond the end, in the last (short) block, after elements of it.
    source.n = B + 5;
    const short = {
      length: B + 5,
      forEachNonZero() {},
      forEachRun(fn: RunFn) {
        for (const i of [B, B + 1, B + 7]) fn(i, 1, 1, i, 0);
      },
    };
    source.table = short;
    expect(() => saveSnapshot(src)).toThrow(
      `${prefix}a run of 1 elements at ${B + 7} is out of order or out of range`,
    );
    expect(bad([[0, 0, 0, 1, 1]])).toBe(`${prefix}a run of 0 elements at 0 is out of order or out of range`);
    expect(bad([[0.5, 1, 0, 1, 1]])).toBe(
      `${prefix}a run of 1 elements at 0.5 is out of order or out of range`,
    );
    expect(bad([[0, 2, 2 ** 32, 1, 1]])).toBe(`${prefix}element 0 does not fit in a uint64`);
    expect(bad([[0, 2, 0, -1, 1]])).toBe(`${prefix}element 0 does not fit in a uint64`);
    expect(bad([[0, 2, 0, 1, 2 ** 36]])).toBe(
      `${prefix}the run at 0 has stride 68719476736, not an integer in [0, 2^36)`,
    );
    expect(bad([[0, 2, 0, 1, 1.5]])).toBe(
      `${prefix}the run at 0 has stride 1.5, not an integer in [0, 2^36)`,
    );
  });

  it('narrower elements are saved from forEachNonZero, never as affine blocks', async () => {
    const holder = new Holder();
    const into = new Holder();
    const [m, d] = [await holderMachine(holder, 'uint32'), await holderMachine(into, 'uint32')];
    try {
      const n = 2 * B;
      const table = runSource(n, [{ first: 0, count: n, value: 1n, stride: 1 }]);
      table.forEachRun = () => {
        throw new Error('not used for uint32 elements');
      };
      holder.n = n;
      holder.table = table;
      const bytes = saveSnapshot(m);
      expect(snapshotInfo(bytes).sections[1]!.size).toBe(20 + 4 + 2 * (1 + 4 * B) + 5);
      loadSnapshot(d, bytes);
      const view = into.loaded!.fields.table as VarrayView;
      expect(view.get(n - 1)).toBe(BigInt(n));
      const runs: number[][] = [];
      view.forEachRun((...r) => void runs.push(r));
      expect(runs).toEqual([[0, n, 0, 1, 1]]);
      // An affine record in a uint32 VARRAY (as another writer may write it) is refused.
      const affine = reseal(bytes, undefined, (payload, at) => {
        const p = at(1) + 24;
        payload.set([0x02, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x7e, 0, 0, 0, 1], p);
      });
      expect(() => loadSnapshot(d, affine)).toThrow(
        'snapshot section "holder" (instance 0x0): VARRAY table: affine blocks at block 0 in a VARRAY of uint32',
      );
    } finally {
      m.dispose();
      d.dispose();
    }
  });

  it('refuses affine records that do not fit: a stride of 2^36 or more, no blocks, too many blocks', () => {
    const n = 3 * B;
    const { bytes } = roundTrip(n, runSource(n, [{ first: 0, count: n, value: 1n, stride: 1 }]));
    const patched = (patch: (view: DataView, record: number) => void) =>
      reseal(bytes, undefined, (payload, at) =>
        patch(new DataView(payload.buffer, payload.byteOffset), at(1) + 24),
      );
    const error = (file: Uint8Array) => {
      try {
        loadSnapshot(dst, file);
      } catch (e) {
        expect(e).toBeInstanceOf(SnapshotError);
        return (e as Error).message.replace('snapshot section "holder" (instance 0x0): ', '');
      }
      throw new Error('loaded');
    };
    expect(error(patched((v, r) => v.setUint32(r + 13, 16)))).toBe(
      'VARRAY table: affine blocks at block 0 have stride 0x1000000001, 2^36 or more',
    );
    expect(error(patched((v, r) => v.setUint32(r + 1, 0)))).toBe(
      'VARRAY table: a run of 0 affine blocks at block 0 of 3',
    );
    expect(error(patched((v, r) => v.setUint32(r + 1, 4)))).toBe(
      'VARRAY table: a run of 4 affine blocks at block 0 of 3',
    );
    expect(error(patched((v, r) => v.setUint32(r + 1, 2)))).toBe(
      'VARRAY table: unknown block tag 0x7e at block 2',
    );
  });
});

describe('VarrayView', () => {
  it('forEachRun finds the progressions in literal blocks, and gives lone elements as runs of 1', () => {
    const n = B + 10;
    const values = new BigUint64Array(n);
    for (let i = 0; i < 5; i++) values[i] = 100n + BigInt(i) * 8n; // a progression
    values[5] = 3n; // breaks it
    values[6] = 3n; // a constant pair
    values[8] = 9n; // alone
    for (let i = B - 3; i < B + 4; i++) values[i] = BigInt(i); // across the block boundary
    values[B + 9] = U64 - 1n;
    const { view } = roundTrip(n, elementSource(values));
    const runs: number[][] = [];
    view.forEachRun((...r) => void runs.push(r));
    expect(runs).toEqual([
      [0, 5, 0, 100, 8],
      [5, 2, 0, 3, 0],
      [8, 1, 0, 9, 0],
      [B - 3, 7, 0, B - 3, 1],
      [B + 9, 1, 0xffffffff, 0xffffffff, 0],
    ]);
    expect(same(runsOf(view).values, values)).toBe(true);
    expect(view.toArray().slice(0, 10)).toEqual([100n, 108n, 116n, 124n, 132n, 3n, 3n, 0n, 9n, 0n]);
  });
});
