import {
  Errno,
  type HostIommuConfig,
  type HostMemoryBlock,
  HostVirtualMemory,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_SPAPR_INFO_DDW,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from '@ddw/vfio-common';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_HOST_CONFIG,
  EBADF,
  POWERNV_SLOT1_ADDR,
  type SimulatedSpaprTceContainer,
  SimulatedSpaprTceHost,
} from '../src/index.js';

const K64 = 0x10000n;
const M16 = 0x1000000n;
const GiB = 1n << 30n;
/** QEMU's host pointer for guest RAM. */
const A = 0x7e0000000000n;
/** Where a second, hugetlb-backed block lives. */
const H = 0x7f0000000000n;
const RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
const W1 = POWERNV_SLOT1_ADDR;

/** Host memory backed by a sparse map of 4K pages: a 1 TiB block costs what is written. */
function block(name: string, vaddr: bigint, size: bigint, pageSize = K64, hugetlb = false): HostMemoryBlock {
  const pages = new Map<bigint, Uint8Array>();
  return {
    name,
    vaddr,
    size,
    pageSize,
    hugetlb,
    read(offset, out) {
      for (let i = 0; i < out.length; i++) {
        const at = offset + BigInt(i);
        out[i] = pages.get(at >> 12n)?.[Number(at & 0xfffn)] ?? 0;
      }
    },
    write(offset, data) {
      for (let i = 0; i < data.length; i++) {
        const at = offset + BigInt(i);
        let page = pages.get(at >> 12n);
        if (!page) {
          page = new Uint8Array(0x1000);
          pages.set(at >> 12n, page);
        }
        page[Number(at & 0xfffn)] = data[i]!;
      }
    },
  };
}

interface Setup {
  config?: Partial<HostIommuConfig>;
  /** Extra blocks besides 4 GiB of 64K-page RAM at A and 1 GiB of 16M hugetlb at H. */
  blocks?: HostMemoryBlock[];
}

function makeHost(setup: Setup = {}) {
  const memory = new HostVirtualMemory();
  memory.add(block('ram', A, 4n * GiB));
  memory.add(block('huge', H, GiB, M16, true));
  for (const b of setup.blocks ?? []) memory.add(b);
  const host = new SimulatedSpaprTceHost({ ...DEFAULT_HOST_CONFIG, ...setup.config }, memory);
  return { host, memory };
}

