import { H_PUT_TCE, type Machine, MachineTokens } from '@ddw/machine';
import { H_PUT_TCE_INDIRECT, H_STUFF_TCE } from '@ddw/spapr-iommu';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { GUEST_RAM_HOST_BASE, VfioTokens } from '@ddw/vfio-common';
import fc from 'fast-check';

/**
 * Random guest traffic for property tests on a pseries machine with 1 GiB of RAM: TCE hypercalls
 * on either window (targets inside RAM), DDW RTAS calls, resets, and writes to guest RAM.
 */
export type GuestOp =
  | { kind: 'put'; window: number; page: number; target: number; perm: number }
  | { kind: 'stuff'; window: number; page: number; target: number; perm: number; count: number }
  | { kind: 'indirect'; window: number; page: number; targets: number[]; perm: number }
  | { kind: 'create'; pageShift: number; windowShift: number }
  | { kind: 'remove'; window: number }
  | { kind: 'rtasReset' }
  | { kind: 'machineReset' }
  | { kind: 'ram'; addr: number; bytes: number[] };

const BUID = [0x08000000, 0x20000000];
const LIST = 0x3ff00000n; // a guest page for TCE lists, inside 1 GiB of RAM
const HOST_PAGE = 0x10000n;

const windowArb = fc.integer({ min: 0, max: 1 });
const pageArb = fc.integer({ min: 0, max: 24 });
/** A 64 KiB guest page of the 1 GiB of RAM: a TCE pointing elsewhere is refused by QEMU and tested on its own. */
const targetArb = fc.integer({ min: 0, max: (1 << 14) - 1 });
const permArb = fc.integer({ min: 0, max: 3 });

/** The TCE and RTAS operations; with `ram`, also guest RAM writes. */
export function guestOpArb(options: { ram?: boolean } = {}): fc.Arbitrary<GuestOp> {
  const ops: fc.WeightedArbitrary<GuestOp>[] = [
    {
      arbitrary: fc.record({
        kind: fc.constant('put' as const),
        window: windowArb,
        page: pageArb,
        target: targetArb,
        perm: permArb,
      }),
      weight: 5,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('stuff' as const),
        window: windowArb,
        page: pageArb,
        target: targetArb,
        perm: permArb,
        count: fc.integer({ min: 1, max: 40 }),
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('indirect' as const),
        window: windowArb,
        page: pageArb,
        targets: fc.array(targetArb, { minLength: 1, maxLength: 40 }),
        perm: permArb,
      }),
      weight: 3,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('create' as const),
        pageShift: fc.constantFrom(12, 16, 24),
        windowShift: fc.integer({ min: 20, max: 28 }),
      }),
      weight: 2,
    },
    { arbitrary: fc.record({ kind: fc.constant('remove' as const), window: windowArb }), weight: 1 },
    { arbitrary: fc.constant({ kind: 'rtasReset' as const }), weight: 1 },
    { arbitrary: fc.constant({ kind: 'machineReset' as const }), weight: 1 },
  ];
  if (options.ram) {
    ops.push({
      arbitrary: fc.record({
        kind: fc.constant('ram' as const),
        addr: fc.integer({ min: 0, max: (1 << 30) - 64 }),
        bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 64 }),
      }),
      weight: 2,
    });
  }
  return fc.oneof(...ops);
}

/** The TCE tables of the machine's first PHB (window 0, the default, and window 1). */
export function phbWindows(m: Machine) {
  return m.get(SpaprPciTokens.Phbs).list[0]!.windows;
}

/** Performs the operations through the guest port, as a guest would. */
export function applyGuestOps(m: Machine, ops: readonly GuestOp[]): void {
  for (const o of ops) {
    const table =
      phbWindows(m)[
        o.kind === 'put' || o.kind === 'stuff' || o.kind === 'indirect' || o.kind === 'remove' ? o.window : 0
      ]!;
    const shift = BigInt(table.pageShift);
    const tceOf = (t: number, p: number) =>
      p === 0 ? 0n : ((BigInt(t) << 16n) & ~((1n << shift) - 1n)) | BigInt(p);
    const ioba = (p: number) => table.busOffset + (BigInt(p) << shift);
    const liobn = BigInt(table.liobn);
    switch (o.kind) {
      case 'put':
        m.guest.hcall(H_PUT_TCE, liobn, ioba(o.page), tceOf(o.target, o.perm));
        break;
      case 'stuff':
        m.guest.hcall(H_STUFF_TCE, liobn, ioba(o.page), tceOf(o.target, o.perm), BigInt(o.count));
        break;
      case 'indirect': {
        const list = new Uint8Array(o.targets.length * 8);
        const view = new DataView(list.buffer);
        for (const [k, t] of o.targets.entries()) view.setBigUint64(k * 8, tceOf(t, o.perm));
        m.memory.write(LIST, list);
        m.guest.hcall(H_PUT_TCE_INDIRECT, liobn, ioba(o.page), LIST, BigInt(o.targets.length));
        break;
      }
      case 'create':
        m.guest.rtasCall('ibm,create-pe-dma-window', [0, ...BUID, o.pageShift, o.windowShift], 4);
        break;
      case 'remove':
        m.guest.rtasCall('ibm,remove-pe-dma-window', [table.liobn], 1);
        break;
      case 'rtasReset':
        m.guest.rtasCall('ibm,reset-pe-dma-window', [0, ...BUID], 1);
        break;
      case 'machineReset':
        m.reset();
        break;
      case 'ram':
        m.memory.write(BigInt(o.addr), Uint8Array.from(o.bytes));
        break;
    }
  }
}

/**
 * What the VFIO host should hold, host page by host page (every valid TCE of every window VFIO
 * follows; a window hidden behind another at one bus address (T21) never reaches VFIO), and what it
 * holds. Values are `vaddr:read:write`: QEMU maps READ always, WRITE when the TCE allows device
 * writes. Undefined when a TCE points past RAM (QEMU refuses those; they are tested on their own).
 */
export function vfioMappings(
  m: Machine,
): { expected: Map<bigint, string>; actual: Map<bigint, string> } | undefined {
  const container = m.get(VfioTokens.Vfio).containers[0]!;
  const expected = new Map<bigint, string>();
  let outsideRam = false;
  for (const t of phbWindows(m)) {
    if (!t.enabled || !container.guestIommus.some((g) => g.mr === t.iommu)) continue;
    const size = 1n << BigInt(t.pageShift);
    t.storage?.forEachNonZero((i, high, low) => {
      const tce = (BigInt(high) << 32n) | BigInt(low);
      const p = Number(tce & 3n);
      if (p === 0) return;
      const gpa = tce & ~(size - 1n);
      if (gpa + size > m.get(MachineTokens.GuestRam).size) outsideRam = true;
      const bus = t.busOffset + (BigInt(i) << BigInt(t.pageShift));
      for (let off = 0n; off < size; off += HOST_PAGE > size ? size : HOST_PAGE) {
        expected.set(bus + off, `${GUEST_RAM_HOST_BASE + gpa + off}:true:${(p & 2) !== 0}`);
      }
    });
  }
  if (outsideRam) return undefined;
  const actual = new Map<bigint, string>();
  for (const mp of container.fd.mappings()) {
    for (let off = 0n; off < mp.size; off += HOST_PAGE > mp.size ? mp.size : HOST_PAGE) {
      actual.set(mp.iova + off, `${mp.vaddr + off}:${mp.read}:${mp.write}`);
    }
  }
  return { expected, actual };
}
