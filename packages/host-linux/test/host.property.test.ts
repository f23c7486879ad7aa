import {
  type HostMemoryBlock,
  HostVirtualMemory,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
} from '@ddw/vfio-common';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_HOST_CONFIG,
  POWERNV_SLOT1_ADDR,
  type SimulatedSpaprTceContainer,
  SimulatedSpaprTceHost,
} from '../src/index.js';

const K64 = 0x10000n;
const M16 = 0x1000000n;
const A = 0x7e0000000000n;
const H = 0x7f0000000000n;
/** Memory backed by 2K pages. */
const T = 0x50000000n;

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

/** Regions the contract test registers: two adjacent ones, a hugetlb one, a small odd one. */
const RUN_REGIONS: readonly [bigint, bigint][] = [
  [A, 64n << 20n],
  [A + (64n << 20n), 64n << 20n],
  [A + (160n << 20n), 32n << 20n],
  [H, 64n << 20n],
  [H + (128n << 20n), M16],
  [A + (200n << 20n), 0x10000n],
  [A + (128n << 20n), 16n << 20n],
  [A + (240n << 20n), 80n << 20n],
  [T, 1n << 20n],
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

describe('mapRun and MAP/UNMAP against a page-by-page reference (the host contract)', () => {
  /**
   * What a run-path host and a page-by-page host must agree on after every operation: the pages
   * (and their run view), counts, windows, regions with their mapped counts, locked memory.
   */
  const state = (host: SimulatedSpaprTceHost, c: SimulatedSpaprTceContainer) => {
    const pages = c.mappings();
    const expanded: string[] = [];
    c.forEachMapping((iova, n, size, vaddr, read, write, step) => {
      if (n < 1) throw new Error('forEachMapping visited an empty run');
      for (let k = 0; k < n; k++) {
        expanded.push(
          `${hex(iova + BigInt(k) * size)}=${hex(vaddr + BigInt(k * step) * size)}${read ? 'r' : ''}${write ? 'w' : ''}`,
        );
      }
    });
    const listed = pages.map(
      (m) => `${hex(m.iova)}=${hex(m.vaddr)}${m.read ? 'r' : ''}${m.write ? 'w' : ''}`,
    );
    if (expanded.join(' ') !== listed.join(' ')) throw new Error('forEachMapping disagrees with mappings()');
    if (c.mappedCount() !== pages.length || c.storage().mapped !== pages.length) {
      throw new Error(`mappedCount ${c.mappedCount()} but ${pages.length} pages`);
    }
    // translate() on a sample of the pages (all of them would dominate the run time).
    for (let i = 0; i < pages.length; i += 1 + (i % 13)) {
      const m = pages[i]!;
      const t = c.translate(m.iova + m.size - 1n);
      if (!t || t.vaddr !== m.vaddr || t.read !== m.read || t.write !== m.write) {
        throw new Error(`translate(${hex(m.iova)}) disagrees with mappings()`);
      }
    }
    return [
      listed.join(' '),
      c
        .windows()
        .map((w) => `${w.slot}@${hex(w.startAddr)}/${w.pageShift}`)
        .join(' '),
      host
        .regions()
        .map((r) => `${hex(r.vaddr)}+${hex(r.size)}:${r.refs}:${r.mapped}`)
        .join(' '),
      host.lockedBytes,
    ].join(' | ');
  };

  /** Region mapped counts recounted page by page from every container's mappings. */
  function recount(host: SimulatedSpaprTceHost, containers: SimulatedSpaprTceContainer[]): void {
    const regions = host.regions();
    const counted = regions.map(() => 0);
    for (const c of containers) {
      if (c.type !== 'v2') continue;
      for (const m of c.mappings()) {
        const at = regions.findIndex((r) => m.vaddr >= r.vaddr && m.vaddr + m.size <= r.vaddr + r.size);
        if (at < 0) throw new Error(`${hex(m.iova)} maps ${hex(m.vaddr)}, in no region`);
        counted[at]!++;
      }
    }
    for (const [i, r] of regions.entries()) {
      if (r.mapped !== counted[i])
        throw new Error(`region ${hex(r.vaddr)}: mapped ${r.mapped}, holds ${counted[i]}`);
    }
  }

  /**
   * Host addresses: RAM (regions, two of them adjacent; the end of one block running into the next),
   * hugetlb, memory on pages smaller than 4K, unbacked memory.
   */
  const RUN_VADDRS = [
    A,
    A + (16n << 20n) - 0x3000n,
    A + (64n << 20n) - 0x8000n,
    A + (96n << 20n),
    A + (256n << 20n) - 0x8000n,
    H,
    H + M16,
    T,
    0x1000n,
  ];
  const RUN_PAGES = [12, 16, 21, 24];

  const op = fc.oneof(
    {
      arbitrary: fc.record({
        op: fc.constant('run' as const),
        base: fc.nat(1),
        page: fc.constantFrom(0, 0, 1, 1, 2, 3),
        at: fc.oneof(fc.nat(40), fc.nat(5000)),
        misalign: fc.constantFrom(0n, 0n, 0n, 0n, 0x1000n, K64),
        count: fc.oneof(
          { arbitrary: fc.integer({ min: 1, max: 24 }), weight: 4 },
          fc.integer({ min: 1, max: 1500 }),
        ),
        vaddr: fc.nat(RUN_VADDRS.length - 1),
        vpage: fc.oneof(fc.nat(7), fc.nat(300)),
        vmisalign: fc.constantFrom(0, 0, 0, 0, 0x1000, 0x800),
        step: fc.constantFrom(0, 1, 1, 1, 2, 5),
        flags: fc.constantFrom(0, 0, 1, 2, 3, 3, 3, 4),
      }),
      weight: 8,
    },
    {
      arbitrary: fc.record({
        op: fc.constant('map' as const),
        base: fc.nat(1),
        page: fc.nat(PAGES.length - 1),
        at: fc.nat(60),
        pages: fc.integer({ min: 0, max: 40 }),
        vaddr: fc.nat(RUN_VADDRS.length - 1),
        vpage: fc.nat(40),
        flags: fc.constantFrom(0, 1, 2, 3, 3, 4),
      }),
      weight: 3,
    },
    {
      arbitrary: fc.record({
        op: fc.constant('unmap' as const),
        base: fc.nat(1),
        page: fc.nat(PAGES.length - 1),
        at: fc.nat(60),
        pages: fc.integer({ min: 0, max: 5000 }),
      }),
      weight: 2,
    },
    fc.record({
      op: fc.constant('fault' as const),
      what: fc.constantFrom('mapDma' as const, 'unmapDma' as const),
      errno: fc.constantFrom(16, 12, 22),
      count: fc.integer({ min: 1, max: 3 }),
    }),
    fc.record({ op: fc.constant('register' as const), r: fc.nat(RUN_REGIONS.length - 1) }),
    fc.record({ op: fc.constant('unregister' as const), r: fc.nat(RUN_REGIONS.length - 1) }),
    fc.record({
      op: fc.constant('window' as const),
      remove: fc.nat(1),
      pageShift: fc.constantFrom(12, 16, 24),
      windowShift: fc.integer({ min: 20, max: 36 }),
    }),
    fc.record({
      op: fc.constant('kvm' as const),
      table: fc.nat(1),
      at: fc.nat(60),
      vaddr: fc.nat(RUN_VADDRS.length - 1),
      vpage: fc.nat(40),
      write: fc.boolean(),
      unmap: fc.boolean(),
    }),
  );
  type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

  /** One host: its container, built the same for the run host and the reference. */
  function make(
    type: 'v1' | 'v2',
    windowPageShift: number | undefined,
    windowShift: number,
    registered: number[],
  ) {
    const memory = new HostVirtualMemory();
    memory.add(block('ram', A, 256n << 20n, K64, false));
    memory.add(block('more', A + (256n << 20n), 64n << 20n, K64, false));
    memory.add(block('huge', H, 256n << 20n, M16, true));
    memory.add(block('tiny', T, 1n << 20n, 0x800n, false));
    const host = new SimulatedSpaprTceHost({ ...DEFAULT_HOST_CONFIG, type }, memory);
    const c = host.openContainer();
    c.attachGroup('g0');
    if (type === 'v2') {
      c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
      for (const r of registered) {
        const [vaddr, size] = RUN_REGIONS[r]!;
        c.registerMemory({ vaddr, size });
      }
      if (windowPageShift !== undefined) {
        c.createWindow({ pageShift: windowPageShift, windowSize: 1n << BigInt(windowShift), levels: 1 });
      }
    } else {
      c.setIommu(VFIO_SPAPR_TCE_IOMMU);
      c.enable();
    }
    return { host, c };
  }

  /** The page-by-page call for page k of a run op: MAP_DMA, or UNMAP_DMA for flags 0. */
  const pageCall = (
    c: SimulatedSpaprTceContainer,
    iova: bigint,
    shift: number,
    vaddr: number,
    step: number,
    flags: number,
    k: number,
  ) => {
    const size = 1n << BigInt(shift);
    const at = iova + BigInt(k) * size;
    return flags === 0
      ? c.unmapDma({ iova: at, size })
      : c.mapDma({ iova: at, size, vaddr: BigInt(vaddr + k * step * 2 ** shift), flags });
  };

  /** Applies `cmd` to the run host (`run` true) or the reference; returns every ioctl's result. */
  function apply(
    t: { host: SimulatedSpaprTceHost; c: SimulatedSpaprTceContainer },
    cmd: Op,
    run: boolean,
  ): number[] {
    const { host, c } = t;
    switch (cmd.op) {
      case 'run': {
        const shift = RUN_PAGES[cmd.page]!;
        const size = 1n << BigInt(shift);
        const iova = BASES[cmd.base]! + BigInt(cmd.at) * size + cmd.misalign;
        const vaddr = Number(RUN_VADDRS[cmd.vaddr]! + BigInt(cmd.vpage) * size) + cmd.vmisalign;
        const rets: number[] = [];
        if (!run) {
          for (let k = 0; k < cmd.count; k++)
            rets.push(pageCall(c, iova, shift, vaddr, cmd.step, cmd.flags, k));
          return rets;
        }
        // As the VFIO container drives it: a run, the failing page by its own ioctl, the rest again.
        // Half the maps give their pages' host addresses as a list (an irregular TCE list's form).
        const asList = cmd.flags !== 0 && (cmd.vpage & 1) === 1;
        let k = 0;
        while (k < cmd.count) {
          const list = asList
            ? Float64Array.from({ length: cmd.count - k }, (_, i) => vaddr + (k + i) * cmd.step * 2 ** shift)
            : undefined;
          const n = c.mapRun(
            iova + BigInt(k) * size,
            shift,
            cmd.count - k,
            list ?? vaddr + k * cmd.step * 2 ** shift,
            cmd.step,
            cmd.flags,
          );
          if (!(n >= 0 && n <= cmd.count - k)) throw new Error(`mapRun returned ${n}`);
          for (let i = 0; i < n; i++) rets.push(0);
          k += n;
          if (k < cmd.count) {
            const ret = pageCall(c, iova, shift, vaddr, cmd.step, cmd.flags, k);
            if (ret === 0) throw new Error(`mapRun stopped at page ${k}, whose ioctl succeeds`);
            rets.push(ret);
            k++;
          }
        }
        return rets;
      }
      case 'map': {
        const page = PAGES[cmd.page]!;
        return [
          c.mapDma({
            iova: BASES[cmd.base]! + BigInt(cmd.at) * page,
            size: BigInt(cmd.pages) * page,
            vaddr: RUN_VADDRS[cmd.vaddr]! + BigInt(cmd.vpage) * page,
            flags: cmd.flags,
          }),
        ];
      }
      case 'unmap': {
        const page = PAGES[cmd.page]!;
        return [
          c.unmapDma({ iova: BASES[cmd.base]! + BigInt(cmd.at) * page, size: BigInt(cmd.pages) * page }),
        ];
      }
      case 'fault':
        host.injectFault(cmd.what, cmd.errno, cmd.count);
        return [];
      case 'register':
      case 'unregister': {
        const [vaddr, size] = RUN_REGIONS[cmd.r]!;
        return [
          cmd.op === 'register' ? c.registerMemory({ vaddr, size }) : c.unregisterMemory({ vaddr, size }),
        ];
      }
      case 'window': {
        const removed = c.removeWindow({ startAddr: BASES[cmd.remove]! });
        const made = c.createWindow({
          pageShift: cmd.pageShift,
          windowSize: 1n << BigInt(cmd.windowShift),
          levels: 1,
        });
        return [removed, made.ret];
      }
      case 'kvm': {
        const table = c.kvmTables()[cmd.table];
        if (!table) return [];
        const iova = table.startAddr + (BigInt(cmd.at) << BigInt(table.pageShift));
        const ua = RUN_VADDRS[cmd.vaddr]! + (BigInt(cmd.vpage) << BigInt(table.pageShift));
        const ret = cmd.unmap ? table.unmap(iova) : table.map(iova, ua, cmd.write);
        return [ret === 0 ? 0 : -1];
      }
    }
  }

  it('a host taking runs ends every operation exactly as one taking each page by its own ioctl', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<'v1' | 'v2'>('v2', 'v2', 'v2', 'v1'),
        fc.constantFrom(undefined, 12, 16, 24),
        fc.integer({ min: 20, max: 36 }),
        fc.subarray([0, 1, 2, 3, 4, 5, 6, 7, 8]),
        fc.array(op, { minLength: 1, maxLength: 25 }),
        (type, windowPageShift, windowShift, registered, ops) => {
          const a = make(type, windowPageShift, windowShift, registered);
          const b = make(type, windowPageShift, windowShift, registered);
          for (const [i, cmd] of ops.entries()) {
            const ra = apply(a, cmd, true);
            const rb = apply(b, cmd, false);
            if (ra.join() !== rb.join()) {
              throw new Error(
                `op ${i} (${cmd.op}): the run host returned ${ra.join()}, the reference ${rb.join()}`,
              );
            }
            const sa = state(a.host, a.c);
            const sb = state(b.host, b.c);
            if (sa !== sb) throw new Error(`op ${i} (${cmd.op}): states differ\n${sa}\n${sb}`);
            recount(a.host, [a.c]);
          }
          a.c.close();
          b.c.close();
          if (state(a.host, a.c) !== state(b.host, b.c)) throw new Error('states differ after close');
        },
      ),
      { numRuns: 250 },
    );
  }, 120_000);
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
