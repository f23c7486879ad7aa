import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_LINUX_GENERATION, GUEST_CHOICES, LINUX_GENERATIONS, LinuxGuest } from '../src/index.js';
import { BUID_HI, BUID_LO, bootGuest, count, DDW_BASE, machine, normalize, W0, W1 } from './helpers.js';

const fixtures = fileURLToPath(new URL('./fixtures/qemu-10.0/', import.meta.url));

/** The spapr_iommu_* lines of a real QEMU 10.0 trace with a Linux 6.12 guest (timestamps dropped). */
function trace10(name: string): string[] {
  return readFileSync(`${fixtures}${name}.trace`, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('spapr_iommu_'));
}

/**
 * The guest's DDW dmesg lines (RTAS calls and enable_ddw's lsa_required line) of a sample's boot,
 * in order; the console repeats some of them later (the init script greps dmesg), which stops
 * at the first timestamp that goes back.
 */
function dmesg10(name: string): string[] {
  const out: string[] = [];
  let last = -1;
  for (const line of readFileSync(`${fixtures}${name}.console`, 'utf8').split('\n')) {
    const m = /^\[\s*([\d.]+)\]\s+(.*)$/.exec(line);
    if (!m) continue;
    const at = Number(m[1]);
    if (at < last) break;
    last = at;
    out.push(m[2]!);
  }
  return out;
}

const ddwLines = (log: readonly string[]) =>
  log.filter((l) => /ibm,(query|create|remove|reset)-pe-dma-window|lsa_required/.test(l));

const V1_ARGS = '-M pseries -m 2G -device e1000e -device e1000e';
const N5_ARGS =
  '-M pseries -m 2G,maxmem=6G,slots=2 -device spapr-pci-host-bridge,index=1,id=phb1 ' +
  '-device e1000e,bus=pci.0 -device e1000e,bus=phb1.0';
const HP_ARGS = '-M pseries -m 2G,maxmem=6G,slots=2 -device e1000e';
const SIX_12 = { generation: 'linux-6.12' } as const;

describe('linux-6.12: the generation', () => {
  it('is listed first and is the default', () => {
    expect(LINUX_GENERATIONS[0]).toBe('linux-6.12');
    expect(GUEST_CHOICES).toContain('linux-6.12');
    expect(DEFAULT_LINUX_GENERATION).toBe('linux-6.12');
  });

  it('uses 4K pages unless told otherwise (Debian powerpc64le 6.12)', async () => {
    const rig = await machine(V1_ARGS);
    expect(new LinuxGuest(rig.m.guest, SIX_12).pageSize).toBe(0x1000n);
    expect(new LinuxGuest(rig.m.guest, { ...SIX_12, pageSize: 0x10000n }).pageSize).toBe(0x10000n);
    expect(new LinuxGuest(rig.m.guest).pageSize).toBe(0x10000n);
  });
});