/** A v2 container with group "g0", as QEMU sets one up (before any REGISTER). */
function v2(setup: Setup = {}) {
  const { host, memory } = makeHost(setup);
  const c = host.openContainer();
  expect(c.attachGroup('g0')).toBe(0);
  expect(c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(0);
  return { host, memory, c };
}

/** A v2 container with all guest RAM (A, 4 GiB) registered. */
function v2Registered(setup: Setup = {}) {
  const s = v2(setup);
  expect(s.c.registerMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
  return s;
}

function v1(setup: Setup = {}) {
  const { host, memory } = makeHost(setup);
  const c = host.openContainer();
  expect(c.attachGroup('g0')).toBe(0);
  expect(c.setIommu(VFIO_SPAPR_TCE_IOMMU)).toBe(0);
  return { host, memory, c };
}

function map(c: SimulatedSpaprTceContainer, iova: bigint, size: bigint, vaddr: bigint, flags = RW): number {
  return c.mapDma({ iova, size, vaddr, flags });
}

/** Linux's locked bytes for a table: hardware TCEs plus the userspace copy. */
const DEFAULT_TABLE_LOCKED = 2n * (4n << 20n); // 2 GiB of 4K pages: 4 MiB of TCEs, twice

describe('SimulatedSpaprTceHost: capabilities and container type', () => {
  it('case 1: SET_IOMMU with a type other than 2 or 7 is -EINVAL (only sPAPR TCE types exist here)', () => {
    const { host } = makeHost();
    const c = host.openContainer();
    c.attachGroup('g0');
    expect(c.setIommu(VFIO_TYPE1v2_IOMMU)).toBe(-Errno.EINVAL);
    expect(c.setIommu(VFIO_TYPE1_IOMMU)).toBe(-Errno.EINVAL);
    expect(c.type).toBeUndefined();
    expect(c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(0);
    expect(c.type).toBe('v2');
    // VFIO core: the type is set once per container.
    expect(c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(-Errno.EINVAL);
  });

  it('SET_IOMMU needs a group, and a v1-only host refuses v2 (no dynamic windows)', () => {
    const { host } = makeHost({ config: { type: 'v1' } });
    const c = host.openContainer();
    expect(c.setIommu(VFIO_SPAPR_TCE_IOMMU)).toBe(-Errno.EINVAL);
    c.attachGroup('g0');
    expect(c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(-Errno.EINVAL);
    expect(c.setIommu(VFIO_SPAPR_TCE_IOMMU)).toBe(0);
  });

  it('case 2: CHECK_EXTENSION answers 1 for types 2 and 7, 0 for type1 (7 is 0 on a v1 host)', () => {
    const { host } = makeHost();
    expect(host.checkExtension(VFIO_SPAPR_TCE_IOMMU)).toBe(1);
    expect(host.checkExtension(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(1);
    expect(host.checkExtension(VFIO_TYPE1_IOMMU)).toBe(0);
    expect(host.checkExtension(VFIO_TYPE1v2_IOMMU)).toBe(0);
    const old = makeHost({ config: { type: 'v1' } }).host;
    expect(old.checkExtension(VFIO_SPAPR_TCE_IOMMU)).toBe(1);
    expect(old.checkExtension(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(0);
  });

  it('case 3: GET_INFO before any group is attached is -ENXIO', () => {
    const { host } = makeHost();
    expect(host.openContainer().getInfo()).toEqual({ ret: -Errno.ENXIO });
  });

  it('case 4: GET_INFO argsz 8 is -EINVAL, 16 writes only the first 16 bytes, 32 reports DDW', () => {
    const { c } = v2();
    expect(c.getInfo(8).ret).toBe(-Errno.EINVAL);
    const short = c.getInfo(16);
    expect(short.ret).toBe(0);
    expect(short.info).toEqual({
      // flags lives in the first 16 bytes, so it is written; the ddw part is not.
      flags: VFIO_IOMMU_SPAPR_INFO_DDW,
      dma32WindowStart: 0n,
      dma32WindowSize: 0x80000000n,
      ddw: { pgSizes: 0n, maxDynamicWindowsSupported: 0, levels: 0 },
    });
    expect(c.getInfo(32)).toEqual({
      ret: 0,
      info: {
        flags: VFIO_IOMMU_SPAPR_INFO_DDW,
        dma32WindowStart: 0n,
        dma32WindowSize: 0x80000000n,
        ddw: { pgSizes: 0x1011000n, maxDynamicWindowsSupported: 2, levels: 5 },
      },
    });
    expect(c.getInfo()).toEqual(c.getInfo(32));
  });

  it('case 5: GET_INFO on a v1 container has flags 0 and the ddw part zeroed', () => {
    const { c } = v1();
    expect(c.getInfo(32)).toEqual({
      ret: 0,
      info: {
        flags: 0,
        dma32WindowStart: 0n,
        dma32WindowSize: 0x80000000n,
        ddw: { pgSizes: 0n, maxDynamicWindowsSupported: 0, levels: 0 },
      },
    });
  });
});

describe('SimulatedSpaprTceHost: REGISTER / UNREGISTER_MEMORY', () => {
  it('case 6: v2 MAP_DMA before any REGISTER_MEMORY is -EPERM (the container is not enabled yet)', () => {
    const { c } = v2();
    expect(map(c, 0n, 0x1000n, A)).toBe(-Errno.EPERM);
    expect(c.unmapDma({ iova: 0n, size: 0x1000n })).toBe(-Errno.EPERM);
    // The refused MAP did not get as far as creating the default window.
    expect(c.defaultWindowPending).toBe(true);
  });

  it('case 7: REGISTER of a range that is not whole host pages is -EINVAL', () => {
    const { c, host } = v2({ blocks: [block('low', 0x10000000n, 0x100000n)] });
    expect(c.registerMemory({ vaddr: 0x10000000n, size: 0x1000n })).toBe(-Errno.EINVAL);
    expect(c.registerMemory({ vaddr: 0x10001000n, size: K64 })).toBe(-Errno.EINVAL);
    expect(c.registerMemory({ vaddr: 0xffffffffffff0000n, size: 0x20000n })).toBe(-Errno.EINVAL);
    expect(c.registerMemory({ vaddr: 0x10000000n, size: 0n })).toBe(-Errno.EINVAL);
    expect(host.regions()).toEqual([]);
    expect(c.registerMemory({ vaddr: 0x10000000n, size: K64 })).toBe(0);
  });

  it('case 8: REGISTER of the same range twice on one container is -EBUSY', () => {
    const { c } = v2();
    expect(c.registerMemory({ vaddr: A, size: GiB })).toBe(0);
    expect(c.registerMemory({ vaddr: A, size: GiB })).toBe(-Errno.EBUSY);
    expect(c.registered()).toEqual([{ vaddr: A, size: GiB, pageShift: 16 }]);
  });

  it('case 9: REGISTER overlapping an existing region is -EINVAL and pins nothing', () => {
    const { c, host } = v2();
    expect(c.registerMemory({ vaddr: A, size: GiB })).toBe(0);
    const locked = host.lockedBytes;
    expect(c.registerMemory({ vaddr: A + K64, size: K64 })).toBe(-Errno.EINVAL);
    expect(c.registerMemory({ vaddr: A + GiB - K64, size: 2n * K64 })).toBe(-Errno.EINVAL);
    expect(host.lockedBytes).toBe(locked);
    expect(c.registered()).toHaveLength(1);
    // Adjacent is fine.
    expect(c.registerMemory({ vaddr: A + GiB, size: K64 })).toBe(0);
  });

  it('case 10: REGISTER with flags or a short argsz is -EINVAL; over RLIMIT_MEMLOCK it is -ENOMEM', () => {
    const { c, host } = v2({ config: { memlockLimit: 512n << 20n } });
    expect(c.registerMemory({ vaddr: A, size: K64, flags: 1 })).toBe(-Errno.EINVAL);
    expect(c.registerMemory({ vaddr: A, size: K64, argsz: 16 })).toBe(-Errno.EINVAL);
    expect(c.registerMemory({ vaddr: A, size: GiB })).toBe(-Errno.ENOMEM);
    expect(host.lockedBytes).toBe(0n);
    expect(c.registerMemory({ vaddr: A, size: 512n << 20n })).toBe(0);
    expect(host.lockedBytes).toBe(512n << 20n);
    expect(c.registerMemory({ vaddr: A + GiB, size: K64 })).toBe(-Errno.ENOMEM);
  });

  it('REGISTER of memory that is not wholly backed fails to pin: -EFAULT, nothing accounted', () => {
    const { c, host } = v2();
    expect(c.registerMemory({ vaddr: A + 4n * GiB - K64, size: 2n * K64 })).toBe(-Errno.EFAULT);
    expect(c.registerMemory({ vaddr: 0x1000000n, size: K64 })).toBe(-Errno.EFAULT);
    expect(host.lockedBytes).toBe(0n);
  });

  it('REGISTER across two adjacent blocks pins both, with the smaller page shift', () => {
    const { c } = v2({ blocks: [block('a', 0x100000000n, M16, M16, true), block('b', 0x101000000n, M16)] });
    expect(c.registerMemory({ vaddr: 0x100000000n, size: 2n * M16 })).toBe(0);
    expect(c.registered()[0]!.pageShift).toBe(16);
  });

  it('a region page shift is min(natural alignment, backing page); big pages count only when hugetlb', () => {
    const { c } = v2({ blocks: [block('thp', 0x200000000n, GiB, M16, false)] });
    expect(c.registerMemory({ vaddr: H, size: GiB })).toBe(0);
    expect(c.registerMemory({ vaddr: 0x200000000n, size: GiB })).toBe(0);
    expect(c.registerMemory({ vaddr: A + K64, size: K64 })).toBe(0);
    expect(c.registered()).toEqual([
      { vaddr: 0x200000000n, size: GiB, pageShift: 16 }, // 16M pages, but not hugetlb
      { vaddr: A + K64, size: K64, pageShift: 16 },
      { vaddr: H, size: GiB, pageShift: 24 }, // hugetlb 16M
    ]);
    const { c: c2 } = v2();
    // Aligned to 2M only: the alignment caps what 16M hugetlb pages could back.
    expect(c2.registerMemory({ vaddr: H + 0x200000n, size: 0x200000n })).toBe(0);
    expect(c2.registered()[0]!.pageShift).toBe(21);
  });

  it('case 11: UNREGISTER of anything but an exact registered range is -ENOENT', () => {
    const { c } = v2();
    expect(c.registerMemory({ vaddr: A, size: GiB })).toBe(0);
    expect(c.unregisterMemory({ vaddr: A, size: 512n << 20n })).toBe(-Errno.ENOENT);
    expect(c.unregisterMemory({ vaddr: A + 2n * GiB, size: GiB })).toBe(-Errno.ENOENT);
    expect(c.unregisterMemory({ vaddr: A, size: GiB, flags: 1 })).toBe(-Errno.EINVAL);
    expect(c.unregisterMemory({ vaddr: A + 0x1000n, size: GiB })).toBe(-Errno.EINVAL);
    expect(c.unregisterMemory({ vaddr: A, size: GiB })).toBe(0);
    expect(c.registered()).toEqual([]);
  });

  it('UNREGISTER on a container that never bound to the process is -EPERM', () => {
    const { c } = v2();
    expect(c.unregisterMemory({ vaddr: A, size: GiB })).toBe(-Errno.EPERM);
  });

  it('UNREGISTER of a region registered only by another container is -ENOENT', () => {
    const { host, c } = v2Registered();
    const other = host.openContainer();
    other.attachGroup('g1');
    other.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
    expect(other.registerMemory({ vaddr: A + 8n * GiB, size: K64 })).toBe(-Errno.EFAULT);
    expect(other.unregisterMemory({ vaddr: A, size: 4n * GiB })).toBe(-Errno.ENOENT);
    expect(c.registered()).toHaveLength(1);
  });

  it('an exact REGISTER from another container of the process takes a reference to the same region', () => {
    const { host, c } = v2Registered();
    const locked = host.lockedBytes;
    const other = host.openContainer();
    other.attachGroup('g1');
    other.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
    expect(other.registerMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
    expect(host.lockedBytes).toBe(locked);
    expect(host.regions()).toEqual([{ vaddr: A, size: 4n * GiB, pageShift: 16, refs: 2, mapped: 0 }]);
    expect(c.unregisterMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
    expect(host.regions()[0]!.refs).toBe(1);
    expect(other.unregisterMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
    expect(host.regions()).toEqual([]);
    expect(host.lockedBytes).toBe(0n);
  });

  it('MAP may use a region another container of the process registered', () => {
    const { host } = v2Registered();
    const other = host.openContainer();
    other.attachGroup('g1');
    other.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
    other.registerMemory({ vaddr: H, size: M16 });
    expect(map(other, 0n, 0x1000n, A + 0x5000n)).toBe(0);
    expect(host.regions().find((r) => r.vaddr === A)!.mapped).toBe(1);
  });

  it('case 12: UNREGISTER while mapped, "ok" (2018+): 0, the region stays pinned without an owner', () => {
    const { c, host } = v2Registered({ config: { unregisterWhileMapped: 'ok' } });
    expect(map(c, 0n, 0x4000n, A)).toBe(0);
    const locked = host.lockedBytes;
    expect(c.unregisterMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
    expect(c.registered()).toEqual([]);
    expect(host.regions()).toEqual([{ vaddr: A, size: 4n * GiB, pageShift: 16, refs: 1, mapped: 4 }]);
    expect(host.lockedBytes).toBe(locked);
    expect(c.mappings()).toHaveLength(4);
    // Still findable by the process: mapping from it keeps working.
    expect(map(c, 0x10000n, 0x1000n, A + 0x10000n)).toBe(0);
    // Unmapping everything does not free it: only process exit would.
    expect(c.unmapDma({ iova: 0n, size: 0x80000000n })).toBe(0);
    expect(host.regions()[0]).toMatchObject({ refs: 1, mapped: 0 });
    // An exact REGISTER adopts the orphan again.
    expect(c.registerMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
    expect(host.regions()[0]!.refs).toBe(2);
  });

  it('case 12: UNREGISTER while mapped, "ebusy" (2016, the design): -EBUSY and the reference is kept', () => {
    const { c, host } = v2Registered({ config: { unregisterWhileMapped: 'ebusy' } });
    expect(map(c, 0n, 0x4000n, A)).toBe(0);
    expect(c.unregisterMemory({ vaddr: A, size: 4n * GiB })).toBe(-Errno.EBUSY);
    expect(c.registered()).toEqual([{ vaddr: A, size: 4n * GiB, pageShift: 16 }]);
    expect(host.regions()).toEqual([{ vaddr: A, size: 4n * GiB, pageShift: 16, refs: 1, mapped: 4 }]);
    expect(c.unmapDma({ iova: 0n, size: 0x4000n })).toBe(0);
    expect(c.unregisterMemory({ vaddr: A, size: 4n * GiB })).toBe(0);
    expect(host.regions()).toEqual([]);
  });

  it('case 13: v1 refuses REGISTER/UNREGISTER/TCE_CREATE/TCE_REMOVE and v2 refuses ENABLE/DISABLE with -ENOTTY', () => {
    const one = v1().c;
    expect(one.registerMemory({ vaddr: A, size: GiB })).toBe(-Errno.ENOTTY);
    expect(one.unregisterMemory({ vaddr: A, size: GiB })).toBe(-Errno.ENOTTY);
    expect(one.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 }).ret).toBe(-Errno.ENOTTY);
    expect(one.removeWindow({ startAddr: 0n })).toBe(-Errno.ENOTTY);
    const two = v2().c;
    expect(two.enable()).toBe(-Errno.ENOTTY);
    expect(two.disable()).toBe(-Errno.ENOTTY);
  });
});

describe('SimulatedSpaprTceHost: TCE_CREATE / TCE_REMOVE', () => {
  it('case 14: TCE_CREATE with argsz 32 or nonzero flags is -EINVAL', () => {
    const { c } = v2Registered();
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1, argsz: 32 }).ret).toBe(
      -Errno.EINVAL,
    );
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1, flags: 1 }).ret).toBe(
      -Errno.EINVAL,
    );
    // These checks come before the default window is created.
    expect(c.defaultWindowPending).toBe(true);
  });

  it('case 15: TCE_CREATE with a page size outside pgsizes (2M) is -EINVAL', () => {
    const { c } = v2Registered();
    expect(c.createWindow({ pageShift: 21, windowSize: 1n << 40n, levels: 1 }).ret).toBe(-Errno.EINVAL);
    expect(c.createWindow({ pageShift: 64, windowSize: 1n << 40n, levels: 1 }).ret).toBe(-Errno.EINVAL);
  });

  it('case 16: TCE_CREATE with levels 0 or 6, or a window that is not a power of two, is -EINVAL', () => {
    const { c } = v2Registered();
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 0 }).ret).toBe(-Errno.EINVAL);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 6 }).ret).toBe(-Errno.EINVAL);
    expect(c.createWindow({ pageShift: 16, windowSize: 3n * GiB, levels: 1 }).ret).toBe(-Errno.EINVAL);
    expect(c.createWindow({ pageShift: 16, windowSize: 0n, levels: 1 }).ret).toBe(-Errno.EINVAL);
    // A window smaller than one of its pages.
    expect(c.createWindow({ pageShift: 24, windowSize: K64, levels: 1 }).ret).toBe(-Errno.EINVAL);
    // The platform's level limit, not only PowerNV's 5.
    const { c: three } = v2Registered({ config: { levels: 3 } });
    expect(three.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 4 }).ret).toBe(-Errno.EINVAL);
  });

  it('case 17: TCE_CREATE whose table would index bit 60 is -EINVAL (the 60-bit rule), and gives back its memlock', () => {
    const { c, host } = v2Registered();
    const locked = host.lockedBytes;
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 60n, levels: 1 }).ret).toBe(-Errno.EINVAL);
    // Five levels of at least one 64K page each index 13 bits per level: 65 + 16 bits.
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 5 }).ret).toBe(-Errno.EINVAL);
    // The default window was created on the way (it counts); the failed tables do not.
    expect(host.lockedBytes).toBe(locked + DEFAULT_TABLE_LOCKED);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 2 })).toEqual({
      ret: 0,
      startAddr: W1,
    });
  });

  it('case 18: TCE_CREATE(64K, 2^40, 1 level) on a fresh container: slot 0 gets the default window, this one 1<<59', () => {
    const { c, host } = v2();
    expect(c.windows()).toEqual([]);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: W1,
    });
    expect(c.windows()).toEqual([
      {
        slot: 0,
        startAddr: 0n,
        size: 0x80000000n,
        pageShift: 12,
        levels: 1,
        isDefault: true,
        tableSpan: 0x80000000n,
      },
      {
        slot: 1,
        startAddr: W1,
        size: 1n << 40n,
        pageShift: 16,
        levels: 1,
        isDefault: false,
        tableSpan: 1n << 40n,
      },
    ]);
    // 2^24 TCEs of 8 bytes, hardware table plus userspace copy; and the default window's.
    expect(host.lockedBytes).toBe(2n * (128n << 20n) + DEFAULT_TABLE_LOCKED);
  });

  it('case 18: TCE_CREATE over RLIMIT_MEMLOCK is -ENOMEM', () => {
    const { c, host } = v2({ config: { memlockLimit: 64n << 20n } });
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 }).ret).toBe(-Errno.ENOMEM);
    expect(host.lockedBytes).toBe(DEFAULT_TABLE_LOCKED);
    expect(c.windows()).toHaveLength(1);
  });

  it('case 19: a second TCE_CREATE after case 18 is -ENOSPC (two slots)', () => {
    const { c } = v2();
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 }).ret).toBe(0);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 30n, levels: 1 }).ret).toBe(-Errno.ENOSPC);
    const { c: one } = v2({ config: { maxWindows: 1 } });
    expect(one.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 }).ret).toBe(-Errno.ENOSPC);
  });

  it('case 20: TCE_REMOVE(0) on a fresh container cancels the pending default; the next window takes slot 0 at 0', () => {
    const { c, host } = v2();
    expect(c.removeWindow({ startAddr: 0n })).toBe(0);
    expect(c.defaultWindowPending).toBe(false);
    expect(c.createWindow({ pageShift: 24, windowSize: 1n << 35n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: 0n,
    });
    expect(c.windows()).toMatchObject([{ slot: 0, startAddr: 0n, pageShift: 24, isDefault: false }]);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: W1,
    });
    expect(host.lockedBytes).toBeGreaterThan(0n);
  });

  it('case 21: TCE_REMOVE of an address in no window is -EINVAL; any address inside a window removes it', () => {
    const { c, host } = v2Registered();
    expect(c.removeWindow({ startAddr: 0n })).toBe(0);
    expect(c.removeWindow({ startAddr: 0x1234n })).toBe(-Errno.EINVAL);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: 0n,
    });
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: W1,
    });
    expect(map(c, W1, 0x20000n, A)).toBe(0);
    expect(host.regions()[0]!.mapped).toBe(2);
    const locked = host.lockedBytes;
    expect(c.removeWindow({ startAddr: W1 + 0x100000n })).toBe(0);
    expect(c.windows().map((w) => w.slot)).toEqual([0]);
    expect(c.mappings()).toEqual([]);
    expect(host.regions()[0]!.mapped).toBe(0);
    expect(host.lockedBytes).toBe(locked - 2n * (128n << 20n));
    expect(c.removeWindow({ startAddr: W1 })).toBe(-Errno.EINVAL);
    expect(c.removeWindow({ startAddr: 0n, flags: 1 })).toBe(-Errno.EINVAL);
    expect(c.removeWindow({ startAddr: 0n, argsz: 8 })).toBe(-Errno.EINVAL);
  });

  it('the pending default window is created by the first MAP, UNMAP or TCE_CREATE, and its failure surfaces there', () => {
    const byMap = v2Registered().c;
    expect(byMap.windows()).toEqual([]);
    expect(map(byMap, 0n, 0x1000n, A)).toBe(0);
    expect(byMap.windows()).toMatchObject([
      { slot: 0, startAddr: 0n, size: 0x80000000n, pageShift: 12, isDefault: true },
    ]);

    const byUnmap = v2Registered().c;
    expect(byUnmap.unmapDma({ iova: 0n, size: 0x1000n })).toBe(0);
    expect(byUnmap.defaultWindowPending).toBe(false);
    expect(byUnmap.windows()).toHaveLength(1);

    // 4 GiB registered plus 4 MiB leaves no room for the 8 MiB the default table books.
    const tight = v2Registered({ config: { memlockLimit: 4n * GiB + (4n << 20n) } }).c;
    expect(map(tight, 0n, 0x1000n, A)).toBe(-Errno.ENOMEM);
    expect(tight.defaultWindowPending).toBe(true);
    expect(tight.createWindow({ pageShift: 16, windowSize: 1n << 30n, levels: 1 }).ret).toBe(-Errno.ENOMEM);
    expect(tight.removeWindow({ startAddr: 0n })).toBe(0);
    expect(tight.windows()).toEqual([]);
  });

  it('the it_size quirk: a 1 MiB window of 64K pages is one 64K page of TCEs, so it accepts IOVAs up to 512 MiB', () => {
    const { c } = v2Registered();
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 20n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: W1,
    });
    const w = c.windows().find((x) => x.slot === 1)!;
    expect(w).toMatchObject({ size: 1n << 20n, tableSpan: 512n << 20n });
    expect(map(c, W1 + (256n << 20n), K64, A)).toBe(0);
    expect(map(c, W1 + (512n << 20n) - K64, K64, A)).toBe(0);
    expect(map(c, W1 + (512n << 20n), K64, A)).toBe(-Errno.ENXIO);
    expect(c.translate(W1 + (256n << 20n) + 0x123n)).toMatchObject({ iova: W1 + (256n << 20n), vaddr: A });
    expect(c.removeWindow({ startAddr: W1 + (300n << 20n) })).toBe(0);
  });
});

