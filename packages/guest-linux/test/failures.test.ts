import {
  H_NOT_ENOUGH_RESOURCES,
  H_PARAMETER,
  H_PUT_TCE_INDIRECT,
  RTAS_IBM_CREATE_PE_DMA_WINDOW,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
} from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import {
  BUID_HI,
  BUID_LO,
  bootGuest,
  count,
  device,
  hookedPort,
  machine,
  pattern,
  W0,
  W1,
} from './helpers.js';

/**
 * A create QEMU 7.2 fails with -1: 4K pages only, and hotpluggable memory up to 16 TiB. The guest
 * asks for 2^44 bytes of 4K pages, 2^32 entries, which QEMU's uint32 nb_table truncates to 0.
 */
const HUGE_4K =
  '-M pseries -m 1G,maxmem=16T,slots=1 -global spapr-pci-host-bridge.pgsz=0x1000 -device e1000e -device e1000e';

describe('create fails', () => {
  it('without the default window removed: no reset, the PE is failed once for all its functions', async () => {
    const rig = await machine(HUGE_4K);
    const { guest, states } = bootGuest(rig);
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('failed');
    expect(decision!.rtas).toEqual([
      { call: 'ibm,query-pe-dma-windows', args: [0, BUID_HI, BUID_LO], rets: [0, 1, 0x20, 0, 0x1, 0] },
      { call: 'ibm,create-pe-dma-window', args: [0, BUID_HI, BUID_LO, 12, 44], rets: [0xffffffff, 0, 0, 0] },
    ]);
    expect(decision!.reasons).toContain('RAM up to 0x100000000000: direct window of 2^44');
    // The second NIC found the PE on the failed list: no second query.
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(1);
    expect(count(rig.lines, 'spapr_iommu_ddw_reset')).toBe(0);
    expect(states.map((s) => [s.mode, s.window.liobn])).toEqual([
      ['default', W0],
      ['default', W0],
    ]);
    // And the default window works for both.
    const data = pattern(0x1800, 4);
    rig.m.memory.write(0x30000000n, data);
    for (const [i, fn] of guest.functions.entries()) {
      const bus = guest.dmaMap(fn, 0x30000000n, data.length, 'to-device')!;
      expect(device(rig, i).dmaRead(bus, data.length)).toEqual({ result: MemTxResult.OK, data });
    }
  });

  it('after removing the default window: reset, and the default window is back', async () => {
    const rig = await machine(HUGE_4K);
    expect(rig.m.guest.rtasCall('ibm,create-pe-dma-window', [0, BUID_HI, BUID_LO, 12, 30], 4).status).toBe(0);
    rig.lines.length = 0;
    const { guest, states } = bootGuest(rig);
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('failed');
    expect(decision!.defaultWindowRemoved).toBe(true);
    expect(decision!.rtas.map((r) => [r.call, r.args, r.rets[0]])).toEqual([
      ['ibm,query-pe-dma-windows', [0, BUID_HI, BUID_LO], 0],
      ['ibm,remove-pe-dma-window', [W0], 0],
      ['ibm,query-pe-dma-windows', [0, BUID_HI, BUID_LO], 0],
      ['ibm,create-pe-dma-window', [0, BUID_HI, BUID_LO, 12, 44], 0xffffffff],
      ['ibm,reset-pe-dma-windows', [0, BUID_HI, BUID_LO], 0],
    ]);
    expect(rig.lines.filter((l) => l.startsWith('spapr_iommu_ddw_reset'))).toEqual([
      'spapr_iommu_ddw_reset buid=0x800000020000000 addr=0x0',
    ]);
    // QEMU's reset brings back the default window alone; the guest kept its table for it.
    expect(rig.phb.windows.map((w) => [w.liobn, w.enabled, w.busOffset])).toEqual([
      [W0, true, 0n],
      [W1, false, 0n],
    ]);
    expect(guest.getProp(rig.phb.nodePath, 'ibm,dma-window')).toBeDefined();
    expect(states.map((s) => s.mode)).toEqual(['default', 'default']);
    const bus = guest.dmaMap(guest.functions[1]!, 0x1000000n, 0x1000, 'from-device')!;
    expect(device(rig, 1).dmaWrite(bus, pattern(0x1000, 5))).toBe(MemTxResult.OK);
  });

  it('6.1 with 256M pages on QEMU 7.2: largest_block << 28 overflows 64 bits, the create asks for 2^0 and fails', async () => {
    const rig = await machine(
      '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11010000 -device e1000e',
    );
    const { guest, states } = bootGuest(rig);
    const [decision] = guest.decisions();
    expect(decision!.rtas[0]!.rets[4]).toBe(0x46);
    expect(decision!.reasons).toContain(
      'largest block 0x2000000000 x 2^28 covers 2^0 bytes, less than the 2^32 RAM needs: dynamic window of 2^0',
    );
    expect(decision!.rtas[1]).toEqual({
      call: 'ibm,create-pe-dma-window',
      args: [0, BUID_HI, BUID_LO, 28, 0],
      rets: [0xfffffffd, 0, 0, 0],
    });
    expect(states[0]!.mode).toBe('default');
  });

  it('retries a busy create (-2, 9900-9905) and does not retry a busy query', async () => {
    const rig = await machine('-M pseries -m 2G -device e1000e');
    const answers = [-2, 9900, 9905];
    const port = hookedPort(rig.m.guest, {
      rtas: (token, _args, nret, real) => {
        const busy = token === RTAS_IBM_CREATE_PE_DMA_WINDOW ? answers.shift() : undefined;
        if (busy === undefined) return real();
        return { status: busy, rets: [busy >>> 0, ...new Array<number>(nret - 1).fill(0)], hcallRet: 0n };
      },
    });
    const { guest, states } = bootGuest(rig, {}, port);
    expect(guest.decisions()[0]!.rtas.map((r) => r.rets[0])).toEqual([0, 0xfffffffe, 9900, 9905, 0]);
    expect(states[0]!.mode).toBe('direct');

    const rig2 = await machine('-M pseries -m 2G -device e1000e');
    const busyQuery = hookedPort(rig2.m.guest, {
      rtas: (token, _args, nret, real) =>
        token === RTAS_IBM_QUERY_PE_DMA_WINDOW
          ? { status: -2, rets: [0xfffffffe, ...new Array<number>(nret - 1).fill(0)], hcallRet: 0n }
          : real(),
    });
    const second = bootGuest(rig2, {}, busyQuery);
    expect(second.guest.decisions()[0]).toMatchObject({ outcome: 'failed' });
    expect(second.guest.decisions()[0]!.rtas).toHaveLength(1);
    expect(second.states[0]!.mode).toBe('default');
  });

  it('populate failing (6.1): the window is cleared and removed, no reset, the PE failed', async () => {
    const rig = await machine('-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e');
    let indirects = 0;
    const port = hookedPort(rig.m.guest, {
      hcall: (opcode, args, real) =>
        opcode === H_PUT_TCE_INDIRECT && args[0] === BigInt(W1) && ++indirects === 3
          ? { ret: H_PARAMETER }
          : real(),
    });
    rig.lines.length = 0;
    const { guest, states } = bootGuest(rig, {}, port);
    expect(indirects).toBe(3);
    const onW1 = rig.lines.filter(
      (l) => l.includes('liobn=0x80000001') && !l.startsWith('spapr_iommu_new_table'),
    );
    expect(onW1.filter((l) => l.startsWith('spapr_iommu_pci_indirect'))).toHaveLength(2);
    // The whole 2^32 window in 64K pages: 65536 entries, 128 stuffs of 512.
    const stuffs = onW1.filter((l) => l.startsWith('spapr_iommu_pci_stuff'));
    expect(stuffs).toHaveLength(128);
    expect(stuffs[0]).toBe(
      'spapr_iommu_pci_stuff liobn=0x80000001 ioba=0x800000002000000 tcevalue=0x0 npages=512 ret=0',
    );
    expect(onW1.at(-1)).toBe('spapr_iommu_ddw_remove liobn=0x80000001');
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('failed');
    expect(decision!.rtas.map((r) => r.call)).toEqual([
      'ibm,query-pe-dma-windows',
      'ibm,create-pe-dma-window',
      'ibm,remove-pe-dma-window',
    ]);
    expect(count(rig.lines, 'spapr_iommu_ddw_reset')).toBe(0);
    expect(rig.phb.activeWindows()).toBe(1);
    expect(guest.getProp(rig.phb.nodePath, 'linux,direct64-ddr-window-info')).toBeUndefined();
    expect(states[0]!.mode).toBe('default');
  });

  it('populate failing (4.x): the window leaks, neither cleared nor removed', async () => {
    const rig = await machine('-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e');
    let indirects = 0;
    const port = hookedPort(rig.m.guest, {
      hcall: (opcode, args, real) =>
        opcode === H_PUT_TCE_INDIRECT && args[0] === BigInt(W1) && ++indirects === 3
          ? { ret: H_PARAMETER }
          : real(),
    });
    const { guest, states } = bootGuest(rig, { generation: 'linux-4.x' }, port);
    expect(guest.decisions()[0]!.rtas.map((r) => r.call)).toEqual([
      'ibm,query-pe-dma-windows',
      'ibm,create-pe-dma-window',
    ]);
    expect(rig.lines.some((l) => l.startsWith('spapr_iommu_pci_stuff liobn=0x80000001'))).toBe(false);
    expect(rig.phb.activeWindows()).toBe(2);
    expect(guest.decisions()[0]!.reasons).toContain(
      'populating the window failed with -4; the window is left in place (not removed)',
    );
    expect(states[0]!.mode).toBe('default');
  });

  it('H_NOT_ENOUGH_RESOURCES fails a mapping and undoes what it had mapped', async () => {
    const rig = await machine('-M pseries -m 2G -global spapr-pci-host-bridge.ddw=off -device e1000e');
    let fail = false;
    const port = hookedPort(rig.m.guest, {
      hcall: (opcode, _args, real) => {
        if (opcode !== H_PUT_TCE_INDIRECT) return real();
        if (fail) return { ret: H_NOT_ENOUGH_RESOURCES };
        fail = true;
        return real();
      },
    });
    const { guest } = bootGuest(rig, {}, port);
    const fn = guest.functions[0]!;
    rig.lines.length = 0;
    expect(guest.dmaMap(fn, 0x100000n, 600 * 4096, 'to-device')).toBeUndefined();
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x10000 tcelist=0x2070000 iobaN=0x1ff tceN=0x2ff001 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x210000 tcevalue=0x0 npages=512 ret=0',
    ]);
    // The bus pages went back to the allocator.
    fail = false;
    expect(guest.dmaMap(fn, 0x100000n, 0x10000, 'to-device')).toBe(0x10000n);
  });
});
