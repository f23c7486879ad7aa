/**
 * The batch contract: whatever a TCE hypercall stores, every notifier hears exactly the per-page
 * events QEMU's put_tce_emu loop would send it (memory_region_notify_iommu per page: its flags, its
 * range, pages straddling its range's edges skipped, notifiers in registration order per page),
 * whether it takes batches or single pages, and the table holds what a per-entry table would.
 * The model computes the expected events page by page; the implementation sends batches.
 */
import { createMachine, type Machine } from '@ddw/machine';
import {
  batchEvent,
  IOMMUAccessFlags,
  IOMMUNotifier,
  IOMMUNotifierFlag,
  type IOMMUTLBEntry,
} from '@ddw/memory';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_STUFF_TCE,
  SpaprIommuTokens,
  type SpaprTceTable,
  spaprIommu,
} from '../src/index.js';

const LIOBN = 0x80000000;
const BUS = 1n << 40n;
const LIST = 0x10_0000n;
const U64 = (1n << 64n) - 1n;
const H_SUCCESS = 0n;
const H_PARAMETER = -4n;

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function tableOf(pageShift: number, entries: number): Promise<{ m: Machine; table: SpaprTceTable }> {
  let table!: SpaprTceTable;
  const m = await createMachine(
    [
      spaprIommu(),
      {
        name: 'test-phb',
        requires: ['spapr-iommu'],
        register(ctx) {
          table = ctx.get(SpaprIommuTokens.Tables).create(LIOBN, 'test-phb');
          table.enable(pageShift, BUS, entries);
        },
      },
    ],
    { ram: '1G' },
  );
  machines.push(m);
  return { m, table };
}

type Op =
  | { kind: 'put'; page: number; tce: bigint }
  | { kind: 'stuff'; page: number; tce: bigint; count: number }
  | { kind: 'indirect'; page: number; tces: bigint[] };

interface NotifierSpec {
  flags: number;
  /** Range in bytes relative to the window, possibly cutting pages. */
  start: bigint;
  end: bigint;
  batched: boolean;
}

/** What one notifier should hear, page by page, and the table after the ops (the per-page model). */
function model(
  pageShift: number,
  entries: number,
  ops: Op[],
  notifiers: NotifierSpec[],
): { log: string[]; table: bigint[]; rets: bigint[] } {
  const table = new Array<bigint>(entries).fill(0n);
  const log: string[] = [];
  const rets: bigint[] = [];
  const mask = (1n << BigInt(pageShift)) - 1n;
  const store = (index: number, tce: bigint) => {
    table[index] = tce;
    const perm = Number(tce & 3n);
    const type = perm === 0 ? IOMMUNotifierFlag.UNMAP : IOMMUNotifierFlag.MAP;
    const iova = BigInt(index) << BigInt(pageShift);
    notifiers.forEach((n, i) => {
      if ((n.flags & type) === 0 || iova < n.start || iova + mask > n.end) return;
      log.push(
        `${i} ${type === IOMMUNotifierFlag.MAP ? 'MAP' : 'UNMAP'} ${iova} ${tce & ~mask & U64} ${perm}`,
      );
    });
  };
  for (const op of ops) {
    const pages = op.kind === 'put' ? 1 : op.kind === 'stuff' ? op.count : op.tces.length;
    if (op.kind === 'stuff' && op.count > entries) {
      rets.push(H_PARAMETER);
      continue;
    }
    let stored = 0;
    for (let k = 0; k < pages; k++) {
      const index = op.page + k;
      if (index < 0 || index >= entries) break;
      store(index, op.kind === 'indirect' ? op.tces[k]! : op.tce);
      stored++;
    }
    rets.push(pages > 0 && stored === pages ? H_SUCCESS : H_PARAMETER);
  }
  return { log, table, rets };
}

function run(
  m: Machine,
  table: SpaprTceTable,
  ops: Op[],
  notifiers: NotifierSpec[],
): { log: string[]; table: bigint[]; rets: bigint[] } {
  const log: string[] = [];
  const mask = (1n << BigInt(table.pageShift)) - 1n;
  const record = (i: number, e: IOMMUTLBEntry) => {
    expect(e.addrMask).toBe(mask);
    const type = e.perm === IOMMUAccessFlags.NONE ? 'UNMAP' : 'MAP';
    log.push(`${i} ${type} ${e.iova} ${e.translatedAddr} ${e.perm}`);
  };
  notifiers.forEach((spec, i) => {
    table.iommu.registerNotifier(
      new IOMMUNotifier(
        (e) => record(i, e),
        spec.flags as IOMMUNotifierFlag,
        spec.start,
        spec.end,
        0,
        spec.batched
          ? (batch) => {
              for (let s = 0; s < batch.length; s++)
                for (let k = 0; k < batch.pages[s]!; k++) record(i, batchEvent(batch, s, k).entry);
            }
          : undefined,
      ),
    );
  });
  const rets: bigint[] = [];
  const shift = BigInt(table.pageShift);
  for (const op of ops) {
    const ioba = BUS + (BigInt(op.page) << shift);
    if (op.kind === 'put') rets.push(m.guest.hcall(H_PUT_TCE, LIOBN, ioba, op.tce).ret);
    else if (op.kind === 'stuff') rets.push(m.guest.hcall(H_STUFF_TCE, LIOBN, ioba, op.tce, op.count).ret);
    else {
      const bytes = new Uint8Array(op.tces.length * 8);
      const view = new DataView(bytes.buffer);
      op.tces.forEach((t, k) => {
        view.setBigUint64(k * 8, t);
      });
      m.memory.write(LIST, bytes);
      rets.push(m.guest.hcall(H_PUT_TCE_INDIRECT, LIOBN, ioba, LIST, op.tces.length).ret);
    }
  }
  const entries: bigint[] = [];
  for (let i = 0; i < table.nbTable; i++) entries.push(table.entry(i));
  return { log, table: entries, rets };
}

