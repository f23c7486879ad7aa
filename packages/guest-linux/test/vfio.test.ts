import type { HostErrorEvent } from '@ddw/machine';
import { MachineTokens } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { GUEST_RAM_HOST_BASE, VfioTokens } from '@ddw/vfio-common';
import { describe, expect, it } from 'vitest';
import {
  bootGuest,
  DDW_BASE,
  device,
  expectRead,
  expectSame,
  machine,
  pattern,
  readGuest,
  W1,
} from './helpers.js';

const PASSTHROUGH = '-M pseries -m 4G -device vfio-pci,host=0000:01:00.0';

/**
 * The guest picks its page size from what QEMU's PHB offers (16M by default), not from what the
 * host IOMMU can do. QEMU then backs the guest window with the largest host IOMMU page that both
 * the host offers and the RAM backing allows, and maps each guest TCE as many host pages.
 */
describe.each([
  { host: 'pgsizes=0x1001000', hostShift: 12, why: '4K|16M offered, RAM on 64K pages: 4K host pages' },
  { host: 'pgsizes=0x1011000', hostShift: 16, why: 'the default host: 64K host pages' },
  { host: 'rampage=16M', hostShift: 24, why: 'RAM on 16M huge pages: 16M host pages' },
])('vfio-pci, host $host ($why)', ({ host, hostShift }) => {
  it('negotiates a 16M direct window and the device does DMA both ways through the host IOMMU', async () => {
    const rig = await machine(PASSTHROUGH, { host, trace: ['vfio_spapr_create_window'] });
    const hostErrors: HostErrorEvent[] = [];
    rig.m.get(MachineTokens.Events).on('host-error', (e) => hostErrors.push(e));
    const { guest, states } = bootGuest(rig);
    expect(guest.functions[0]).toMatchObject({ vendorId: 0x15b3, deviceId: 0x1017, driver: 'mlx5_core' });
    expect(states[0]).toMatchObject({
      mode: 'direct',
      dmaOffset: DDW_BASE,
      window: { liobn: W1, pageShift: 24, windowShift: 32 },
    });
    expect(rig.lines.at(-1)).toBe(
      `vfio_spapr_create_window pageshift=0x${hostShift.toString(16)} levels=1 winsize=0x100000000 offset=0x800000000000000`,
    );
    const container = rig.m.get(VfioTokens.Vfio).containers[0]!;
    const hostWindow = container.fd.windows().find((w) => w.startAddr === DDW_BASE)!;
    expect(hostWindow).toMatchObject({ pageShift: hostShift, size: 1n << 32n });
    const page = container.fd.translate(DDW_BASE + 0x1234000n)!;
    expect(page.size).toBe(1n << BigInt(hostShift));
    expect(page.vaddr).toBe(GUEST_RAM_HOST_BASE + (0x1234000n & ~((1n << BigInt(hostShift)) - 1n)));

    // Across a 16M guest TCE boundary, in both directions.
    const nic = device(rig);
    const fn = guest.functions[0]!;
    const tx = pattern(0x30000, 11);
    const txGpa = 0xfff0000n + 0x123n;
    rig.m.memory.write(txGpa, tx);
    const txBus = guest.dmaMap(fn, txGpa, tx.length, 'to-device')!;
    expect(txBus).toBe(DDW_BASE + txGpa);
    expectRead(nic.dmaRead(txBus, tx.length), tx);
    const rx = pattern(0x21000, 12);
    const rxBus = guest.dmaMap(fn, 0xeffff000n, rx.length, 'from-device')!;
    expect(nic.dmaWrite(rxBus, rx)).toBe(MemTxResult.OK);
    expectSame(readGuest(rig.m, 0xeffff000n, rx.length), rx);
    expect(hostErrors).toEqual([]);
  });
});