describe('SimulatedSpaprTceHost: MAP_DMA / UNMAP_DMA', () => {
  /** v2 with RAM registered, the default window cancelled and 64K pages at 1<<59 (QEMU's usual). */
  function ddw(setup: Setup = {}) {
    const s = v2Registered(setup);
    expect(s.c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: W1,
    });
    return s;
  }

  it('case 22: MAP_DMA at an iova in no window is -ENXIO', () => {
    const { c } = v2Registered();
    expect(map(c, 0x100000000n, 0x1000n, A)).toBe(-Errno.ENXIO);
    expect(c.unmapDma({ iova: 0x100000000n, size: 0x1000n })).toBe(-Errno.ENXIO);
  });

  it("case 23: MAP_DMA whose size or vaddr is not a multiple of the window's page is -EINVAL", () => {
    const { c } = ddw();
    expect(map(c, W1, 0x1000n, A)).toBe(-Errno.EINVAL);
    expect(map(c, W1, K64, A + 0x1000n)).toBe(-Errno.EINVAL);
    expect(map(c, W1, K64, A)).toBe(0);
  });

  it('case 24: MAP_DMA with flags 0 or an unknown flag is -EINVAL', () => {
    const { c } = ddw();
    expect(map(c, W1, K64, A, 0)).toBe(-Errno.EINVAL);
    expect(map(c, W1, K64, A, 4)).toBe(-Errno.EINVAL);
    expect(map(c, W1, K64, A, 4 | RW)).toBe(-Errno.EINVAL);
    expect(c.mapDma({ iova: W1, size: K64, vaddr: A, flags: RW, argsz: 24 })).toBe(-Errno.EINVAL);
    expect(c.mappings()).toEqual([]);
  });

  it('case 25: MAP_DMA at a misaligned iova inside a window returns +1 (Linux ORs two checks)', () => {
    const { c } = ddw();
    expect(map(c, W1 + 0x1000n, K64, A)).toBe(1);
    expect(c.unmapDma({ iova: W1 + 0x1000n, size: K64 })).toBe(1);
    expect(c.mappings()).toEqual([]);
  });

  it('MAP_DMA running past the end of the window is -EINVAL (Linux checks the first page only)', () => {
    const { c } = ddw();
    const end = W1 + (1n << 40n);
    expect(map(c, end - K64, 2n * K64, A)).toBe(-Errno.EINVAL);
    expect(c.unmapDma({ iova: end - K64, size: 2n * K64 })).toBe(-Errno.EINVAL);
    expect(map(c, end - K64, K64, A)).toBe(0);
  });

  it('case 26: MAP_DMA running out of registered memory is -EINVAL and leaves none of its pages mapped', () => {
    const { c, host } = ddw();
    expect(map(c, W1, 4n * K64, A + 4n * GiB - 2n * K64)).toBe(-Errno.EINVAL);
    expect(c.mappings()).toEqual([]);
    expect(host.regions()[0]!.mapped).toBe(0);
    expect(map(c, W1, K64, 0x1000000n)).toBe(-Errno.EINVAL);
  });

  it('on a failed MAP the pages it already wrote are cleared, even those that replaced old mappings', () => {
    const { c } = ddw();
    expect(map(c, W1, K64, A + 0x100000n)).toBe(0);
    expect(map(c, W1 + 2n * K64, K64, A + 0x200000n)).toBe(0);
    expect(map(c, W1, 4n * K64, A + 4n * GiB - 2n * K64)).toBe(-Errno.EINVAL);
    // Entry 0 was replaced then cleared; entry 2 was never reached.
    expect(c.mappings().map((m) => m.iova)).toEqual([W1 + 2n * K64]);
  });

  it('case 27: MAP_DMA over an existing mapping succeeds, releases the old page and shows the new one', () => {
    const { c, host } = ddw();
    expect(c.registerMemory({ vaddr: H, size: GiB })).toBe(0);
    expect(map(c, W1, K64, A)).toBe(0);
    expect(map(c, W1, K64, H, VFIO_DMA_MAP_FLAG_READ)).toBe(0);
    expect(c.translate(W1)).toEqual({ iova: W1, size: K64, vaddr: H, read: true, write: false });
    expect(host.regions().map((r) => [r.vaddr, r.mapped])).toEqual([
      [A, 0],
      [H, 1],
    ]);
    expect(c.mappings()).toHaveLength(1);
  });

  it('case 28: MAP_DMA into a 16M window from a region backed by 64K pages is -EINVAL; hugetlb 16M works', () => {
    const { c } = v2Registered();
    expect(c.registerMemory({ vaddr: H, size: GiB })).toBe(0);
    expect(c.removeWindow({ startAddr: 0n })).toBe(0);
    expect(c.createWindow({ pageShift: 24, windowSize: 1n << 35n, levels: 1 })).toEqual({
      ret: 0,
      startAddr: 0n,
    });
    expect(map(c, 0n, M16, A)).toBe(-Errno.EINVAL);
    expect(map(c, 0n, 2n * M16, H)).toBe(0);
    expect(c.translate(M16 + 5n)).toMatchObject({ iova: M16, size: M16, vaddr: H + M16 });
  });

  it('case 29: UNMAP_DMA of unmapped entries is 0; flags or a size that is not whole pages is -EINVAL', () => {
    const { c } = ddw();
    expect(c.unmapDma({ iova: W1, size: 1n << 30n })).toBe(0);
    expect(c.unmapDma({ iova: W1, size: K64, flags: 1 })).toBe(-Errno.EINVAL);
    expect(c.unmapDma({ iova: W1, size: 0x1000n })).toBe(-Errno.EINVAL);
    expect(c.unmapDma({ iova: W1, size: K64, argsz: 16 })).toBe(-Errno.EINVAL);
    expect(map(c, W1, 4n * K64, A)).toBe(0);
    expect(c.unmapDma({ iova: W1 + K64, size: 2n * K64 })).toBe(0);
    expect(c.mappings().map((m) => m.iova)).toEqual([W1, W1 + 3n * K64]);
  });

  it('case 33: a WRITE-only MAP gives the TCE R|W on PowerNV; READ-only stays R; the userspace address is kept', () => {
    const { c } = ddw();
    expect(map(c, W1, K64, A + 0x30000n, VFIO_DMA_MAP_FLAG_WRITE)).toBe(0);
    expect(map(c, W1 + K64, K64, A + 0x50000n, VFIO_DMA_MAP_FLAG_READ)).toBe(0);
    expect(c.mappings()).toEqual([
      { iova: W1, size: K64, vaddr: A + 0x30000n, read: true, write: true },
      { iova: W1 + K64, size: K64, vaddr: A + 0x50000n, read: true, write: false },
    ]);
  });

  it('translate() answers the page holding an iova, or undefined', () => {
    const { c } = ddw();
    expect(map(c, W1 + 5n * K64, 2n * K64, A + 7n * K64)).toBe(0);
    expect(c.translate(W1 + 6n * K64 + 0xabcn)).toEqual({
      iova: W1 + 6n * K64,
      size: K64,
      vaddr: A + 8n * K64,
      read: true,
      write: true,
    });
    expect(c.translate(W1 + 7n * K64)).toBeUndefined();
    expect(c.translate(0x1234n)).toBeUndefined();
  });

  it('a 2^40 window of 64K pages (16M entries) costs memory only where pages are mapped', () => {
    const big = 1n << 40n;
    const { c } = ddw({ blocks: [block('far', 0x100000000000n, big, K64)] });
    expect(c.registerMemory({ vaddr: 0x100000000000n, size: big })).toBe(0);
    expect(c.storage()).toEqual({ mapped: 0, denseChunks: 0, bytes: 0 });
    for (const at of [0n, 1n << 30n, 1n << 35n, big - K64]) {
      expect(map(c, W1 + at, K64, 0x100000000000n + at)).toBe(0);
    }
    const s = c.storage();
    expect(s.mapped).toBe(4);
    expect(s.denseChunks).toBe(0);
    expect(s.bytes).toBeLessThan(1 << 10);
    expect(c.translate(W1 + big - 1n)).toMatchObject({ vaddr: 0x100000000000n + big - K64 });
    expect(c.unmapDma({ iova: W1, size: big })).toBe(0);
    expect(c.storage()).toEqual({ mapped: 0, denseChunks: 0, bytes: 0 });
  });

  it('a 64 TiB window of 64K pages (2^30 entries) mapped whole costs per run, and so does its unmap', () => {
    const big = 1n << 46n;
    const F = 0x100000000000n;
    const { c, host } = ddw({ blocks: [block('far', F, big, K64)] });
    expect(c.removeWindow({ startAddr: W1 })).toBe(0);
    expect(c.createWindow({ pageShift: 16, windowSize: big, levels: 2 }).ret).toBe(0);
    expect(c.registerMemory({ vaddr: F, size: big })).toBe(0);
    expect(map(c, W1, big, F)).toBe(0);
    expect(c.mappedCount()).toBe(2 ** 30);
    expect(c.storage()).toMatchObject({ mapped: 2 ** 30, denseChunks: 0 });
    expect(c.storage().bytes).toBeLessThan(8 << 20);
    expect(host.regions().find((r) => r.vaddr === F)!.mapped).toBe(2 ** 30);
    const runs: [bigint, number, bigint, number][] = [];
    c.forEachMapping((iova, pages, _size, vaddr, _r, _w, step) => void runs.push([iova, pages, vaddr, step]));
    expect(runs).toEqual([[W1, 2 ** 30, F, 1]]);
    expect(c.translate(W1 + big - 1n)).toMatchObject({ vaddr: F + big - K64, write: true });
    // One page in the middle becomes read-only from elsewhere: the run splits around it.
    expect(map(c, W1 + (1n << 40n), K64, F, VFIO_DMA_MAP_FLAG_READ)).toBe(0);
    runs.length = 0;
    c.forEachMapping((iova, pages, _size, vaddr, _r, _w, step) => void runs.push([iova, pages, vaddr, step]));
    expect(runs).toEqual([
      [W1, 2 ** 24, F, 1],
      [W1 + (1n << 40n), 1, F, 1],
      [W1 + (1n << 40n) + K64, 2 ** 30 - 2 ** 24 - 1, F + (1n << 40n) + K64, 1],
    ]);
    expect(c.mappedCount()).toBe(2 ** 30);
    expect(c.unmapDma({ iova: W1, size: big })).toBe(0);
    expect(c.mappedCount()).toBe(0);
    expect(host.regions().find((r) => r.vaddr === F)!.mapped).toBe(0);
    expect(c.storage()).toEqual({ mapped: 0, denseChunks: 0, bytes: 0 });
  });

  it('maps 8 GiB in 4K pages (2M entries) and gives them back', () => {
    const { c, host } = v2({ blocks: [block('big', 0x100000000000n, 8n * GiB, K64)] });
    expect(c.registerMemory({ vaddr: 0x100000000000n, size: 8n * GiB })).toBe(0);
    expect(c.removeWindow({ startAddr: 0n })).toBe(0);
    expect(c.createWindow({ pageShift: 12, windowSize: 8n * GiB, levels: 2 }).ret).toBe(0);
    for (let i = 0n; i < 8n * GiB; i += GiB) {
      expect(map(c, i, GiB, 0x100000000000n + i)).toBe(0);
    }
    expect(c.storage().mapped).toBe(2 * 1024 * 1024);
    expect(host.regions().find((r) => r.vaddr === 0x100000000000n)!.mapped).toBe(2 * 1024 * 1024);
    for (let i = 0n; i < 0x10000000n; i += 0x1000n) {
      if (map(c, i, 0x1000n, 0x100000000000n + 8n * GiB - 0x10000000n + i) !== 0)
        throw new Error('map failed');
    }
    expect(c.translate(0x1000n)!.vaddr).toBe(0x100000000000n + 8n * GiB - 0x10000000n + 0x1000n);
    expect(c.unmapDma({ iova: 0n, size: 8n * GiB })).toBe(0);
    expect(c.storage()).toEqual({ mapped: 0, denseChunks: 0, bytes: 0 });
    expect(host.regions().find((r) => r.vaddr === 0x100000000000n)!.mapped).toBe(0);
  });
});

