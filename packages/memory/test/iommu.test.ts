import { describe, expect, it } from 'vitest';
import {
  AddressSpace,
  ContainerRegion,
  IOMMUAccessFlags,
  IOMMUNotifier,
  IOMMUNotifierFlag,
  type IOMMUTLBEntry,
  IommuMemoryRegion,
  IommuNotifierRefusedError,
  iommuMiss,
  MemTxResult,
  RamRegion,
} from '../src/index.js';

/** A page-table IOMMU for tests: pages map to addresses in `target` with a permission. */
class PageTableIommu extends IommuMemoryRegion {
  readonly pages = new Map<bigint, { addr: bigint; perm: IOMMUAccessFlags }>();
  readonly flagChanges: string[] = [];
  refuse: string | undefined;

  constructor(
    name: string,
    size: bigint,
    readonly pageShift: bigint,
    public target: AddressSpace | null,
  ) {
    super(name, size);
  }

  override translate(addr: bigint): IOMMUTLBEntry {
    const mask = (1n << this.pageShift) - 1n;
    const page = this.pages.get(addr >> this.pageShift);
    if (!page) return iommuMiss(addr & ~mask);
    return {
      targetAs: this.target,
      iova: addr & ~mask,
      translatedAddr: page.addr,
      addrMask: mask,
      perm: page.perm,
    };
  }

  override getMinPageSize(): bigint {
    return 1n << this.pageShift;
  }

  override notifyFlagChanged(oldFlags: number, newFlags: number): string | undefined {
    this.flagChanges.push(`${oldFlags}->${newFlags}`);
    return this.refuse;
  }

  /** Changes a mapping and notifies, as a TCE write does. */
  set(page: bigint, addr: bigint, perm: IOMMUAccessFlags): void {
    if (perm === IOMMUAccessFlags.NONE) this.pages.delete(page);
    else this.pages.set(page, { addr, perm });
    const mask = (1n << this.pageShift) - 1n;
    const entry: IOMMUTLBEntry = {
      targetAs: this.target,
      iova: page << this.pageShift,
      translatedAddr: addr,
      addrMask: mask,
      perm,
    };
    this.notify({
      type: perm === IOMMUAccessFlags.NONE ? IOMMUNotifierFlag.UNMAP : IOMMUNotifierFlag.MAP,
      entry,
    });
  }
}

function system() {
  const root = new ContainerRegion('system', 1n << 40n);
  const ram = new RamRegion('ram', 0x100_0000n);
  root.addSubregion(0n, ram);
  return { memory: new AddressSpace(root, 'memory'), ram };
}

describe('translation through IOMMU regions', () => {
  it('follows two nested IOMMUs down to RAM, with offsets, contiguous length and permissions', () => {
    const { memory, ram } = system();
    // Level 2: an "intermediate" bus whose IOMMU maps 64 KiB pages into system memory.
    const l2 = new PageTableIommu('l2', 1n << 32n, 16n, memory);
    const busRoot = new ContainerRegion('bus', 1n << 32n);
    busRoot.addSubregion(0n, l2);
    const bus = new AddressSpace(busRoot, 'bus');
    // Level 1: the device's IOMMU, 4 KiB pages into the bus, placed at 0x1000_0000 in the device's view.
    const l1 = new PageTableIommu('l1', 1n << 24n, 12n, bus);
    const devRoot = new ContainerRegion('dev-root', 1n << 64n);
    devRoot.addSubregion(0x1000_0000n, l1);
    const dev = new AddressSpace(devRoot, 'dev');

    l2.set(0x20n, 0x30_0000n, IOMMUAccessFlags.RW); // bus 0x20_0000 -> ram 0x30_0000 (64 KiB)
    l1.set(0x5n, 0x20_3000n, IOMMUAccessFlags.RW); // dev 0x1000_5000 -> bus 0x20_3000 (4 KiB)
    l1.set(0x6n, 0x20_4000n, IOMMUAccessFlags.RW);
    l1.set(0x8n, 0x20_8000n, IOMMUAccessFlags.RO); // device may only read this one

    const t = dev.translate(0x1000_5123n, false, 0x10000n);
    expect(t.mr).toBe(ram);
    expect(t.xlat).toBe(0x30_3123n);
    expect(t.plen).toBe(0x1000n - 0x123n);
    expect(dev.translate(0x1000_8000n, true).mr).toBeNull();
    expect(dev.translate(0x1000_8000n, false).xlat).toBe(0x30_8000n);
    expect(dev.translate(0x1000_7000n, false).mr).toBeNull();

    // Device DMA: a write lands exactly where the two tables say.
    const payload = Uint8Array.from({ length: 0x100 }, (_, i) => 255 - i);
    expect(dev.write(0x1000_5f80n, payload)).toBe(MemTxResult.OK);
    const back = new Uint8Array(0x80);
    expect(memory.read(0x30_3f80n, back)).toBe(MemTxResult.OK);
    expect([...back]).toEqual([...payload.subarray(0, 0x80)]);
    expect(memory.read(0x30_4000n, back)).toBe(MemTxResult.OK);
    expect([...back]).toEqual([...payload.subarray(0x80)]);
    // The read-only page refuses a write; a device checks before touching anything.
    expect(dev.accessValid(0x1000_5f80n, 0x100n, true)).toBe(true);
    expect(dev.accessValid(0x1000_8000n, 0x10n, true)).toBe(false);
    expect(dev.accessValid(0x1000_8000n, 0x10n, false)).toBe(true);
    expect(dev.accessValid(0x1000_6f80n, 0x100n, false)).toBe(false);
    expect(dev.write(0x1000_8000n, payload)).toBe(MemTxResult.DECODE_ERROR);
    expect(memory.load(0x30_8000n, 8).value).toBe(0n);
  });
});

