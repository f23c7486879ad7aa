import { describe, expect, it } from 'vitest';
import {
  BUID_HI,
  BUID_LO,
  bootGuest,
  count,
  DDW_BASE,
  ddwDmesg,
  fixtureDdwDmesg,
  fixtureTrace,
  machine,
  normalize,
  W0,
  W1,
} from './helpers.js';

const V1_ARGS = '-M pseries -m 2G -device e1000e -device e1000e';
const V2_ARGS = '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e';

describe('linux-6.1 on the public QEMU 7.2 samples', () => {
  it('v1-basic: QEMU traces the same lines, in order, as for the real guest', async () => {
    const rig = await machine(V1_ARGS);
    const { guest, states } = bootGuest(rig);
    const expected = fixtureTrace('v1-basic');
    expect(rig.lines.map(normalize)).toEqual(expected.map(normalize));
    // The shape, spelled out: 512 stuffs of 512 over the 1 GiB default window, the query
    // (nret 6, mask 0x107), the create (16M pages, 2^31) and one indirect of 128.
    expect(count(rig.lines, 'spapr_iommu_pci_stuff')).toBe(512);
    expect(rig.lines.filter((l) => l.includes('npages=512 ret=0'))).toHaveLength(512);
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(1);
    expect(count(rig.lines, 'spapr_iommu_ddw_create')).toBe(1);
    expect(rig.lines.filter((l) => l.startsWith('spapr_iommu_pci_indirect'))).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000000000000 tcelist=0x2070000 iobaN=0x7f tceN=0x7f000003 ret=0',
    ]);
    // Both NICs share the PE and its one negotiation.
    expect(guest.functions.map((f) => f.driver)).toEqual(['e1000e', 'e1000e']);
    expect(states.map((s) => [s.mode, s.window.liobn, s.dmaOffset])).toEqual([
      ['direct', W1, DDW_BASE],
      ['direct', W1, DDW_BASE],
    ]);
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('direct');
    expect(decision!.rtas).toEqual([
      { call: 'ibm,query-pe-dma-windows', args: [0, BUID_HI, BUID_LO], rets: [0, 1, 0x20, 0, 0x107, 0] },
      {
        call: 'ibm,create-pe-dma-window',
        args: [0, BUID_HI, BUID_LO, 24, 31],
        rets: [0, W1, 0x08000000, 0],
      },
    ]);
  });

  it("v1-basic: the query and create lines are the real guest's dmesg lines", async () => {
    const rig = await machine(V1_ARGS);
    const { guest } = bootGuest(rig);
    expect(fixtureDdwDmesg('v1-basic')).toHaveLength(2);
    expect(ddwDmesg(guest.log)).toEqual(fixtureDdwDmesg('v1-basic'));
  });

  it('v2-64k: 64K pages, a 2^32 window, 128 indirects of 512, line for line', async () => {
    const rig = await machine(V2_ARGS);
    const start = performance.now();
    const { guest, states } = bootGuest(rig);
    const elapsed = performance.now() - start;
    expect(rig.lines.map(normalize)).toEqual(fixtureTrace('v2-64k').map(normalize));
    const indirect = rig.lines.filter((l) => l.startsWith('spapr_iommu_pci_indirect'));
    expect(indirect).toHaveLength(128);
    expect(indirect.every((l) => / iobaN=0x1ff tceN=0x[0-9a-f]+0003 ret=0$/.test(l))).toBe(true);
    expect(indirect.at(-1)).toContain('ioba=0x8000000fe000000 tcelist=0x2070000 iobaN=0x1ff tceN=0xffff0003');
    expect(states[0]).toMatchObject({
      mode: 'direct',
      window: { liobn: W1, pageShift: 16, windowShift: 32 },
    });
    expect(ddwDmesg(guest.log)).toEqual(fixtureDdwDmesg('v2-64k'));
    expect(guest.hypercallCounts()).toEqual({ H_PUT_TCE: 0, H_PUT_TCE_INDIRECT: 128, H_STUFF_TCE: 512 });
    // A 4 GiB guest's whole boot and population is cheap.
    expect(elapsed).toBeLessThan(1000);
  });

  it('adds the direct64 window-info property to its own view of the PE node', async () => {
    const rig = await machine(V1_ARGS);
    const { guest } = bootGuest(rig);
    const prop = guest.getProp('/pci@800000020000000', 'linux,direct64-ddr-window-info')!;
    const view = new DataView(prop.buffer, prop.byteOffset, prop.byteLength);
    expect(prop).toHaveLength(24);
    expect([
      view.getUint32(0),
      view.getUint32(4),
      view.getBigUint64(8),
      view.getUint32(16),
      view.getUint32(20),
    ]).toEqual([W1, 0, DDW_BASE, 24, 31]);
    // The machine's tree is the hypervisor's: the guest's edits are not in it.
    expect(
      rig.m.guest.deviceTree.getProp('/pci@800000020000000', 'linux,direct64-ddr-window-info'),
    ).toBeUndefined();
    expect(guest.getProp('/pci@800000020000000', 'ibm,dma-window')).toBeDefined();
  });
});

