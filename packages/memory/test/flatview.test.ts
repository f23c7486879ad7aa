import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AddressSpace,
  AliasRegion,
  ContainerRegion,
  type MemoryRegion,
  MmioRegion,
  RamRegion,
  UINT64_SPAN,
} from '../src/index.js';
import { describeView } from './helpers.js';

const mmio = (name: string, size: bigint) => new MmioRegion(name, size, {});

describe('overlap resolution (docs/devel/memory.rst, "Overlapping regions and priority")', () => {
  function buildExample(bIsContainer: boolean) {
    const a = new ContainerRegion('A', 0x8000n);
    const b: MemoryRegion = bIsContainer ? new ContainerRegion('B', 0x4000n) : mmio('B', 0x4000n);
    const c = mmio('C', 0x6000n);
    const d = mmio('D', 0x1000n);
    const e = mmio('E', 0x1000n);
    b.addSubregion(0n, d);
    b.addSubregion(0x2000n, e);
    a.addSubregion(0x2000n, b, { priority: 2 });
    a.addSubregion(0n, c, { priority: 1 });
    return new AddressSpace(a, 'example');
  }

  it('shows C in the holes of a higher-priority pure container B', () => {
    // [CCCCCCCCCCCC][DDDDD][CCCCC][EEEEE][CCCCC]
    expect(describeView(buildExample(true).flatView)).toEqual([
      '0-1fff:C',
      '2000-2fff:D',
      '3000-3fff:C@3000',
      '4000-4fff:E',
      '5000-5fff:C@5000',
    ]);
  });

  it('shows B itself in its holes when B has its own MMIO', () => {
    // [CCCCCCCCCCCC][DDDDD][BBBBB][EEEEE][BBBBB]
    expect(describeView(buildExample(false).flatView)).toEqual([
      '0-1fff:C',
      '2000-2fff:D',
      '3000-3fff:B@1000',
      '4000-4fff:E',
      '5000-5fff:B@3000',
    ]);
  });

  it('lets the newest of equal-priority overlapping siblings win, as QEMU', () => {
    const root = new ContainerRegion('root', 0x10000n);
    root.addSubregion(0n, mmio('old', 0x2000n));
    root.addSubregion(0x1000n, mmio('new', 0x2000n));
    expect(describeView(new AddressSpace(root, 'as').flatView)).toEqual(['0-fff:old', '1000-2fff:new']);
  });

  it('follows the PC example map: aliases lomem/himem over one RAM block, vga-window above lomem', () => {
    const system = new ContainerRegion('system', 1n << 48n);
    const ram = new RamRegion('ram', 0x1_0000_0000n);
    const pci = new ContainerRegion('pci', 1n << 32n);
    pci.addSubregion(0xe100_0000n, mmio('vram', 0x100_0000n));
    system.addSubregion(0n, new AliasRegion('lomem', ram, 0n, 0xe000_0000n));
    system.addSubregion(0x1_0000_0000n, new AliasRegion('himem', ram, 0xe000_0000n, 0x2000_0000n));
    system.addSubregion(0xa0000n, new AliasRegion('vga-window', pci, 0xa0000n, 0x20000n), { priority: 1 });
    system.addSubregion(0xe000_0000n, new AliasRegion('pci-hole', pci, 0xe000_0000n, 0x2000_0000n));
    const as = new AddressSpace(system, 'memory');
    // The vga window shows the (empty) pci space: a hole through which lomem shows again.
    expect(describeView(as.flatView)).toEqual([
      '0-dfffffff:ram',
      'e1000000-e1ffffff:vram',
      '100000000-11fffffff:ram@e0000000',
    ]);
  });

  it('renders a region as large as the whole 64-bit space', () => {
    const root = new ContainerRegion('root', UINT64_SPAN);
    const top = mmio('top', 0x1000n);
    root.addSubregion(UINT64_SPAN - 0x1000n, top);
    root.addSubregion(0n, new RamRegion('ram', 0x1000n));
    const as = new AddressSpace(root, 'as');
    expect(describeView(as.flatView)).toEqual(['0-fff:ram', 'fffffffffffff000-ffffffffffffffff:top']);
    expect(as.flatView.lookup(UINT64_SPAN - 1n)?.mr).toBe(top);
  });
});

