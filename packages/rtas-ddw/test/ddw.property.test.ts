import { createMachine, H_PARAMETER, H_RTAS, H_SUCCESS } from '@ddw/machine';
import { IOMMUAccessFlags } from '@ddw/memory';
import {
  H_GET_TCE,
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_STUFF_TCE,
  type SpaprTceTable,
  spaprIommu,
} from '@ddw/spapr-iommu';
import { SpaprPciTokens, spaprPci } from '@ddw/spapr-pci';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { rtasDdw } from '../src/index.js';

const U64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const liobnArb = fc.oneof(
  { arbitrary: fc.constantFrom(0x80000000n, 0x80000001n), weight: 8 },
  { arbitrary: fc.constantFrom(0x180000000n, 0x80000002n, 0n), weight: 1 },
  { arbitrary: U64, weight: 1 },
);
/** Bus addresses near the windows' starts, and anywhere at all. */
const iobaArb = fc.oneof(
  // The last pages of the default window, where batch writes run off the end.
  fc.nat({ max: 8 }).map((k) => 0x40000000n - BigInt(k) * 0x1000n),
  fc.bigInt({ min: 0n, max: 0x50000000n }),
  fc.bigInt({ min: 0x800000000000000n - 0x10000n, max: 0x800000000000000n + 0x100000000n }),
  U64,
);
const tceArb = fc.oneof(
  fc.bigInt({ min: 0n, max: 0x7fffffffn }).map((a) => (a << 12n) | 3n),
  U64,
);
const cell = fc.oneof(fc.nat({ max: 40 }), fc.constant(0xffffffff), fc.nat());

const op = fc.oneof(
  fc.record({ kind: fc.constant('put' as const), liobn: liobnArb, ioba: iobaArb, tce: tceArb }),
  fc.record({ kind: fc.constant('get' as const), liobn: liobnArb, ioba: iobaArb }),
  fc.record({
    kind: fc.constant('stuff' as const),
    liobn: liobnArb,
    ioba: iobaArb,
    tce: tceArb,
    npages: fc.oneof(fc.bigInt({ min: 0n, max: 12n }), fc.bigInt({ min: 0n, max: 600n }), U64),
  }),
  fc.record({
    kind: fc.constant('indirect' as const),
    liobn: liobnArb,
    ioba: iobaArb,
    list: fc.oneof(fc.constantFrom(0x100000n, 0x100008n, 0x7ffff000n, 0x1_0000_0000n), U64),
    npages: fc.oneof(fc.bigInt({ min: 0n, max: 12n }), fc.bigInt({ min: 0n, max: 520n }), U64),
    tces: fc.array(tceArb, { minLength: 1, maxLength: 8 }),
  }),
  fc.record({
    kind: fc.constant('query' as const),
    buidLo: fc.constantFrom(0x20000000, 0x20000001),
    nret: fc.nat({ max: 8 }),
  }),
  fc.record({
    kind: fc.constant('create' as const),
    ps: fc.oneof(fc.constantFrom(12, 16, 21, 24, 34, 0, 63, 64), fc.nat()),
    ws: fc.oneof(fc.nat({ max: 70 }), fc.nat()),
    nargs: fc.constantFrom(5, 5, 5, 4, 6),
  }),
  fc.record({
    kind: fc.constant('remove' as const),
    liobn: fc.oneof(fc.constantFrom(0x80000000, 0x80000001), fc.nat()),
  }),
  fc.record({ kind: fc.constant('reset' as const), nret: fc.constantFrom(1, 1, 0, 2) }),
  fc.record({
    kind: fc.constant('raw-rtas' as const),
    cells: fc.array(cell, { minLength: 0, maxLength: 12 }),
    at: fc.constantFrom(0x3000n, 0x7ffffff8n, 0xffff_ffff_ffff_fff0n),
  }),
);