describe('SimulatedSpaprTceHost: groups, v1, faults and release', () => {
  it('case 30: attaching the same group twice is -EBUSY; a second group on a v1 container is -EBUSY (≥ 6.4)', () => {
    const { host, c } = v2();
    expect(c.attachGroup('g0')).toBe(-Errno.EBUSY);
    expect(c.attachGroup('g1')).toBe(0);
    const { c: one } = v1();
    expect(one.attachGroup('g1')).toBe(-Errno.EBUSY);
    // Two groups already there when SET_IOMMU attaches them to a v1 container.
    const two = host.openContainer();
    two.attachGroup('g2');
    two.attachGroup('g3');
    expect(two.setIommu(VFIO_SPAPR_TCE_IOMMU)).toBe(-Errno.EBUSY);
    // VFIO core: a group belongs to one container at a time.
    expect(two.attachGroup('g0')).toBe(-Errno.EINVAL);
  });

  // Case 31 (an ioctl from another process after the container bound to an mm is -EPERM) is not
  // reachable: the simulated host is a single process, and the interface has no notion of mm.

  it('case 32: v1 ENABLE twice is -EBUSY the second time; ENABLE with no group is -ENODEV', () => {
    const { c } = v1();
    expect(c.enable()).toBe(0);
    expect(c.enable()).toBe(-Errno.EBUSY);
    const { host } = makeHost();
    expect(host.openContainer().enable()).toBe(-Errno.ENODEV);
  });

  it('v1: ENABLE books the 32-bit window; MAP works only while enabled, pins, and DISABLE gives the booking back', () => {
    const { c, host } = v1();
    expect(c.windows()).toEqual([
      {
        slot: 0,
        startAddr: 0n,
        size: 0x80000000n,
        pageShift: 12,
        levels: 1,
        isDefault: true,
        tableSpan: 0x80000000n,
      },
    ]);
    expect(map(c, 0n, 0x1000n, A)).toBe(-Errno.EPERM);
    expect(c.enable()).toBe(0);
    expect(host.lockedBytes).toBe(0x80000000n);
    expect(map(c, 0x3000n, 0x2000n, A + 0x11000n, VFIO_DMA_MAP_FLAG_READ)).toBe(0);
    expect(c.mappings()).toEqual([
      { iova: 0x3000n, size: 0x1000n, vaddr: A + 0x11000n, read: true, write: false },
      { iova: 0x4000n, size: 0x1000n, vaddr: A + 0x12000n, read: true, write: false },
    ]);
    expect(map(c, 0x80000000n, 0x1000n, A)).toBe(-Errno.ENXIO);
    expect(map(c, 0x1000n, 0x1000n, 0x1000n)).toBe(-Errno.EFAULT);
    expect(c.unmapDma({ iova: 0x3000n, size: 0x1000n })).toBe(0);
    expect(c.disable()).toBe(0);
    expect(host.lockedBytes).toBe(0n);
    expect(map(c, 0n, 0x1000n, A)).toBe(-Errno.EPERM);
    // DISABLE leaves the TCEs alone.
    expect(c.mappings()).toHaveLength(1);
    expect(c.disable()).toBe(0);
  });

  it('v1: a backing page smaller than the IOMMU page is -EPERM; a pin failure midway is -EFAULT; both clear', () => {
    const tiny = block('tiny', 0x50000000n, 0x10000n, 0x800n);
    const { c } = v1({ blocks: [tiny, block('edge', 0x60000000n, 0x2000n, 0x1000n)] });
    expect(c.enable()).toBe(0);
    expect(map(c, 0n, 0x1000n, 0x50000000n)).toBe(-Errno.EPERM);
    expect(map(c, 0n, 0x3000n, 0x60000000n)).toBe(-Errno.EFAULT);
    expect(c.mappings()).toEqual([]);
    expect(map(c, 0n, 0x2000n, 0x60000000n)).toBe(0);
  });

  it('v1: ENABLE is -EPERM without a 32-bit window and -ENOMEM over RLIMIT_MEMLOCK', () => {
    expect(v1({ config: { dma32WindowSize: 0n } }).c.enable()).toBe(-Errno.EPERM);
    const { c, host } = v1({ config: { memlockLimit: GiB } });
    expect(c.enable()).toBe(-Errno.ENOMEM);
    expect(host.lockedBytes).toBe(0n);
  });

  it('injectFault: the next N calls of an op fail on any container, change nothing, then it works again', () => {
    const { host, c } = v2Registered();
    const other = host.openContainer();
    host.injectFault('mapDma', Errno.EBUSY, 2);
    expect(map(c, 0n, 0x1000n, A)).toBe(-Errno.EBUSY);
    expect(c.defaultWindowPending).toBe(true);
    expect(other.mapDma({ iova: 0n, size: 0x1000n, vaddr: A, flags: RW })).toBe(-Errno.EBUSY);
    expect(c.mappings()).toEqual([]);
    expect(map(c, 0n, 0x1000n, A)).toBe(0);

    host.injectFault('createWindow', Errno.ENOMEM);
    host.injectFault('getInfo', Errno.EFAULT);
    host.injectFault('registerMemory', Errno.EFAULT);
    const locked = host.lockedBytes;
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 })).toEqual({
      ret: -Errno.ENOMEM,
    });
    expect(c.getInfo()).toEqual({ ret: -Errno.EFAULT });
    expect(c.registerMemory({ vaddr: H, size: M16 })).toBe(-Errno.EFAULT);
    expect(host.lockedBytes).toBe(locked);
    expect(c.windows()).toHaveLength(1);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 }).ret).toBe(0);

    host.injectFault('attachGroup', Errno.EINVAL);
    expect(other.attachGroup('g9')).toBe(-Errno.EINVAL);
    expect(other.attachGroup('g9')).toBe(0);
  });

  it('close() clears every TCE, frees windows, books and registrations; the fd then answers -EBADF', () => {
    const { host, c } = v2Registered();
    expect(map(c, 0n, 0x10000n, A)).toBe(0);
    expect(c.createWindow({ pageShift: 16, windowSize: 1n << 40n, levels: 1 }).ret).toBe(0);
    c.close();
    expect(host.lockedBytes).toBe(0n);
    expect(host.regions()).toEqual([]);
    expect(c.mappings()).toEqual([]);
    expect(c.windows()).toEqual([]);
    expect(c.registered()).toEqual([]);
    expect(c.translate(0n)).toBeUndefined();
    expect(map(c, 0n, 0x1000n, A)).toBe(-EBADF);
    expect(c.getInfo()).toEqual({ ret: -EBADF });
    c.close();
    // Its group is free for another container.
    const next = host.openContainer();
    expect(next.attachGroup('g0')).toBe(0);
  });

  it('close() leaves a region another container still maps from pinned, without an owner', () => {
    const { host, c } = v2Registered();
    const other = host.openContainer();
    other.attachGroup('g1');
    other.setIommu(VFIO_SPAPR_TCE_v2_IOMMU);
    other.registerMemory({ vaddr: H, size: M16 });
    expect(map(other, 0n, 0x1000n, A)).toBe(0);
    c.close();
    expect(host.regions().find((r) => r.vaddr === A)).toMatchObject({ refs: 1, mapped: 1 });
    expect(other.translate(0n)).toMatchObject({ vaddr: A });
  });

  it('detaching the last group releases the driver: the container is back to no type', () => {
    const { host, c } = v2Registered();
    expect(map(c, 0n, 0x1000n, A)).toBe(0);
    expect(c.detachGroup('g1')).toBe(-Errno.EINVAL);
    expect(c.detachGroup('g0')).toBe(0);
    expect(c.type).toBeUndefined();
    expect(c.mappings()).toEqual([]);
    expect(host.lockedBytes).toBe(0n);
    expect(c.getInfo()).toEqual({ ret: -Errno.ENXIO });
    expect(c.attachGroup('g0')).toBe(0);
    expect(map(c, 0n, 0x1000n, A)).toBe(-Errno.EINVAL);
    expect(c.setIommu(VFIO_SPAPR_TCE_v2_IOMMU)).toBe(0);
    expect(c.defaultWindowPending).toBe(true);
  });
});