describe('linux-4.x on the same machines', () => {
  it('v1: one H_STUFF_TCE for the whole default window, query with nret 5, same create and populate', async () => {
    const rig = await machine(V1_ARGS);
    const { guest, states } = bootGuest(rig, { generation: 'linux-4.x' });
    const expected = fixtureTrace('v1-basic').filter((l) => !l.startsWith('spapr_iommu_pci_stuff'));
    const stuffs = rig.lines.filter((l) => l.startsWith('spapr_iommu_pci_stuff'));
    expect(stuffs).toEqual([
      `spapr_iommu_pci_stuff liobn=0x${W0.toString(16)} ioba=0x40000000 tcevalue=0x0 npages=262144 ret=0`,
    ]);
    expect(rig.lines.filter((l) => !stuffs.includes(l)).map(normalize)).toEqual(expected.map(normalize));
    const [decision] = guest.decisions();
    // QEMU 7.2 answers nret 5 with the 32-bit block count 0x80000000.
    expect(decision!.rtas[0]).toEqual({
      call: 'ibm,query-pe-dma-windows',
      args: [0, BUID_HI, BUID_LO],
      rets: [0, 1, 0x80000000, 0x107, 0],
    });
    expect(decision!.rtas[1]!.args).toEqual([0, BUID_HI, BUID_LO, 24, 31]);
    expect(states.map((s) => s.mode)).toEqual(['direct', 'direct']);
    expect(guest.hypercallCounts()).toEqual({ H_PUT_TCE: 0, H_PUT_TCE_INDIRECT: 1, H_STUFF_TCE: 1 });
  });

  it('v2: 64K pages from mask 0x3, 128 indirects of 512', async () => {
    const rig = await machine(V2_ARGS);
    const { guest, states } = bootGuest(rig, { generation: 'linux-4.x' });
    const expected = fixtureTrace('v2-64k').filter((l) => !l.startsWith('spapr_iommu_pci_stuff'));
    const rest = rig.lines.filter((l) => !l.startsWith('spapr_iommu_pci_stuff'));
    expect(rest.map(normalize)).toEqual(expected.map(normalize));
    expect(guest.decisions()[0]!.rtas[0]!.rets).toHaveLength(5);
    expect(states[0]!.window).toEqual({ liobn: W1, busOffset: DDW_BASE, pageShift: 16, windowShift: 32 });
  });

  it('does not know the 2M bit: with 4K|2M offered, 6.1 takes 2M pages and 4.x 4K pages', async () => {
    const args = '-M pseries -m 2G -global spapr-pci-host-bridge.pgsz=0x201000 -device e1000e';
    const new61 = bootGuest(await machine(args));
    const old4x = bootGuest(await machine(args), { generation: 'linux-4.x' });
    expect(new61.guest.decisions()[0]!.rtas[0]!.rets[4]).toBe(0x101);
    expect(new61.states[0]!.window.pageShift).toBe(21);
    expect(old4x.states[0]!.window.pageShift).toBe(12);
    expect(old4x.guest.decisions()[0]!.rtas[1]!.args).toEqual([0, BUID_HI, BUID_LO, 12, 31]);
  });

  it('prefers 16M, then 64K, then 4K, whatever else the mask holds', async () => {
    // 64K|16M|32M: 6.1 takes the largest, 32M; 4.x knows no 32M bit and takes 16M.
    const args = '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x3010000 -device e1000e';
    expect(bootGuest(await machine(args)).states[0]!.window.pageShift).toBe(25);
    expect(bootGuest(await machine(args), { generation: 'linux-4.x' }).states[0]!.window.pageShift).toBe(24);
  });

  it('checks the largest block against RAM: pseries-2.7 truncating it to 32 bits fails the DDW', async () => {
    // QEMU 2.7 reports (uint32)(max RAM address >> 12): 16 TiB + 1 GiB gives 0x40000 TCEs, less
    // than the 2^28 64K TCEs RAM needs. 4.x gives up before creating anything.
    const rig = await machine('-M pseries-2.7 -m 1G,maxmem=16385G,slots=1 -device e1000e');
    const { guest, states } = bootGuest(rig, { generation: 'linux-4.x' });
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('failed');
    expect(decision!.rtas.map((r) => r.call)).toEqual(['ibm,query-pe-dma-windows']);
    expect(decision!.reasons.at(-1)).toMatch(/largest block 0x40000 is smaller than the 0x10004000 TCEs/);
    expect(states[0]!.mode).toBe('default');
    expect(count(rig.lines, 'spapr_iommu_ddw_create')).toBe(0);
  });
});

describe('several PHBs', () => {
  it('numbers PHBs in BUID order and negotiates once per PE, each with its own BUID', async () => {
    const rig = await machine(
      '-M pseries -m 2G -device spapr-pci-host-bridge,index=1,id=fast -device e1000e,bus=fast.0 -device e1000e',
    );
    const { guest, states } = bootGuest(rig);
    expect(guest.functions.map((f) => [f.peNode, f.buid])).toEqual([
      ['/pci@800000020000000', 0x800000020000000n],
      ['/pci@800000020000001', 0x800000020000001n],
    ]);
    expect(guest.decisions().map((d) => [d.peNode, d.outcome, d.rtas[0]!.args])).toEqual([
      ['/pci@800000020000000', 'direct', [0, BUID_HI, BUID_LO]],
      ['/pci@800000020000001', 'direct', [0, BUID_HI, BUID_LO + 1]],
    ]);
    expect(states.map((s) => s.window.liobn)).toEqual([W1, 0x80000101]);
    expect(guest.log.filter((l) => l.includes('ibm,create')).map((l) => l.split(':')[0])).toEqual([
      'e1000e 0000',
      'e1000e 0001',
    ]);
  });
});