describe('linux-6.12 on the public QEMU 10.0 samples', () => {
  it('v1-basic: no maxmem, so lrdr-capacity is 0, window shift 0, -3, default window; line for line', async () => {
    const rig = await machine(V1_ARGS);
    const { guest, states } = bootGuest(rig, SIX_12);
    expect(rig.lines.map(normalize)).toEqual(trace10('v1-basic').map(normalize));
    // The refused create never reaches QEMU's trace point: no ddw_create, no new table.
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(2);
    expect(count(rig.lines, 'spapr_iommu_ddw_create')).toBe(0);
    expect(count(rig.lines, 'spapr_iommu_new_table')).toBe(1);
    expect(states.map((s) => [s.mode, s.window.liobn, s.dmaOffset])).toEqual([
      ['default', W0, 0n],
      ['default', W0, 0n],
    ]);
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('failed');
    // Return cells are raw 32-bit words: the -3 status reads 0xfffffffd.
    expect(decision!.rtas).toEqual([
      { call: 'ibm,query-pe-dma-windows', args: [0, BUID_HI, BUID_LO], rets: [0, 1, 0x20, 0, 0x107, 0] },
      { call: 'ibm,query-pe-dma-windows', args: [0, BUID_HI, BUID_LO], rets: [0, 1, 0x20, 0, 0x107, 0] },
      { call: 'ibm,create-pe-dma-window', args: [0, BUID_HI, BUID_LO, 24, 0], rets: [0xfffffffd, 0, 0, 0] },
    ]);
    expect(guest.hypercallCounts()).toEqual({ H_PUT_TCE: 0, H_PUT_TCE_INDIRECT: 0, H_STUFF_TCE: 512 });
    // No window, no property; the default window stays.
    expect(guest.deviceTreeEdits()).toEqual([]);
  });

  it("v1-basic: the RTAS and lsa_required lines are the real guest's dmesg, in order", async () => {
    const { guest } = bootGuest(await machine(V1_ARGS), SIX_12);
    const expected = ddwLines(dmesg10('v1-basic'));
    expect(expected).toHaveLength(7);
    expect(ddwLines(guest.log)).toEqual(expected);
    expect(expected).toContain(
      'e1000e 0000:00:00.0: ibm,create-pe-dma-window(2027) 0 8000000 20000000 18 0 returned -3 (liobn = 0x0 starting addr = 0 0)',
    );
  });

  it('n5-2phb-hp: PHB0 query, PHB1 query, PHB0 query, create PHB0, PHB1 query, create PHB1; line for line', async () => {
    const rig = await machine(N5_ARGS);
    const { guest, states } = bootGuest(rig, SIX_12);
    expect(rig.lines.map(normalize)).toEqual(trace10('n5-2phb-hp').map(normalize));
    const ddw = rig.lines
      .filter((l) => /^spapr_iommu_ddw_/.test(l))
      .map((l) => `${l.split(' ')[0]} ${/buid=(0x[0-9a-f]+)/.exec(l)![1]}`);
    expect(ddw).toEqual([
      'spapr_iommu_ddw_query 0x800000020000000',
      'spapr_iommu_ddw_query 0x800000020000001',
      'spapr_iommu_ddw_query 0x800000020000000',
      'spapr_iommu_ddw_create 0x800000020000000',
      'spapr_iommu_ddw_query 0x800000020000001',
      'spapr_iommu_ddw_create 0x800000020000001',
    ]);
    expect(states.map((s) => [s.mode, s.window])).toEqual([
      ['direct', { liobn: W1, busOffset: DDW_BASE, pageShift: 24, windowShift: 33 }],
      ['direct', { liobn: 0x80000101, busOffset: DDW_BASE, pageShift: 24, windowShift: 33 }],
    ]);
    expect(ddwLines(guest.log)).toEqual(ddwLines(dmesg10('n5-2phb-hp')));
  });
});

describe('linux-6.12 window sizing: ibm,lrdr-capacity alone', () => {
  it('with maxmem the window is order_base_2 of the hotplug maximum; only present RAM is mapped', async () => {
    const rig = await machine(HP_ARGS);
    const lrdr = rig.m.guest.deviceTree.getProp('/rtas', 'ibm,lrdr-capacity')!;
    const max = new DataView(lrdr.buffer, lrdr.byteOffset).getBigUint64(0);
    expect(max).toBe(0x180000000n);
    const { guest, states } = bootGuest(rig, SIX_12);
    // order_base_2(6 GiB) = 33; 6.1 takes the same here (max(6G, 2G)).
    expect(guest.decisions()[0]!.rtas.at(-1)!.args).toEqual([0, BUID_HI, BUID_LO, 24, 33]);
    expect(states[0]).toMatchObject({ mode: 'direct', dmaOffset: DDW_BASE });
    // walk_system_ram_range up to the hotplug maximum: the 2 GiB present, 128 TCEs of 16M.
    expect(rig.lines.filter((l) => l.startsWith('spapr_iommu_pci_indirect'))).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000000000000 tcelist=0x2070000 iobaN=0x7f tceN=0x7f000003 ret=0',
    ]);
    const prop = guest.getProp('/pci@800000020000000', 'linux,direct64-ddr-window-info')!;
    expect(new DataView(prop.buffer, prop.byteOffset).getUint32(20)).toBe(33);
  });

  it('a hotplug maximum that is a power of two gives exactly that shift', async () => {
    const rig = await machine('-M pseries -m 1G,maxmem=4G,slots=1 -device e1000e');
    const lrdr = rig.m.guest.deviceTree.getProp('/rtas', 'ibm,lrdr-capacity')!;
    const max = new DataView(lrdr.buffer, lrdr.byteOffset).getBigUint64(0);
    const { guest } = bootGuest(rig, SIX_12);
    const shift = guest.decisions()[0]!.rtas.at(-1)!.args[4]!;
    expect(2n ** BigInt(shift)).toBeGreaterThanOrEqual(max);
    expect(2n ** BigInt(shift - 1)).toBeLessThan(max);
  });

  it('without maxmem 6.1 still covers RAM (shift 31) where 6.12 asks for 0', async () => {
    const old = bootGuest(await machine(V1_ARGS));
    const now = bootGuest(await machine(V1_ARGS), SIX_12);
    expect(old.guest.decisions()[0]!.rtas.at(-1)!.args.at(-1)).toBe(31);
    expect(now.guest.decisions()[0]!.rtas.at(-1)!.args.at(-1)).toBe(0);
  });
});

