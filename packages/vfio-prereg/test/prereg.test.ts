import { TraceBus } from '@ddw/machine';
import { AddressSpace, ContainerRegion, MmioRegion, RamRegion } from '@ddw/memory';
import { VFIO_TRACE_EVENTS, type VfioContainer } from '@ddw/vfio-common';
import { describe, expect, it } from 'vitest';
import { preregListener } from '../src/index.js';

const HOST_BASE = 0x7e0000000000n;

/** A container stand-in that records the ioctls the listener makes and the errors it reports. */
function fakeContainer(options: { registerRet?: number; initialized?: boolean } = {}) {
  const calls: string[] = [];
  const reports: string[] = [];
  const aborts: string[] = [];
  const rams = new Map<RamRegion, bigint>();
  const container = {
    initialized: options.initialized ?? false,
    error: undefined as string | undefined,
    deps: {
      hostPageSize: 0x10000n,
      hostPointer: (mr: RamRegion, offset: bigint) => {
        const base = rams.get(mr);
        return base === undefined ? undefined : base + offset;
      },
    },
    fd: {
      registerMemory: (r: { vaddr: bigint; size: bigint }) => {
        calls.push(`register 0x${r.vaddr.toString(16)} 0x${r.size.toString(16)}`);
        return options.registerRet ?? 0;
      },
      unregisterMemory: (r: { vaddr: bigint; size: bigint }) => {
        calls.push(`unregister 0x${r.vaddr.toString(16)} 0x${r.size.toString(16)}`);
        return 0;
      },
    },
    report: (m: string) => void reports.push(m),
    abort: (m: string) => void aborts.push(m),
  };
  return {
    container: container as unknown as VfioContainer & typeof container,
    calls,
    reports,
    aborts,
    rams,
  };
}

function traces() {
  const bus = new TraceBus();
  bus.defineAll(VFIO_TRACE_EVENTS, 'vfio');
  bus.setPatterns(['vfio_prereg_*']);
  const out = bus.collect();
  const ev = (n: string) => bus.event(n)!;
  return {
    out,
    traces: {
      addSkip: ev('vfio_prereg_listener_region_add_skip'),
      delSkip: ev('vfio_prereg_listener_region_del_skip'),
      register: ev('vfio_prereg_register'),
      unregister: ev('vfio_prereg_unregister'),
    },
  };
}

describe('the pre-registration listener', () => {
  it('registers guest RAM at its host pointer and unregisters it when the listener goes', () => {
    const root = new ContainerRegion('system', 1n << 40n);
    const ram = new RamRegion('ram', 0x80000000n);
    root.addSubregion(0n, ram);
    const as = new AddressSpace(root, 'memory');
    const { container, calls, rams } = fakeContainer();
    rams.set(ram, HOST_BASE);
    const { out, traces: t } = traces();
    const listener = preregListener(container, t);
    as.addListener(listener);
    as.removeListener(listener);
    expect(calls).toEqual(['register 0x7e0000000000 0x80000000', 'unregister 0x7e0000000000 0x80000000']);
    expect(out.lines).toEqual([
      'vfio_prereg_register va=0x7e0000000000 size=0x80000000 ret=0',
      'vfio_prereg_unregister va=0x7e0000000000 size=0x80000000 ret=0',
    ]);
  });

  it('refuses a section not aligned to the host page, with no host call (T28)', () => {
    const root = new ContainerRegion('system', 1n << 40n);
    const ram = new RamRegion('small', 0x8000n);
    root.addSubregion(0x10000n, ram);
    const as = new AddressSpace(root, 'memory');
    const { container, calls, reports, rams } = fakeContainer();
    rams.set(ram, HOST_BASE);
    as.addListener(preregListener(container, traces().traces));
    expect(calls).toEqual([]);
    expect(reports).toEqual(['vfio_prereg_listener_region_add received unaligned region']);
  });

  it('skips device RAM and MMIO with the skip trace (T28)', () => {
    const root = new ContainerRegion('system', 1n << 48n);
    root.addSubregion(0x200000000000n, new RamRegion('0000:01:00.0 BAR 0', 0x100000n, { ramDevice: true }));
    root.addSubregion(
      0x210000000000n,
      new MmioRegion('mmio', 0x1000n, { read: () => 0n, write: () => undefined }),
    );
    const as = new AddressSpace(root, 'memory');
    const { container, calls } = fakeContainer();
    const { out, traces: t } = traces();
    as.addListener(preregListener(container, t));
    expect(calls).toEqual([]);
    expect(out.lines).toEqual([
      'vfio_prereg_listener_region_add_skip 0x200000000000 - 0x2000000fffff',
      'vfio_prereg_listener_region_add_skip 0x210000000000 - 0x210000000fff',
    ]);
  });

  it('keeps the first failure as the set-up error, with the message QEMU builds from -1', () => {
    const root = new ContainerRegion('system', 1n << 40n);
    const ram = new RamRegion('ram', 0x80000000n);
    root.addSubregion(0n, ram);
    const as = new AddressSpace(root, 'memory');
    const { container, rams } = fakeContainer({ registerRet: -12 });
    rams.set(ram, HOST_BASE);
    const { out, traces: t } = traces();
    as.addListener(preregListener(container, t));
    expect(container.error).toBe('Memory registering failed: Operation not permitted');
    expect(out.lines).toEqual(['vfio_prereg_register va=0x7e0000000000 size=0x80000000 ret=-12']);
  });

  it('stops VFIO (hw_error) when registering fails at run time', () => {
    const root = new ContainerRegion('system', 1n << 40n);
    const as = new AddressSpace(root, 'memory');
    const { container, aborts, rams } = fakeContainer({ registerRet: -12, initialized: true });
    as.addListener(preregListener(container, traces().traces));
    const hotplugged = new RamRegion('dimm0', 0x10000000n);
    rams.set(hotplugged, HOST_BASE + 0x100000000n);
    root.addSubregion(0x100000000n, hotplugged);
    expect(aborts).toEqual(['vfio: Memory registering failed, unable to continue']);
  });
});
