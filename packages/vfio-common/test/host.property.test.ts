import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  POWERNV_SLOT1_ADDR,
  type SimulatedSpaprTceContainer,
  SimulatedSpaprTceHost,
} from '../src/host/simulated.js';
import {
  DEFAULT_HOST_CONFIG,
  type HostMemoryBlock,
  HostVirtualMemory,
  VFIO_SPAPR_TCE_v2_IOMMU,
} from '../src/index.js';

const K64 = 0x10000n;
const M16 = 0x1000000n;
const A = 0x7e0000000000n;
const H = 0x7f0000000000n;

function block(
  name: string,
  vaddr: bigint,
  size: bigint,
  pageSize: bigint,
  hugetlb: boolean,
): HostMemoryBlock {
  return { name, vaddr, size, pageSize, hugetlb, read: () => {}, write: () => {} };
}

/** Ranges worth registering: exact repeats, overlaps, hugetlb, unaligned and unbacked ones. */
const REGIONS: readonly [bigint, bigint][] = [
  [A, 64n << 20n],
  [A + (64n << 20n), 64n << 20n],
  [A, 128n << 20n],
  [A + (32n << 20n), K64],
  [A + (200n << 20n), 0x1000n],
  [H, 64n << 20n],
  [H + M16, M16],
  [H + (128n << 20n), M16],
];

const BASES = [0n, POWERNV_SLOT1_ADDR];
const PAGES = [0x1000n, K64, 0x200000n, M16];
const VADDRS = [A, A + M16, A + (60n << 20n), A + (126n << 20n), H, H + M16, 0x1000n];

// Weighted toward MAP/UNMAP of registered memory, so most sequences build up real mappings.
const command = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant('register' as const),
      c: fc.nat(1),
      r: fc.nat(REGIONS.length - 1),
    }),
    weight: 2,
  },
  fc.record({ op: fc.constant('unregister' as const), c: fc.nat(1), r: fc.nat(REGIONS.length - 1) }),
  fc.record({
    op: fc.constant('create' as const),
    c: fc.nat(1),
    pageShift: fc.constantFrom(12, 16, 21, 24),
    windowShift: fc.integer({ min: 18, max: 42 }),
    levels: fc.integer({ min: 0, max: 6 }),
  }),
  fc.record({
    op: fc.constant('remove' as const),
    c: fc.nat(1),
    base: fc.nat(1),
    offset: fc.constantFrom(0n, 0x1234n, 1n << 20n, 1n << 33n),
  }),
  {
    arbitrary: fc.record({
      op: fc.constant('map' as const),
      c: fc.nat(1),
      base: fc.nat(1),
      // Whole pages of 1<<59's 16M window are the rarest valid request; ask for them more often.
      page: fc.constantFrom(0, 1, 2, 3, 3),
      at: fc.nat(40),
      pages: fc.integer({ min: 0, max: 12 }),
      vaddr: fc.nat(VADDRS.length - 1),
      vpage: fc.oneof(fc.nat(7), fc.nat(70)),
      flags: fc.constantFrom(0, 1, 2, 3, 3, 3, 4),
    }),
    weight: 6,
  },
  {
    arbitrary: fc.record({
      op: fc.constant('unmap' as const),
      c: fc.nat(1),
      base: fc.nat(1),
      page: fc.nat(PAGES.length - 1),
      at: fc.nat(40),
      pages: fc.integer({ min: 0, max: 12 }),
    }),
    weight: 2,
  },
  fc.record({ op: fc.constant('reopen' as const), c: fc.nat(1) }),
);

type Command = typeof command extends fc.Arbitrary<infer T> ? T : never;

function run(c: SimulatedSpaprTceContainer, cmd: Command): void {
  switch (cmd.op) {
    case 'register':
    case 'unregister': {
      const [vaddr, size] = REGIONS[cmd.r]!;
      if (cmd.op === 'register') c.registerMemory({ vaddr, size });
      else c.unregisterMemory({ vaddr, size });
      return;
    }
    case 'create':
      c.createWindow({
        pageShift: cmd.pageShift,
        windowSize: 1n << BigInt(cmd.windowShift),
        levels: cmd.levels,
      });
      return;
    case 'remove':
      c.removeWindow({ startAddr: BASES[cmd.base]! + cmd.offset });
      return;
    case 'map': {
      const page = PAGES[cmd.page]!;
      c.mapDma({
        iova: BASES[cmd.base]! + BigInt(cmd.at) * page,
        size: BigInt(cmd.pages) * page,
        vaddr: VADDRS[cmd.vaddr]! + BigInt(cmd.vpage) * page,
        flags: cmd.flags,
      });
      return;
    }
    case 'unmap': {
      const page = PAGES[cmd.page]!;
      c.unmapDma({ iova: BASES[cmd.base]! + BigInt(cmd.at) * page, size: BigInt(cmd.pages) * page });
      return;
    }
    case 'reopen':
      return;
  }
}

