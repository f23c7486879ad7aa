import { describe, expect, it } from 'vitest';
import {
  AddressSpace,
  beginTransaction,
  ContainerRegion,
  commitTransaction,
  type MemoryListener,
  type MemoryRegionSection,
  MmioRegion,
  RamRegion,
  transaction,
} from '../src/index.js';

function fmt(s: MemoryRegionSection): string {
  return `${s.mr.name}@${s.offsetWithinAddressSpace.toString(16)}+${s.size.toString(16)}/${s.offsetWithinRegion.toString(16)}`;
}

function recorder(name: string, log: string[], priority = 0): MemoryListener {
  return {
    name,
    priority,
    begin: () => log.push(`${name}:begin`),
    commit: () => log.push(`${name}:commit`),
    regionAdd: (s) => log.push(`${name}:add ${fmt(s)}`),
    regionDel: (s) => log.push(`${name}:del ${fmt(s)}`),
  };
}

describe('memory listeners', () => {
  it('tells a listener registered late about every existing section', () => {
    const root = new ContainerRegion('root', 0x100000n);
    root.addSubregion(0n, new RamRegion('ram', 0x10000n));
    root.addSubregion(0x20000n, new MmioRegion('dev', 0x1000n, {}));
    const as = new AddressSpace(root, 'as');
    const log: string[] = [];
    as.addListener(recorder('L', log));
    expect(log).toEqual(['L:begin', 'L:add ram@0+10000/0', 'L:add dev@20000+1000/0', 'L:commit']);
    log.length = 0;
    as.removeListener(recorder('other', log));
    as.removeListener(as.listeners[0]!);
    expect(log).toEqual(['L:begin', 'L:del ram@0+10000/0', 'L:del dev@20000+1000/0', 'L:commit']);
  });

  it('renders once per outermost transaction, however deeply nested, and sends del before add', () => {
    const root = new ContainerRegion('root', 0x100000n);
    const ram = new RamRegion('ram', 0x10000n);
    const win = new MmioRegion('win', 0x1000n, {});
    root.addSubregion(0n, ram);
    const as = new AddressSpace(root, 'as');
    const log: string[] = [];
    as.addListener(recorder('L', log));
    log.length = 0;
    beginTransaction();
    root.addSubregion(0x4000n, win, { priority: 1 });
    transaction(() => {
      win.setAddress(0x8000n);
      root.removeSubregion(ram);
      root.addSubregion(0x1000n, ram);
    });
    expect(log).toEqual([]);
    commitTransaction();
    // One diff from the view before the transaction to the view after it.
    expect(log).toEqual([
      'L:begin',
      'L:del ram@0+10000/0',
      'L:add ram@1000+7000/0',
      'L:add win@8000+1000/0',
      'L:add ram@9000+8000/8000',
      'L:commit',
    ]);
    expect(() => commitTransaction()).toThrow(/without a matching/);
  });

  it('calls listeners in ascending priority, and region_del in descending priority', () => {
    const root = new ContainerRegion('root', 0x10000n);
    const as = new AddressSpace(root, 'as');
    const log: string[] = [];
    as.addListener(recorder('high', log, 10));
    as.addListener(recorder('low', log, -5));
    as.addListener(recorder('mid', log, 0));
    log.length = 0;
    const ram = new RamRegion('ram', 0x1000n);
    root.addSubregion(0n, ram);
    root.removeSubregion(ram);
    expect(log).toEqual([
      'low:begin',
      'mid:begin',
      'high:begin',
      'low:add ram@0+1000/0',
      'mid:add ram@0+1000/0',
      'high:add ram@0+1000/0',
      'low:commit',
      'mid:commit',
      'high:commit',
      'low:begin',
      'mid:begin',
      'high:begin',
      'high:del ram@0+1000/0',
      'mid:del ram@0+1000/0',
      'low:del ram@0+1000/0',
      'low:commit',
      'mid:commit',
      'high:commit',
    ]);
  });

  it('reports unchanged ranges as region_nop and leaves other address spaces alone', () => {
    const rootA = new ContainerRegion('a', 0x10000n);
    const rootB = new ContainerRegion('b', 0x10000n);
    rootA.addSubregion(0n, new RamRegion('ramA', 0x1000n));
    const asA = new AddressSpace(rootA, 'A');
    const asB = new AddressSpace(rootB, 'B');
    const nops: string[] = [];
    const logB: string[] = [];
    asA.addListener({ regionNop: (s) => nops.push(fmt(s)) });
    asB.addListener(recorder('B', logB));
    rootA.addSubregion(0x2000n, new RamRegion('ram2', 0x1000n));
    expect(nops).toEqual(['ramA@0+1000/0']);
    expect(logB).toEqual(['B:begin', 'B:commit']);
  });

  it('keeps updating other listeners when one throws, then reports the failure', () => {
    const root = new ContainerRegion('root', 0x10000n);
    const as = new AddressSpace(root, 'as');
    const seen: string[] = [];
    as.addListener({
      name: 'bad',
      priority: 0,
      regionAdd: () => {
        throw new Error('host refused');
      },
    });
    as.addListener({ name: 'good', priority: 1, regionAdd: (s) => seen.push(fmt(s)) });
    expect(() => root.addSubregion(0n, new RamRegion('ram', 0x1000n))).toThrow('host refused');
    expect(seen).toEqual(['ram@0+1000/0']);
    expect(as.flatView.ranges).toHaveLength(1);
  });

  it('tells listeners everything went away when the address space is destroyed', () => {
    const root = new ContainerRegion('root', 0x10000n);
    root.addSubregion(0n, new RamRegion('ram', 0x1000n));
    const as = new AddressSpace(root, 'as');
    const log: string[] = [];
    as.addListener(recorder('L', log));
    log.length = 0;
    as.destroy();
    expect(log).toEqual(['L:begin', 'L:del ram@0+1000/0', 'L:commit']);
    log.length = 0;
    root.addSubregion(0x4000n, new RamRegion('late', 0x1000n));
    expect(log).toEqual([]);
  });
});