describe('linux-6.12 queries twice per PE', () => {
  it('once at PCI device setup (before any driver, first function only), once when the driver sets its mask', async () => {
    const rig = await machine(HP_ARGS);
    const guest = new LinuxGuest(rig.m.guest, SIX_12);
    guest.boot();
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(1);
    expect(ddwLines(guest.log)).toEqual([
      'pci 0000:00:00.0: ibm,query-pe-dma-windows(2026) 0 8000000 20000000 returned 0, lb=2000000000 ps=107 wn=1',
    ]);
    guest.probeAll();
    const queries = rig.lines.filter((l) => l.startsWith('spapr_iommu_ddw_query'));
    expect(queries).toHaveLength(2);
    expect(queries[0]).toBe(queries[1]);
    expect(guest.decisions()[0]!.rtas.map((r) => r.call)).toEqual([
      'ibm,query-pe-dma-windows',
      'ibm,query-pe-dma-windows',
      'ibm,create-pe-dma-window',
    ]);
  });

  it('queries at setup even with disable_ddw, and never again', async () => {
    const rig = await machine(HP_ARGS);
    const { states } = bootGuest(rig, { ...SIX_12, disableDdw: true });
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(1);
    expect(count(rig.lines, 'spapr_iommu_ddw_create')).toBe(0);
    expect(states[0]!.mode).toBe('default');
  });

  it('6.1 queries once, at the driver', async () => {
    const rig = await machine(HP_ARGS);
    bootGuest(rig);
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(1);
  });
});

describe('linux-6.12 masks between 33 and 63 bits', () => {
  it('ask for limited-address mode, which QEMU does not advertise: query, -EOVERFLOW, the PE is failed', async () => {
    const rig = await machine(HP_ARGS);
    const { guest, states } = bootGuest(rig, { ...SIX_12, dmaMaskBits: () => 48 });
    expect(states[0]!.mode).toBe('default');
    expect(guest.decisions()[0]!.outcome).toBe('failed');
    expect(guest.decisions()[0]!.rtas.map((r) => r.call)).toEqual([
      'ibm,query-pe-dma-windows',
      'ibm,query-pe-dma-windows',
    ]);
    expect(guest.log).toContain('e1000e 0000:00:00.0: Limited Address Space for DDW not Supported, err: -75');
    expect(guest.log).toContain('e1000e 0000:00:00.0: lsa_required: 1, lsa_enabled: 0, direct mapping: 0');
    expect(count(rig.lines, 'spapr_iommu_ddw_create')).toBe(0);
    // A later 64-bit function of the same PE gets nothing: the PE is on the failed list.
    const again = guest.setDmaMask(guest.functions[0]!, 64);
    expect(again.mode).toBe('default');
  });

  it('6.1 never tries a DDW for them', async () => {
    const rig = await machine(HP_ARGS);
    const { guest } = bootGuest(rig, { dmaMaskBits: () => 48 });
    expect(guest.decisions()[0]!.rtas).toEqual([]);
    expect(guest.decisions()[0]!.outcome).toBe('not-attempted');
  });
});