describe('SimulatedSpaprTceHost under random ioctl sequences (v2)', () => {
  it('never throws; every TCE lies in a window and in a registered region that can back it', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<'ebusy' | 'ok'>('ebusy', 'ok'),
        fc.option(fc.constantFrom(300n << 20n, 1n << 30n), { nil: undefined }),
        fc.constantFrom(true, true, true, false),
        fc.constantFrom(undefined, 16, 24),
        fc.array(command, { minLength: 5, maxLength: 60 }),
        (unregisterWhileMapped, memlockLimit, preregister, windowPageShift, commands) => {
          const memory = new HostVirtualMemory();
          memory.add(block('ram', A, 256n << 20n, K64, false));
          memory.add(block('huge', H, 256n << 20n, M16, true));
          const host = new SimulatedSpaprTceHost(
            { ...DEFAULT_HOST_CONFIG, unregisterWhileMapped, memlockLimit },
            memory,
          );
          const open = (i: number) => {
            const c = host.openContainer();
            c.attachGroup(`g${i}`);
            c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
            return c;
          };
          const containers = [open(0), open(1)];
          if (preregister) {
            containers[0]!.registerMemory({ vaddr: A, size: 128n << 20n });
            containers[1]!.registerMemory({ vaddr: H, size: 64n << 20n });
          }
          // A 64K or 16M window at 1<<59, so large-page MAPs meet regions too small for them.
          if (windowPageShift !== undefined) {
            for (const c of containers)
              c.createWindow({ pageShift: windowPageShift, windowSize: 1n << 34n, levels: 1 });
          }
          for (const cmd of commands) {
            if (cmd.op === 'reopen') {
              containers[cmd.c]!.close();
              containers[cmd.c] = open(cmd.c);
            } else run(containers[cmd.c]!, cmd);
            check(host, containers);
          }
          for (const c of containers) c.close();
          const regions = host.regions();
          // Left: only regions Linux keeps pinned until the process exits (unregistered or released
          // while another container still mapped from them), with nothing mapped any more.
          expect(regions.every((r) => r.mapped === 0 && r.refs === 1)).toBe(true);
          expect(host.lockedBytes).toBe(regions.reduce((sum, r) => sum + r.size, 0n));
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('mapPages against page-by-page MAP/UNMAP', () => {
  /** Two identical hosts: one takes the batch, the other the ioctls it stands for. */
  function twin(windowPageShift: number | undefined, faulted: 'mapDma' | 'unmapDma' | undefined) {
    const make = () => {
      const memory = new HostVirtualMemory();
      memory.add(block('ram', A, 256n << 20n, K64, false));
      memory.add(block('huge', H, 256n << 20n, M16, true));
      const host = new SimulatedSpaprTceHost(DEFAULT_HOST_CONFIG, memory);
      const c = host.openContainer();
      c.attachGroup('g0');
      c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
      c.registerMemory({ vaddr: A, size: 128n << 20n });
      c.registerMemory({ vaddr: H, size: 64n << 20n });
      if (windowPageShift !== undefined)
        c.createWindow({ pageShift: windowPageShift, windowSize: 1n << 34n, levels: 1 });
      if (faulted) host.injectFault(faulted, 16);
      return { host, c };
    };
    return [make(), make()] as const;
  }

  const state = (host: SimulatedSpaprTceHost, c: SimulatedSpaprTceContainer) =>
    [
      c
        .mappings()
        .map((m) => `${hex(m.iova)}=${hex(m.vaddr)}${m.read ? 'r' : ''}${m.write ? 'w' : ''}`)
        .join(' '),
      c
        .windows()
        .map((w) => `${w.slot}@${hex(w.startAddr)}`)
        .join(' '),
      host
        .regions()
        .map((r) => `${hex(r.vaddr)}:${r.mapped}`)
        .join(' '),
    ].join(' | ');

  const pageArb = fc.record({
    base: fc.constantFrom(A, A, H, 0x1000n),
    k: fc.oneof(fc.nat(6), fc.nat(40)),
    flags: fc.constantFrom(0, 1, 2, 3, 3, 3, 4),
  });

  it('applies exactly the pages the ioctls would accept, and stops where one would fail', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(undefined, 16, 24),
        fc.constantFrom(undefined, 'mapDma' as const, 'unmapDma' as const),
        fc.array(
          fc.record({ at: fc.nat(30), page: fc.nat(3), vaddr: fc.constantFrom(A, H), k: fc.nat(30) }),
          {
            maxLength: 6,
          },
        ),
        fc.record({
          base: fc.nat(1),
          page: fc.constantFrom(0, 1, 1, 2, 3),
          at: fc.nat(20),
          misalign: fc.constantFrom(0n, 0n, 0n, 0x1000n, K64),
          pages: fc.array(pageArb, { minLength: 1, maxLength: 16 }),
        }),
        (windowPageShift, faulted, before, batch) => {
          const [a, b] = twin(windowPageShift, faulted);
          for (const p of before) {
            const size = PAGES[p.page]!;
            for (const t of [a, b]) {
              t.c.mapDma({ iova: BigInt(p.at) * size, size, vaddr: p.vaddr + BigInt(p.k) * size, flags: 3 });
            }
          }
          const pageSize = PAGES[batch.page]!;
          const iova = BASES[batch.base]! + BigInt(batch.at) * pageSize + batch.misalign;
          const vaddrs = batch.pages.map((p) => p.base + BigInt(p.k) * pageSize);
          const n = a.c.mapPages(
            iova,
            pageSize,
            vaddrs.length,
            Float64Array.from(vaddrs, Number),
            Uint8Array.from(batch.pages, (p) => p.flags),
          );
          const call = (i: number) => {
            const at = iova + BigInt(i) * pageSize;
            const flags = batch.pages[i]!.flags;
            return flags === 0
              ? b.c.unmapDma({ iova: at, size: pageSize })
              : b.c.mapDma({ iova: at, size: pageSize, vaddr: vaddrs[i]!, flags });
          };
          for (let i = 0; i < n; i++) {
            if (call(i) !== 0) throw new Error(`page ${i} was applied but its ioctl fails`);
          }
          if (state(a.host, a.c) !== state(b.host, b.c)) throw new Error('batch and ioctls disagree');
          // The one stop allowed early here: the default window is left for the caller's ioctl to create.
          // (Pages spanning two regions, the other, cannot occur: these regions are not adjacent.)
          const pending = a.c.defaultWindowPending;
          if (n < vaddrs.length && call(n) === 0 && !pending) {
            throw new Error(`stopped at page ${n}, whose ioctl succeeds`);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

const hex = (v: bigint) => `0x${v.toString(16)}`;

/** Plain comparisons: a sequence can hold tens of thousands of TCEs, too many for expect(). */
function check(host: SimulatedSpaprTceHost, containers: SimulatedSpaprTceContainer[]): void {
  const regions = host.regions();
  let total = 0;
  for (const [i, c] of containers.entries()) {
    const windows = c.windows();
    const mappings = c.mappings();
    if (c.storage().mapped !== mappings.length)
      throw new Error(`container ${i}: storage disagrees with mappings()`);
    total += mappings.length;
    let last = -1n;
    for (const m of mappings) {
      const where = `container ${i}, iova ${hex(m.iova)}`;
      if (m.iova <= last) throw new Error(`${where}: mappings() out of iova order`);
      last = m.iova;
      const w = windows.find((x) => m.iova >= x.startAddr && m.iova + m.size <= x.startAddr + x.tableSpan);
      if (!w) throw new Error(`${where}: outside every window`);
      if (m.size !== 1n << BigInt(w.pageShift) || (m.iova - w.startAddr) % m.size !== 0n) {
        throw new Error(`${where}: not one page of its window`);
      }
      if (!m.read) throw new Error(`${where}: a PowerNV TCE always has R`);
      const r = regions.find((x) => m.vaddr >= x.vaddr && m.vaddr + m.size <= x.vaddr + x.size);
      if (!r) throw new Error(`${where}: vaddr ${hex(m.vaddr)} outside every registered region`);
      if (r.pageShift < w.pageShift) throw new Error(`${where}: region pages smaller than the window's`);
      const t = c.translate(m.iova + m.size - 1n);
      if (!t || t.iova !== m.iova || t.vaddr !== m.vaddr || t.read !== m.read || t.write !== m.write) {
        throw new Error(`${where}: translate() disagrees with mappings()`);
      }
    }
  }
  const counted = regions.reduce((sum, r) => sum + r.mapped, 0);
  if (counted !== total) throw new Error(`regions count ${counted} mapped pages, containers hold ${total}`);
}