describe('topology changes', () => {
  it('hides a disabled region and shows what lies below it', () => {
    const root = new ContainerRegion('root', 0x10000n);
    const low = new RamRegion('low', 0x4000n);
    const high = mmio('high', 0x1000n);
    root.addSubregion(0n, low);
    root.addSubregion(0x1000n, high, { priority: 1 });
    const as = new AddressSpace(root, 'as');
    expect(describeView(as.flatView)).toEqual(['0-fff:low', '1000-1fff:high', '2000-3fff:low@2000']);
    high.setEnabled(false);
    expect(describeView(as.flatView)).toEqual(['0-3fff:low']);
    high.setEnabled(true);
    high.setAddress(0x3000n);
    expect(describeView(as.flatView)).toEqual(['0-2fff:low', '3000-3fff:high']);
    high.setSize(0x2000n);
    expect(describeView(as.flatView)).toEqual(['0-2fff:low', '3000-4fff:high']);
    root.removeSubregion(high);
    expect(describeView(as.flatView)).toEqual(['0-3fff:low']);
  });

  it('updates every address space that sees a region through an alias', () => {
    const target = new ContainerRegion('target', 0x10000n);
    const root = new ContainerRegion('root', 0x100000n);
    const alias = new AliasRegion('window', target, 0x1000n, 0x2000n);
    root.addSubregion(0x50000n, alias);
    const as = new AddressSpace(root, 'as');
    expect(as.flatView.ranges).toHaveLength(0);
    target.addSubregion(0x2000n, mmio('dev', 0x1000n));
    expect(describeView(as.flatView)).toEqual(['51000-51fff:dev']);
    alias.setOffset(0x2000n);
    expect(describeView(as.flatView)).toEqual(['50000-50fff:dev']);
  });

  it('refuses a second container, a cycle, and subregions of an alias', () => {
    const a = new ContainerRegion('a', 0x1000n);
    const b = new ContainerRegion('b', 0x1000n);
    const r = new RamRegion('r', 0x1000n);
    a.addSubregion(0n, r);
    expect(() => b.addSubregion(0n, r)).toThrow(/r: already mapped in "a"/);
    a.addSubregion(0n, b);
    expect(() => b.addSubregion(0n, a)).toThrow(/cycle/);
    const alias = new AliasRegion('al', r, 0n, 0x1000n);
    expect(() => alias.addSubregion(0n, new RamRegion('x', 1n))).toThrow(/alias has no subregions/);
    expect(() => new RamRegion('big', (1n << 64n) + 1n)).toThrow(/outside 0..2\^64/);
  });
});

/**
 * memory.rst's "Visibility" rules, applied to one address at a time: the reference the flat view
 * must agree with for any layout.
 */
function resolve(mr: MemoryRegion, addr: bigint): { mr: MemoryRegion; offset: bigint } | null {
  if (mr.kind === 'alias') {
    const alias = mr as AliasRegion;
    return resolveInside(alias.target, addr + alias.offset);
  }
  return resolveInside(mr, addr);
}
function resolveInside(mr: MemoryRegion, addr: bigint): { mr: MemoryRegion; offset: bigint } | null {
  if (!mr.enabled || addr < 0n || addr >= mr.size) return null;
  if (mr.kind === 'alias') return resolve(mr, addr);
  for (const sub of mr.subregions) {
    if (!sub.enabled || addr < sub.addr || addr >= sub.addr + sub.size) continue;
    const found = resolve(sub, addr - sub.addr);
    if (found) return found;
  }
  return mr.terminates ? { mr, offset: addr } : null;
}

describe('flat view property', () => {
  it('agrees with the per-address visibility rules for random layouts', () => {
    const layout = fc.array(
      fc.record({
        kind: fc.constantFrom('ram', 'mmio', 'container', 'alias'),
        parent: fc.nat(),
        offset: fc.integer({ min: 0, max: 63 }),
        size: fc.integer({ min: 1, max: 48 }),
        priority: fc.integer({ min: -2, max: 2 }),
        enabled: fc.boolean(),
        aliasOffset: fc.integer({ min: 0, max: 16 }),
      }),
      { maxLength: 14 },
    );
    fc.assert(
      fc.property(layout, (specs) => {
        const page = 0x100n;
        const root = new ContainerRegion('root', 64n * page);
        const containers: MemoryRegion[] = [root];
        const all: MemoryRegion[] = [];
        specs.forEach((s, i) => {
          const size = BigInt(s.size) * page;
          let region: MemoryRegion;
          if (s.kind === 'ram') region = new RamRegion(`r${i}`, size);
          else if (s.kind === 'mmio') region = mmio(`m${i}`, size);
          else if (s.kind === 'container') region = new ContainerRegion(`c${i}`, size);
          else {
            const candidates = all.filter((r) => r.kind !== 'alias');
            if (candidates.length === 0) return;
            region = new AliasRegion(
              `a${i}`,
              candidates[i % candidates.length]!,
              BigInt(s.aliasOffset) * page,
              size,
            );
          }
          const parent = containers[s.parent % containers.length]!;
          try {
            parent.addSubregion(BigInt(s.offset) * page, region, { priority: s.priority });
          } catch (error) {
            // An alias inside its own target is a cycle the API must refuse; skip that region.
            expect(String(error)).toMatch(/would make a cycle/);
            return;
          }
          region.setEnabled(s.enabled);
          all.push(region);
          if (s.kind !== 'alias') containers.push(region);
        });
        const view = new AddressSpace(root, 'prop').flatView;
        for (let a = 0n; a < 64n * page; a += page / 2n + 0x11n) {
          const want = resolveInside(root, a);
          const got = view.lookup(a);
          if (want === null) expect(got).toBeUndefined();
          else {
            expect(got?.mr).toBe(want.mr);
            expect(a - got!.start + got!.offsetInRegion).toBe(want.offset);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