describe('SimulatedSpaprTceContainer.mapRun (the run path)', () => {
  /** A vaddr the run path can carry exactly: guest RAM at 1 TiB. */
  const R = 0x10000000000n;
  const r = (offset: bigint) => Number(R + offset);

  /** RAM at R registered; `materialize` makes the default window exist (an UNMAP of nothing). */
  function setup(setup: Setup = {}, materialize = false) {
    const s = v2({ ...setup, blocks: [block('r', R, GiB), ...(setup.blocks ?? [])] });
    expect(s.c.registerMemory({ vaddr: R, size: GiB })).toBe(0);
    if (materialize) expect(s.c.unmapDma({ iova: 0n, size: 0n })).toBe(0);
    return s;
  }

  it('maps and unmaps pages as mapDma/unmapDma of each would: consecutive, repeated, any step', () => {
    const { c, host } = setup();
    // The first page's ioctl would create the pending default window: so does the run.
    expect(c.mapRun(0x2000n, 12, 1, r(0x5000n), 1, RW)).toBe(1);
    expect(c.defaultWindowPending).toBe(false);
    expect(c.mapRun(0x3000n, 12, 2, r(0x9000n), 1, VFIO_DMA_MAP_FLAG_READ)).toBe(2);
    expect(c.mapRun(0x5000n, 12, 2, r(0x1000n), 0, VFIO_DMA_MAP_FLAG_WRITE)).toBe(2);
    expect(c.mapRun(0x7000n, 12, 2, r(0x10000n), 3, RW)).toBe(2);
    expect(c.mappings()).toEqual([
      { iova: 0x2000n, size: 0x1000n, vaddr: R + 0x5000n, read: true, write: true },
      { iova: 0x3000n, size: 0x1000n, vaddr: R + 0x9000n, read: true, write: false },
      { iova: 0x4000n, size: 0x1000n, vaddr: R + 0xa000n, read: true, write: false },
      { iova: 0x5000n, size: 0x1000n, vaddr: R + 0x1000n, read: true, write: true },
      { iova: 0x6000n, size: 0x1000n, vaddr: R + 0x1000n, read: true, write: true },
      { iova: 0x7000n, size: 0x1000n, vaddr: R + 0x10000n, read: true, write: true },
      { iova: 0x8000n, size: 0x1000n, vaddr: R + 0x13000n, read: true, write: true },
    ]);
    expect(c.mappedCount()).toBe(7);
    expect(c.mapRun(0x3000n, 12, 3, 0, 0, 0)).toBe(3);
    expect(c.mappings().map((m) => [m.iova, m.vaddr])).toEqual([
      [0x2000n, R + 0x5000n],
      [0x6000n, R + 0x1000n],
      [0x7000n, R + 0x10000n],
      [0x8000n, R + 0x13000n],
    ]);
    expect(host.regions().find((x) => x.vaddr === R)!.mapped).toBe(4);
  });

  it('maps a guest page of several host IOMMU pages, as one mapDma of that size would', () => {
    const { c } = setup({}, true);
    expect(c.mapRun(0x10000n, 16, 2, r(0n), 3, RW)).toBe(2);
    expect(c.mappings()).toHaveLength(32);
    expect(c.translate(0x2f000n)!.vaddr).toBe(R + 0x3f000n);
    expect(c.mapRun(0x40000n, 16, 3, r(0x100000n), 0, RW)).toBe(3);
    expect(c.translate(0x6f000n)!.vaddr).toBe(R + 0x10f000n);
    expect(c.mappedCount()).toBe(80);
  });

  it('stops before the first page mapDma would refuse, leaving it and the rest untouched', () => {
    const { c, host } = setup();
    expect(map(c, 0x4000n, 0x1000n, R)).toBe(0);
    // Page 2 is past the end of registered memory: pages 0 and 1 apply, 2 and 3 do not.
    expect(c.mapRun(0x2000n, 12, 4, r(GiB - 0x2000n), 1, RW)).toBe(2);
    expect(c.mappings().map((m) => [m.iova, m.vaddr])).toEqual([
      [0x2000n, R + GiB - 0x2000n],
      [0x3000n, R + GiB - 0x1000n],
      [0x4000n, R],
    ]);
    // The end of the window, bad flags, a misaligned iova or vaddr, unregistered memory.
    expect(c.mapRun(0x80000000n - 0x1000n, 12, 2, r(0n), 0, RW)).toBe(1);
    expect(c.mapRun(0x2000n, 12, 1, r(0n), 1, 4)).toBe(0);
    expect(c.mapRun(0x2800n, 12, 1, r(0n), 1, RW)).toBe(0);
    expect(c.mapRun(0x2000n, 12, 1, r(0x800n), 1, RW)).toBe(0);
    expect(c.mapRun(0x2000n, 12, 1, 0x1000, 1, RW)).toBe(0);
    expect(c.mapRun(0x100000000n, 12, 1, 0, 0, 0)).toBe(0);
    // An injected fault stays due for the call the caller makes next; it only stops its own op.
    host.injectFault('mapDma', Errno.EBUSY);
    expect(c.mapRun(0x2000n, 12, 1, r(0n), 1, RW)).toBe(0);
    expect(c.mapRun(0x2000n, 12, 2, 0, 0, 0)).toBe(2);
    expect(map(c, 0x3000n, 0x1000n, R)).toBe(-Errno.EBUSY);
    expect(host.regions().find((x) => x.vaddr === R)!.mapped).toBe(c.mappedCount());
  });

  it('a guest page spanning two adjacent regions maps as mapDma walks it, each region counting its part', () => {
    const { c, host } = v2({ blocks: [block('r', R, GiB)] });
    expect(c.registerMemory({ vaddr: R, size: 32n << 20n })).toBe(0);
    expect(c.registerMemory({ vaddr: R + (32n << 20n), size: 32n << 20n })).toBe(0);
    expect(c.unmapDma({ iova: 0n, size: 0n })).toBe(0);
    expect(c.mapRun(0n, 16, 2, r((32n << 20n) - 0x8000n), 1, RW)).toBe(2);
    expect(host.regions().map((x) => x.mapped)).toEqual([8, 24]);
    expect(c.mapRun(0n, 12, 8, 0, 0, 0)).toBe(8);
    expect(host.regions().map((x) => x.mapped)).toEqual([0, 24]);
    // Past the second region: the page fails as a whole, nothing of it stays.
    expect(c.mapRun(0x100000n, 16, 1, r((64n << 20n) - 0x8000n), 1, RW)).toBe(0);
    expect(c.mappedCount()).toBe(24);
  });

  it('does nothing before the container is enabled', () => {
    const { c } = v2({ blocks: [block('r', R, GiB)] });
    expect(c.mapRun(0n, 12, 1, r(0n), 1, RW)).toBe(0);
    expect(c.defaultWindowPending).toBe(true);
  });

  it('v1: pins from host memory, refusing a backing page smaller than the IOMMU page', () => {
    const { c } = v1({ blocks: [block('r', R, GiB), block('tiny', 0x50000000n, K64, 0x800n)] });
    expect(c.enable()).toBe(0);
    expect(c.mapRun(0n, 12, 2, r(0n), 1, VFIO_DMA_MAP_FLAG_READ)).toBe(2);
    expect(c.mapRun(0x2000n, 12, 1, 0x50000000, 1, RW)).toBe(0);
    expect(map(c, 0x2000n, 0x1000n, 0x50000000n)).toBe(-Errno.EPERM);
    expect(c.mappings()).toHaveLength(2);
  });
});