describe('IOMMU notifiers', () => {
  it('deliver only events whose type and range the notifier covers', () => {
    const { memory } = system();
    const iommu = new PageTableIommu('tce', 1n << 30n, 12n, memory);
    const seen: string[] = [];
    const mk = (name: string, flags: number, start: bigint, end: bigint) =>
      new IOMMUNotifier((e) => seen.push(`${name}:${e.iova.toString(16)}:${e.perm}`), flags, start, end);
    iommu.registerNotifier(mk('all', IOMMUNotifierFlag.MAP_UNMAP, 0n, (1n << 30n) - 1n));
    iommu.registerNotifier(mk('maps', IOMMUNotifierFlag.MAP, 0n, (1n << 30n) - 1n));
    iommu.registerNotifier(mk('low', IOMMUNotifierFlag.MAP_UNMAP, 0n, 0xfffn));
    iommu.registerNotifier(mk('straddle', IOMMUNotifierFlag.MAP_UNMAP, 0x1800n, 0x2fffn));
    iommu.set(0n, 0x1000n, IOMMUAccessFlags.RW);
    iommu.set(1n, 0x2000n, IOMMUAccessFlags.RO);
    iommu.set(0n, 0n, IOMMUAccessFlags.NONE);
    expect(seen).toEqual([
      'all:0:3',
      'maps:0:3',
      'low:0:3',
      'all:1000:1',
      'maps:1000:1',
      'all:0:0',
      'low:0:0',
    ]);
  });

  it('call notifyFlagChanged when the union of flags changes, first and last subscriber included', () => {
    const iommu = new PageTableIommu('tce', 1n << 30n, 12n, null);
    const a = new IOMMUNotifier(() => {}, IOMMUNotifierFlag.UNMAP);
    const b = new IOMMUNotifier(() => {}, IOMMUNotifierFlag.MAP_UNMAP);
    iommu.registerNotifier(a);
    iommu.registerNotifier(b);
    iommu.registerNotifier(new IOMMUNotifier(() => {}, IOMMUNotifierFlag.MAP)); // union unchanged
    expect(iommu.flagChanges).toEqual(['0->1', '1->3']);
    iommu.unregisterNotifier(b);
    iommu.unregisterNotifier(a);
    expect(iommu.notifyFlags).toBe(IOMMUNotifierFlag.MAP);
    iommu.unregisterNotifier(iommu.notifiers[0]!);
    expect(iommu.flagChanges).toEqual(['0->1', '1->3', '3->3', '3->2', '2->0'].filter((c) => c !== '3->3'));
    expect(iommu.notifyFlags).toBe(IOMMUNotifierFlag.NONE);
  });

  it('can refuse a subscription, which is then not registered', () => {
    const iommu = new PageTableIommu('tce', 1n << 30n, 12n, null);
    iommu.refuse = 'does not support dev-iotlb';
    const n = new IOMMUNotifier(() => {}, IOMMUNotifierFlag.DEVIOTLB_UNMAP);
    expect(() => iommu.registerNotifier(n)).toThrow(IommuNotifierRefusedError);
    expect(() => iommu.registerNotifier(n)).toThrow(
      'tce: IOMMU notifier refused: does not support dev-iotlb',
    );
    expect(iommu.notifiers).toHaveLength(0);
    expect(iommu.notifyFlags).toBe(IOMMUNotifierFlag.NONE);
  });

  it('replays a region that is not at offset 0 from its own start, MAP only, region-relative', () => {
    const { memory } = system();
    const iommu = new PageTableIommu('ddw', 0x10_0000n, 16n, memory);
    const busRoot = new ContainerRegion('phb.iommu-root', 1n << 64n);
    busRoot.addSubregion(0x800_0000_0000_0000n, iommu); // a window at 2^59, as a DDW
    iommu.set(0n, 0x10_0000n, IOMMUAccessFlags.RW);
    iommu.set(3n, 0x40_0000n, IOMMUAccessFlags.WO);
    iommu.set(15n, 0xf0_0000n, IOMMUAccessFlags.RO);
    const replayed: IOMMUTLBEntry[] = [];
    iommu.replay(new IOMMUNotifier((e) => replayed.push(e), IOMMUNotifierFlag.MAP_UNMAP));
    expect(replayed.map((e) => [e.iova, e.translatedAddr, e.addrMask, e.perm])).toEqual([
      [0n, 0x10_0000n, 0xffffn, 3],
      [0x3_0000n, 0x40_0000n, 0xffffn, 2],
      [0xf_0000n, 0xf0_0000n, 0xffffn, 1],
    ]);
    // And a device behind the bus sees the same pages at bus address = region offset + iova.
    const bus = new AddressSpace(busRoot, 'bus');
    expect(bus.translate(0x800_0000_0003_0010n, true).xlat).toBe(0x40_0010n);
  });

  it('reports its page sizes', () => {
    const iommu = new PageTableIommu('tce', 1n << 30n, 16n, null);
    expect(iommu.getMinPageSize()).toBe(0x10000n);
    expect(iommu.getPageSizeMask() & 0xffffn).toBe(0n);
    expect(iommu.getPageSizeMask() & 0x10000n).toBe(0x10000n);
  });
});