const tce = (pageShift: number) =>
  fc.oneof(
    fc.constant(0n),
    fc.bigInt({ min: 0n, max: 1n << 40n }).map((p) => ((p << BigInt(pageShift)) | 3n) & U64),
    fc.bigInt({ min: 0n, max: U64 }),
  );

/** A list that is a progression (a direct window), with an optional break, or random. */
const list = (pageShift: number) =>
  fc.oneof(
    fc
      .record({
        base: fc.bigInt({ min: 0n, max: 1n << 30n }),
        perm: fc.integer({ min: 0, max: 3 }),
        count: fc.integer({ min: 0, max: 40 }),
        breakAt: fc.integer({ min: -1, max: 40 }),
        stride: fc.constantFrom(1n, 0n, 2n),
      })
      .map(({ base, perm, count, breakAt, stride }) =>
        Array.from({ length: count }, (_, k) =>
          k === breakAt
            ? (0x7777n << BigInt(pageShift)) & U64
            : (((base + BigInt(k) * stride) << BigInt(pageShift)) | BigInt(perm)) & U64,
        ),
      ),
    fc.array(tce(pageShift), { maxLength: 12 }),
  );

const ENTRIES = 64;

const ops = (pageShift: number) =>
  fc.array(
    fc.oneof(
      fc.record({
        kind: fc.constant('put' as const),
        page: fc.integer({ min: -2, max: ENTRIES + 2 }),
        tce: tce(pageShift),
      }),
      fc.record({
        kind: fc.constant('stuff' as const),
        page: fc.integer({ min: -2, max: ENTRIES + 2 }),
        tce: tce(pageShift),
        count: fc.integer({ min: 0, max: ENTRIES + 4 }),
      }),
      fc.record({
        kind: fc.constant('indirect' as const),
        page: fc.integer({ min: -2, max: ENTRIES + 2 }),
        tces: list(pageShift),
      }),
    ),
    { maxLength: 12 },
  );

const notifierSpecs = (pageShift: number) => {
  const windowBytes = BigInt(ENTRIES) << BigInt(pageShift);
  const edge = fc.bigInt({ min: 0n, max: windowBytes + 0x100n });
  return fc.array(
    fc
      .record({
        flags: fc.constantFrom(IOMMUNotifierFlag.MAP, IOMMUNotifierFlag.UNMAP, IOMMUNotifierFlag.MAP_UNMAP),
        a: edge,
        b: edge,
        whole: fc.boolean(),
        batched: fc.boolean(),
      })
      .map(({ flags, a, b, whole, batched }) => ({
        flags,
        start: whole ? 0n : a < b ? a : b,
        end: whole ? U64 : a < b ? b : a,
        batched,
      })),
    { minLength: 1, maxLength: 3 },
  );
};

describe('the batch path against the per-page model', () => {
  for (const pageShift of [12, 16, 34]) {
    it(`sends every notifier exactly its per-page events, ${2 ** (pageShift - 10)} KiB pages (property)`, async () => {
      await fc.assert(
        fc.asyncProperty(ops(pageShift), notifierSpecs(pageShift), async (o, n) => {
          const { m, table } = await tableOf(pageShift, ENTRIES);
          const got = run(m, table, o, n);
          const want = model(pageShift, ENTRIES, o, n);
          m.dispose();
          machines.length = 0;
          expect(got.rets).toEqual(want.rets);
          expect(got.table).toEqual(want.table);
          expect(got.log).toEqual(want.log);
        }),
        { numRuns: 60 },
      );
    }, 60_000);
  }

  it('replays a table to a new notifier as the per-page walk would (MAP only, in page order)', async () => {
    await fc.assert(
      fc.asyncProperty(ops(16), notifierSpecs(16), async (o, n) => {
        const { m, table } = await tableOf(16, ENTRIES);
        run(m, table, o, []);
        const seen: string[] = [];
        n.forEach((spec, i) => {
          const notifier = new IOMMUNotifier(
            (e) => seen.push(`${i} ${e.iova} ${e.translatedAddr} ${e.perm}`),
            spec.flags as IOMMUNotifierFlag,
            spec.start,
            spec.end,
            0,
            spec.batched
              ? (batch) => {
                  for (let s = 0; s < batch.length; s++)
                    for (let k = 0; k < batch.pages[s]!; k++) {
                      const e = batchEvent(batch, s, k).entry;
                      seen.push(`${i} ${e.iova} ${e.translatedAddr} ${e.perm}`);
                    }
                }
              : undefined,
          );
          table.iommu.registerNotifier(notifier);
          table.iommu.replay(notifier);
        });
        const want: string[] = [];
        n.forEach((spec, i) => {
          for (let index = 0; index < ENTRIES; index++) {
            const v = table.entry(index);
            const iova = BigInt(index) << 16n;
            // QEMU's replay calls the notifier directly: MAP only, whatever its flags and range.
            if ((v & 3n) !== 0n) want.push(`${i} ${iova} ${v & ~0xffffn} ${v & 3n}`);
          }
          void spec;
        });
        m.dispose();
        machines.length = 0;
        expect(seen).toEqual(want);
      }),
      { numRuns: 40 },
    );
  }, 60_000);
});
