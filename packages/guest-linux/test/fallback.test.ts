import { MemTxResult } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import {
  bootGuest,
  count,
  DDW_BASE,
  device,
  machine,
  pattern,
  readGuest,
  virtioNet,
  W0,
  W1,
} from './helpers.js';

const DDW_OFF = '-M pseries -m 2G -global spapr-pci-host-bridge.ddw=off -device e1000e';

describe('no DDW: the default window', () => {
  it('with ddw=off makes no RTAS DDW call and leaves the device on the default window', async () => {
    const rig = await machine(DDW_OFF);
    const { guest, states } = bootGuest(rig);
    expect(rig.lines.filter((l) => l.startsWith('spapr_iommu_ddw_'))).toEqual([]);
    expect(count(rig.lines, 'spapr_iommu_pci_stuff')).toBe(512);
    const [decision] = guest.decisions();
    expect(decision).toMatchObject({ outcome: 'failed', rtas: [], defaultWindowRemoved: false });
    expect(decision!.reasons[0]).toMatch(/no ibm,ddw-applicable/);
    expect(states[0]).toEqual({
      fn: guest.functions[0],
      mode: 'default',
      window: { liobn: W0, busOffset: 0n, pageShift: 12, windowShift: 30 },
      dmaOffset: 0n,
      maskBits: 64,
    });
  });

  it('maps with H_PUT_TCE_INDIRECT (several pages) or H_PUT_TCE (one) on LIOBN 0x80000000, unmaps with H_STUFF_TCE', async () => {
    const rig = await machine(DDW_OFF);
    const { guest } = bootGuest(rig);
    const fn = guest.functions[0]!;
    const nic = device(rig);
    rig.lines.length = 0;

    // Three 4K pages, read by the device: READ-only TCEs. Entry 0 of a window at bus 0 is never used.
    const gpa = 0x3456000n + 0x10n;
    const payload = pattern(0x2100, 1);
    rig.m.memory.write(gpa, payload);
    const bus = guest.dmaMap(fn, gpa, payload.length, 'to-device')!;
    expect(bus).toBe(0x1010n);
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x1000 tcelist=0x2070000 iobaN=0x2 tceN=0x3458001 ret=0',
    ]);
    expect(nic.dmaRead(bus, payload.length)).toEqual({ result: MemTxResult.OK, data: payload });
    expect(nic.dmaWrite(bus, new Uint8Array(4))).not.toBe(MemTxResult.OK);

    // One page the device writes: one H_PUT_TCE with READ|WRITE.
    rig.lines.length = 0;
    const rx = guest.dmaMap(fn, 0x7000000n, 0x800, 'from-device')!;
    expect(rx).toBe(0x4000n);
    expect(rig.lines).toEqual(['spapr_iommu_pci_put liobn=0x80000000 ioba=0x4000 tce=0x7000003 ret=0']);
    const reply = pattern(0x800, 2);
    expect(nic.dmaWrite(rx, reply)).toBe(MemTxResult.OK);
    expect(readGuest(rig.m, 0x7000000n, reply.length)).toEqual(reply);

    rig.lines.length = 0;
    guest.dmaUnmap(fn, bus, payload.length);
    guest.dmaUnmap(fn, rx, 0x800);
    // QEMU prints the ioba its loop reached.
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x4000 tcevalue=0x0 npages=3 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x5000 tcevalue=0x0 npages=1 ret=0',
    ]);
    expect(nic.dmaRead(bus, 16).result).not.toBe(MemTxResult.OK);
    expect(guest.hypercallCounts()).toEqual({ H_PUT_TCE: 1, H_PUT_TCE_INDIRECT: 1, H_STUFF_TCE: 514 });
  });

  it('splits big mappings in lists of 512; 6.1 unmaps in stuffs of 512, 4.x in one', async () => {
    for (const generation of ['linux-6.1', 'linux-4.x'] as const) {
      const rig = await machine(DDW_OFF);
      const { guest } = bootGuest(rig, { generation });
      const fn = guest.functions[0]!;
      rig.lines.length = 0;
      // 3 MiB from a 64K-aligned address: 768 pages, starting on a 64K boundary of the bus.
      const bus = guest.dmaMap(fn, 0x10000000n, 3 << 20, 'bidirectional')!;
      expect(bus).toBe(0x10000n);
      expect(rig.lines).toEqual([
        'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x10000 tcelist=0x2070000 iobaN=0x1ff tceN=0x101ff003 ret=0',
        'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x210000 tcelist=0x2070000 iobaN=0xff tceN=0x102ff003 ret=0',
      ]);
      rig.lines.length = 0;
      guest.dmaUnmap(fn, bus, 3 << 20);
      expect(rig.lines).toEqual(
        generation === 'linux-6.1'
          ? [
              'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x210000 tcevalue=0x0 npages=512 ret=0',
              'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x310000 tcevalue=0x0 npages=256 ret=0',
            ]
          : ['spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x310000 tcevalue=0x0 npages=768 ret=0'],
      );
    }
  });

  it('with disable_ddw negotiates nothing even though the PHB offers DDW', async () => {
    const rig = await machine('-M pseries -m 2G -device e1000e');
    const { guest, states } = bootGuest(rig, { disableDdw: true });
    expect(rig.lines.filter((l) => l.startsWith('spapr_iommu_ddw_'))).toEqual([]);
    expect(guest.decisions()[0]!.outcome).toBe('not-attempted');
    expect(states[0]!.mode).toBe('default');
  });

  it('leaves functions without a known driver alone; a 32-bit mask never asks for a DDW', async () => {
    const rig = await machine('-M pseries -m 2G -device virtio-net-pci -device e1000e', {
      plugins: [virtioNet()],
    });
    const { guest, states } = bootGuest(rig);
    expect(guest.functions.map((f) => [f.vendorId, f.deviceId, f.driver])).toEqual([
      [0x1af4, 0x1000, undefined],
      [0x8086, 0x10d3, 'e1000e'],
    ]);
    expect(states.map((s) => s.fn.driver)).toEqual(['e1000e']);
    expect(guest.state(guest.functions[0]!)).toBeUndefined();
    // The driverless function still maps through the default window (a 32-bit device).
    const bus = guest.dmaMap(guest.functions[0]!, 0x5000n, 0x1000, 'to-device');
    expect(bus).toBe(0x1000n);
    expect(guest.state(guest.functions[0]!)).toMatchObject({ mode: 'default', maskBits: 32 });

    const rig32 = await machine('-M pseries -m 2G -device e1000e');
    const only32 = bootGuest(rig32, { dmaMaskBits: () => 32 });
    expect(only32.states[0]!.mode).toBe('default');
    expect(rig32.lines.filter((l) => l.startsWith('spapr_iommu_ddw_'))).toEqual([]);
    expect(only32.guest.decisions()[0]!.outcome).toBe('not-attempted');
  });
});

