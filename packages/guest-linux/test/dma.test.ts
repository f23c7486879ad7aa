import { MemTxResult } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import type { DmaMode, LinuxGeneration } from '../src/index.js';
import {
  bootGuest,
  DDW_BASE,
  device,
  expectRead,
  expectSame,
  machine,
  pattern,
  readGuest,
} from './helpers.js';

interface Case {
  name: string;
  args: string;
  generation: LinuxGeneration;
  mode: DmaMode;
}

const CASES: Case[] = [
  {
    name: 'direct, 16M pages (6.1)',
    args: '-M pseries -m 2G -device e1000e',
    generation: 'linux-6.1',
    mode: 'direct',
  },
  {
    name: 'direct, 16M pages (4.x)',
    args: '-M pseries -m 2G -device e1000e',
    generation: 'linux-4.x',
    mode: 'direct',
  },
  {
    name: 'direct, 64K pages',
    args: '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device dma-engine',
    generation: 'linux-6.1',
    mode: 'direct',
  },
  {
    name: 'default window (ddw=off)',
    args: '-M pseries -m 2G -global spapr-pci-host-bridge.ddw=off -device e1000e',
    generation: 'linux-6.1',
    mode: 'default',
  },
  {
    name: 'default window after a failed create',
    args: '-M pseries -m 1G,maxmem=16T,slots=1 -global spapr-pci-host-bridge.pgsz=0x1000 -device e1000e',
    generation: 'linux-6.1',
    mode: 'default',
  },
  {
    name: 'dynamic window (pseries-2.7)',
    args: '-M pseries-2.7 -m 1G,maxmem=16385G,slots=1 -device e1000e',
    generation: 'linux-6.1',
    mode: 'dynamic',
  },
];

describe.each(CASES)('DMA end to end: $name', ({ args, generation, mode }) => {
  it('the device reads what the guest wrote, and the guest finds what the device wrote', async () => {
    const rig = await machine(args);
    const { guest, states } = bootGuest(rig, { generation });
    expect(states[0]!.mode).toBe(mode);
    const fn = guest.functions[0]!;
    const nic = device(rig);
    const before = guest.hypercallCounts();

    // Unaligned, over several IOMMU pages of any size in use.
    const tx = pattern(0x25000, 21);
    const txGpa = 0x2fff800n;
    rig.m.memory.write(txGpa, tx);
    const txBus = guest.dmaMap(fn, txGpa, tx.length, 'to-device')!;
    expect(txBus).toBeDefined();
    expectRead(nic.dmaRead(txBus, tx.length), tx);

    const rx = pattern(0x1800, 22);
    const rxGpa = 0x3ff00000n + 0x40n;
    const rxBus = guest.dmaMap(fn, rxGpa, rx.length, 'from-device')!;
    expect(nic.dmaWrite(rxBus, rx)).toBe(MemTxResult.OK);
    expectSame(readGuest(rig.m, rxGpa, rx.length), rx);

    guest.dmaUnmap(fn, txBus, tx.length);
    guest.dmaUnmap(fn, rxBus, rx.length);
    if (mode === 'direct') {
      // Direct DMA: bus = phys + the window's address, and not one hypercall per mapping.
      expect(txBus).toBe(txGpa + DDW_BASE);
      expect(guest.hypercallCounts()).toEqual(before);
      expectRead(nic.dmaRead(txBus, 16), tx.subarray(0, 16));
    } else {
      expect(guest.hypercallCounts()).not.toEqual(before);
      expect(nic.dmaRead(txBus, 16).result).not.toBe(MemTxResult.OK);
      expect(nic.dmaWrite(rxBus, rx)).not.toBe(MemTxResult.OK);
    }
  });
});