describe('kernel page size and default-window mappings', () => {
  /** A 6.12 guest left on the default window (no maxmem), mapping one kernel page. */
  async function mapOnePage(pageSize: bigint, gpa: bigint, length: number) {
    const rig = await machine('-M pseries -m 2G -device e1000e');
    const { guest } = bootGuest(rig, { ...SIX_12, pageSize });
    rig.lines.length = 0;
    const bus = guest.dmaMap(guest.functions[0]!, gpa, length, 'bidirectional')!;
    return { bus, lines: rig.lines.filter((l) => !l.startsWith('spapr_iommu_pci_stuff')), guest };
  }

  it('4K pages: a page is one TCE, one H_PUT_TCE', async () => {
    const { bus, lines, guest } = await mapOnePage(0x1000n, 0x1230000n, 0x1000);
    expect(lines).toEqual([
      `spapr_iommu_pci_put liobn=0x80000000 ioba=0x${bus.toString(16)} tce=0x1230003 ret=0`,
    ]);
    expect(guest.hypercallCounts().H_PUT_TCE).toBe(1);
  });

  it('64K pages: a page is a run of 16 TCEs in one H_PUT_TCE_INDIRECT, at a 64K-aligned bus address', async () => {
    const { bus, lines } = await mapOnePage(0x10000n, 0x1230000n, 0x10000);
    expect(bus % 0x10000n).toBe(0n);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x${bus.toString(16)} tcelist=0x[0-9a-f]+ iobaN=0xf tceN=0x123f003 ret=0$`,
      ),
    );
  });

  it('64K of buffer on a 4K kernel is also 16 TCEs, but with no 64K alignment of the bus address', async () => {
    const { bus, lines } = await mapOnePage(0x1000n, 0x1231000n, 0x10000);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('iobaN=0xf tceN=0x1240003');
    expect(bus % 0x10000n).not.toBe(0n);
  });

  it('a sub-page buffer on a 64K kernel is one H_PUT_TCE', async () => {
    const { lines } = await mapOnePage(0x10000n, 0x1230000n, 0x800);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^spapr_iommu_pci_put /);
  });

  it('the direct window is populated the same for 4K and 64K kernels (RAM is 16M-aligned)', async () => {
    const a = await machine(HP_ARGS);
    const b = await machine(HP_ARGS);
    bootGuest(a, SIX_12);
    bootGuest(b, { ...SIX_12, pageSize: 0x10000n });
    expect(a.lines.map(normalize)).toEqual(b.lines.map(normalize));
  });
});

describe('memory DLPAR add (memoryAdded)', () => {
  const LMB = 0x10000000n;

  it('6.12 maps each added LMB into the direct window: one H_PUT_TCE_INDIRECT of 16 x 16M, no RTAS', async () => {
    const rig = await machine(HP_ARGS);
    const { guest } = bootGuest(rig, SIX_12);
    rig.lines.length = 0;
    const rtasBefore = guest.decisions()[0]!.rtas.length;
    expect(guest.memoryAdded(0x80000000n, 4n * LMB)).toBe(true);
    expect(rig.lines).toEqual(
      [0, 1, 2, 3].map((i) => {
        const base = 0x80000000n + BigInt(i) * LMB;
        return (
          `spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x${(DDW_BASE + base).toString(16)} tcelist=0x2070000 ` +
          `iobaN=0xf tceN=0x${(base + 15n * 0x1000000n + 3n).toString(16)} ret=0`
        );
      }),
    );
    expect(guest.decisions()[0]!.rtas).toHaveLength(rtasBefore);
    expect(guest.hypercallCounts().H_PUT_TCE_INDIRECT).toBe(1 + 4);
  });

  it('6.12 skips memory at or above the hotplug maximum, and windows that are not direct', async () => {
    const rig = await machine(HP_ARGS);
    const { guest } = bootGuest(rig, SIX_12);
    rig.lines.length = 0;
    expect(guest.memoryAdded(0x180000000n, LMB)).toBe(true);
    expect(rig.lines).toEqual([]);
    // No window at all (v1: the create failed): nothing to map.
    const v1 = await machine(V1_ARGS);
    const other = bootGuest(v1, SIX_12);
    v1.lines.length = 0;
    expect(other.guest.memoryAdded(0x80000000n, LMB)).toBe(true);
    expect(v1.lines).toEqual([]);
  });

  it('with two PHBs, each block goes to the newest window first', async () => {
    const rig = await machine(N5_ARGS);
    const { guest } = bootGuest(rig, SIX_12);
    rig.lines.length = 0;
    guest.memoryAdded(0x80000000n, LMB);
    expect(rig.lines.map((l) => /liobn=(0x[0-9a-f]+)/.exec(l)![1])).toEqual(['0x80000101', '0x80000001']);
  });

  it('memoryRemoved clears the blocks with H_STUFF_TCE of 16', async () => {
    const rig = await machine(HP_ARGS);
    const { guest } = bootGuest(rig, SIX_12);
    guest.memoryAdded(0x80000000n, 2n * LMB);
    rig.lines.length = 0;
    expect(guest.memoryRemoved(0x80000000n, 2n * LMB)).toBe(true);
    expect(rig.lines.map((l) => l.replace(/ ioba=0x[0-9a-f]+/, ''))).toEqual([
      'spapr_iommu_pci_stuff liobn=0x80000001 tcevalue=0x0 npages=16 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000001 tcevalue=0x0 npages=16 ret=0',
    ]);
  });

  it('6.1 maps added memory the same way into its window', async () => {
    const rig = await machine(HP_ARGS);
    const { guest } = bootGuest(rig);
    rig.lines.length = 0;
    guest.memoryAdded(0x80000000n, LMB);
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000080000000 tcelist=0x2070000 iobaN=0xf tceN=0x8f000003 ret=0',
    ]);
  });
});