describe('without hcall-multi-tce', () => {
  it('clears, populates, maps and unmaps with H_PUT_TCE only', async () => {
    const rig = await machine('-M pseries -m 2G -device e1000e', { noMultiTce: true });
    const { guest, states } = bootGuest(rig);
    expect(guest.multiTce).toBe(false);
    // 262144 clears of the 1 GiB default window, then one TCE per 16M page of 2 GiB.
    expect(count(rig.lines, 'spapr_iommu_pci_put')).toBe(262144 + 128);
    expect(count(rig.lines, 'spapr_iommu_pci_stuff') + count(rig.lines, 'spapr_iommu_pci_indirect')).toBe(0);
    expect(
      rig.lines.filter((l) => l.startsWith(`spapr_iommu_pci_put liobn=0x${W1.toString(16)} `)).slice(0, 2),
    ).toEqual([
      'spapr_iommu_pci_put liobn=0x80000001 ioba=0x800000000000000 tce=0x3 ret=0',
      'spapr_iommu_pci_put liobn=0x80000001 ioba=0x800000001000000 tce=0x1000003 ret=0',
    ]);
    expect(states[0]).toMatchObject({ mode: 'direct', dmaOffset: DDW_BASE });
    const nic = device(rig);
    const data = pattern(5000, 3);
    rig.m.memory.write(0x7ff00000n, data);
    expect(
      nic.dmaRead(guest.dmaMap(guest.functions[0]!, 0x7ff00000n, data.length, 'to-device')!, data.length),
    ).toEqual({
      result: MemTxResult.OK,
      data,
    });
  });

  it('maps per page on the default window and unmaps with H_PUT_TCE of 0', async () => {
    const rig = await machine('-M pseries -m 2G -global spapr-pci-host-bridge.ddw=off -device e1000e', {
      noMultiTce: true,
    });
    const { guest } = bootGuest(rig);
    const fn = guest.functions[0]!;
    rig.lines.length = 0;
    const bus = guest.dmaMap(fn, 0x20000n, 0x2000, 'from-device')!;
    guest.dmaUnmap(fn, bus, 0x2000);
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x20003 ret=0',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x2000 tce=0x21003 ret=0',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x0 ret=0',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x2000 tce=0x0 ret=0',
    ]);
  });
});