describe('DDW under random and absurd guest input', () => {
  it('never throws, returns only QEMU codes, keeps <= 2 windows, and translates exactly the TCEs last written', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
        const m = await createMachine([spaprIommu(), spaprPci(), rtasDdw()], { ram: '2G' });
        const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
        // What each enabled window's entries must be: index -> TCE.
        const shadow = new Map<SpaprTceTable, Map<number, bigint>>(phb.windows.map((t) => [t, new Map()]));
        const geometry = (t: SpaprTceTable) => `${t.nbTable}/${t.busOffset}/${t.pageShift}`;
        const table = (liobn: bigint) =>
          liobn >> 32n === 0n ? phb.windows.find((t) => t.liobn === Number(liobn)) : undefined;
        /** What a batch write to `t` from `ioba` stores: QEMU stops at the first entry outside. */
        const batch = (t: SpaprTceTable, ioba: bigint, count: number, tceOf: (i: number) => bigint) => {
          const ps = BigInt(t.pageShift);
          const first = BigInt.asUintN(64, (ioba & ~((1n << ps) - 1n)) - t.busOffset) >> ps;
          for (let i = 0; i < count && first + BigInt(i) < BigInt(t.nbTable); i++)
            shadow.get(t)!.set(Number(first) + i, tceOf(i));
        };
        const verify = () => {
          for (const t of phb.windows) {
            const ps = BigInt(t.pageShift);
            const mask = (1n << ps) - 1n;
            for (const [index, tce] of shadow.get(t)!) {
              const e = t.iommu.translate(BigInt(index) << ps, IOMMUAccessFlags.NONE);
              expect([e.translatedAddr, e.perm]).toEqual([tce & ~mask, Number(tce & 3n)]);
              // And a device behind the PHB reaches exactly that page.
              const x = phb.dmaAddressSpace.translate(t.busOffset + (BigInt(index) << ps), false);
              if (Number(tce & 1n) !== 0 && (tce & ~mask) < 0x80000000n) expect(x.xlat).toBe(tce & ~mask);
            }
          }
          // Nothing outside an enabled window translates.
          for (const addr of [0x40000000n, 0x800000000000000n - 0x1000n, 0x1000_0000_0000_0000n]) {
            const inside = phb.windows.some(
              (t) => t.enabled && addr >= t.busOffset && addr < t.busOffset + t.iommu.size,
            );
            if (!inside) expect(phb.dmaAddressSpace.translate(addr, false).mr).toBeNull();
          }
        };
        try {
          for (const o of ops) {
            const before = phb.windows.map(geometry);
            if (o.kind === 'put' || o.kind === 'get' || o.kind === 'stuff' || o.kind === 'indirect') {
              let r: { ret: bigint };
              const t = table(o.liobn);
              if (o.kind === 'put') {
                r = m.guest.hcall(H_PUT_TCE, o.liobn, o.ioba, o.tce);
                if (r.ret === H_SUCCESS) batch(t!, o.ioba, 1, () => o.tce);
              } else if (o.kind === 'get') {
                r = m.guest.hcall(H_GET_TCE, o.liobn, o.ioba);
              } else if (o.kind === 'stuff') {
                r = m.guest.hcall(H_STUFF_TCE, o.liobn, o.ioba, o.tce, o.npages);
                if (t && o.npages <= BigInt(t.nbTable)) batch(t, o.ioba, Number(o.npages), () => o.tce);
              } else {
                for (const [i, tce] of o.tces.entries()) m.memory.store(0x100000n + 8n * BigInt(i), 8, tce);
                r = m.guest.hcall(H_PUT_TCE_INDIRECT, o.liobn, o.ioba, o.list, o.npages);
                if (t && o.npages <= 512n && (o.list & 0xfffn) === 0n) {
                  const listAt = o.list;
                  batch(t, o.ioba, Number(o.npages), (i) => m.memory.load(listAt + 8n * BigInt(i), 8).value);
                }
              }
              expect([H_SUCCESS, H_PARAMETER]).toContain(r.ret);
            } else if (o.kind === 'raw-rtas') {
              for (const [i, c] of o.cells.entries()) m.memory.store(o.at + BigInt(4 * i), 4, BigInt(c));
              expect([H_SUCCESS, H_PARAMETER]).toContain(m.guest.hcall(H_RTAS, o.at).ret);
            } else {
              let status: number;
              if (o.kind === 'query')
                status = m.guest.rtasCall(
                  'ibm,query-pe-dma-window',
                  [0, 0x08000000, o.buidLo],
                  o.nret,
                ).status;
              else if (o.kind === 'create') {
                const args = [0, 0x08000000, 0x20000000, o.ps, o.ws, 7].slice(0, o.nargs);
                status = m.guest.rtasCall('ibm,create-pe-dma-window', args, 4).status;
              } else if (o.kind === 'remove')
                status = m.guest.rtasCall('ibm,remove-pe-dma-window', [o.liobn], 1).status;
              else
                status = m.guest.rtasCall(
                  'ibm,reset-pe-dma-window',
                  [0, 0x08000000, 0x20000000],
                  o.nret,
                ).status;
              if (o.kind !== 'reset' || o.nret >= 1) expect([0, -1, -3]).toContain(status);
              if (o.kind === 'reset' && status === 0 && o.nret === 1)
                for (const s of shadow.values()) s.clear();
            }
            // A window that came, went or moved starts empty.
            phb.windows.forEach((t, i) => {
              if (geometry(t) !== before[i] || !t.enabled) shadow.get(t)!.clear();
            });
            expect(phb.activeWindows()).toBeLessThanOrEqual(2);
            verify();
          }
        } finally {
          m.dispose();
        }
      }),
      { numRuns: 300 },
    );
  });
});
