import {
  H_PARAMETER,
  H_PUT_TCE_INDIRECT,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
  RTAS_IBM_REMOVE_PE_DMA_WINDOW,
} from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import { LinuxGuest, type LinuxGuestOptions, type PeDecision } from '../src/index.js';
import { BUID_HI, BUID_LO, bootGuest, hookedPort, machine, W1 } from './helpers.js';

const SIX_12 = { generation: 'linux-6.12' } as const;
const FOUR_X = { generation: 'linux-4.x' } as const;
const DEFAULT_WINDOW = 'the devices use the 1 GiB default window';

/** The first PE's decision on a machine from QEMU options. */
async function decide(qemuArgs: string, options: LinuxGuestOptions = {}): Promise<PeDecision> {
  const rig = await machine(qemuArgs);
  return bootGuest(rig, options).guest.decisions()[0]!;
}

/** A summary is one line, and says the fallback when there is no DDW. */
function oneLine(d: PeDecision): string {
  expect(d.summary).not.toContain('\n');
  if (d.outcome === 'failed' || d.outcome === 'not-attempted') expect(d.summary).toMatch(/^no DDW/);
  return d.summary;
}

describe('summary: no DDW, and why', () => {
  it('6.12 without maxmem: lrdr-capacity 0, create -3, the fix is maxmem', async () => {
    const d = await decide('-M pseries -m 2G -device e1000e', SIX_12);
    expect(d.outcome).toBe('failed');
    expect(oneLine(d)).toBe(
      'no DDW: Linux 6.12 sizes the window from ibm,lrdr-capacity, which is 0 without maxmem; ' +
        `create returned -3 (parameter error); ${DEFAULT_WINDOW}. ` +
        'Give maxmem (-m 2G,maxmem=4G,slots=2) for a direct window',
    );
    // The reasons stay, after the summary.
    expect(d.reasons.at(-1)).toBe('create returned -3');
  });

  it('6.12 on pseries-2.7 without maxmem: the same, with the 64K pages of a 5-output query', async () => {
    const d = await decide('-M pseries-2.7 -m 4G -device e1000e', SIX_12);
    expect(d.rtas.at(-1)!.args.slice(3)).toEqual([16, 0]);
    expect(oneLine(d)).toContain('ibm,lrdr-capacity, which is 0 without maxmem; create returned -3');
    expect(d.summary).toContain('Give maxmem (-m 4G,maxmem=8G,slots=2)');
  });

  it('ddw=off: no ibm,ddw-applicable, turn DDW on', async () => {
    for (const options of [{}, SIX_12, FOUR_X]) {
      const d = await decide(
        '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.ddw=off',
        options,
      );
      expect(d.outcome).toBe('failed');
      expect(oneLine(d)).toBe(
        'no DDW: the PHB offers none (no ibm,ddw-applicable on /pci@800000020000000: spapr-pci-host-bridge ' +
          `ddw=off, or a machine type older than pseries-2.7); ${DEFAULT_WINDOW}. Turn DDW on ` +
          '(-global spapr-pci-host-bridge.ddw=on, pseries-2.7 or newer) for a 64-bit window',
      );
    }
  });

  it('page size not offered: 2M only for 4.x (it knows 16M, 64K, 4K)', async () => {
    const d = await decide(
      '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.pgsz=0x200000',
      FOUR_X,
    );
    expect(d.outcome).toBe('failed');
    expect(oneLine(d)).toBe(
      'no DDW: the query offers only 2M pages (mask 0x100), none of which Linux 4.x uses (it picks from ' +
        `16M, 64K or 4K); ${DEFAULT_WINDOW}. Offer 4K, 64K or 16M pages ` +
        '(-global spapr-pci-host-bridge.pgsz=0x1011000) for a DDW',
    );
  });

  it('page size not offered: an 8K pgsz RTAS cannot name (6.1), and 2M on QEMU 2.7 (no 2M bit)', async () => {
    const d = await decide('-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.pgsz=0x2000');
    expect(oneLine(d)).toContain(
      "the query offers no page size (mask 0x0: RTAS can name none of the PHB's pgsz sizes)",
    );
    expect(d.summary).toContain('pgsz=0x1011000');
    const old = await decide(
      '-M pseries-2.7 -m 2G -device e1000e -global spapr-pci-host-bridge.pgsz=0x200000',
    );
    expect(oneLine(old)).toContain('a 5-output query, as QEMU 2.7 answers, cannot name 2M');
  });

  it('no free window, 4.x: x-ddw-windows=1 leaves the default window only, and 4.x never removes it', async () => {
    const d = await decide(
      '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.x-ddw-windows=1',
      FOUR_X,
    );
    expect(d.rtas.map((r) => r.call)).toEqual(['ibm,query-pe-dma-windows']);
    expect(oneLine(d)).toBe(
      'no DDW: the query says 0 windows available and Linux 4.x never removes the default window to make ' +
        `room; ${DEFAULT_WINDOW}. Give the PHB a second DMA window (drop x-ddw-windows=1: QEMU PHBs have 2), ` +
        'or use Linux 6.1 or newer, which removes the default window',
    );
  });

  it('no free window, 6.1: the removal fails, the query still says 0, the PE is reset', async () => {
    const rig = await machine(
      '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.x-ddw-windows=1',
    );
    const port = hookedPort(rig.m.guest, {
      rtas: (token, _args, nret, real) =>
        token === RTAS_IBM_REMOVE_PE_DMA_WINDOW
          ? { status: -1, rets: [0xffffffff, ...new Array<number>(nret - 1).fill(0)], hcallRet: 0n }
          : real(),
    });
    const d = bootGuest(rig, {}, port).guest.decisions()[0]!;
    expect(d.outcome).toBe('failed');
    expect(oneLine(d)).toBe(
      'no DDW: the query said 0 windows available; Linux 6.1 removed the 1 GiB default window (remove ' +
        "returned -1) but the query still says 0; Linux 6.1 reset the PE's windows (reset returned 0), " +
        `restoring the default window, and ${DEFAULT_WINDOW}. Give the PHB a second DMA window ` +
        '(drop x-ddw-windows=1: QEMU PHBs have 2)',
    );
  });

  it('no free window, 6.1: the default window has live mappings and cannot be removed', async () => {
    const rig = await machine(
      '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.x-ddw-windows=1',
    );
    const guest = new LinuxGuest(rig.m.guest);
    guest.boot();
    const fn = guest.functions[0]!;
    expect(guest.dmaMap(fn, 0x200000n, 0x1000, 'to-device')).toBeDefined();
    guest.setDmaMask(fn, 64);
    const d = guest.decisions()[0]!;
    expect(oneLine(d)).toBe(
      'no DDW: the query says 0 windows available and Linux 6.1 cannot remove the default window: it has ' +
        `live DMA mappings; ${DEFAULT_WINDOW}. Give the PHB a second DMA window (drop x-ddw-windows=1: ` +
        'QEMU PHBs have 2), or set the 64-bit mask before any DMA',
    );
  });

  it('create failing for another reason: 2^32 TCEs of 4K over 16 TiB, -1', async () => {
    const d = await decide(
      '-M pseries -m 1G,maxmem=16T,slots=1 -global spapr-pci-host-bridge.pgsz=0x1000 -device e1000e',
    );
    expect(oneLine(d)).toBe(
      'no DDW: Linux 6.1 asked for a window of 2^44 bytes (16 TiB) in 4K pages; create returned -1 ' +
        `(hardware error); ${DEFAULT_WINDOW}. The window needs 2^32 TCEs, more than QEMU's 32-bit table ` +
        'size: offer larger pages (-global spapr-pci-host-bridge.pgsz=0x1011000) or give less maxmem',
    );
  });

  it('create failing after the 64-bit size overflows (256M pages): -3', async () => {
    const d = await decide('-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11010000 -device e1000e');
    expect(oneLine(d)).toContain(
      "the query's largest block 0x2000000000 of 256M pages overflows Linux 6.1's 64-bit window size, so it " +
        'asked for a window of 2^0 bytes (1 B) in 256M pages; create returned -3',
    );
    expect(d.summary).toContain('Offer pages of 16M or smaller');
  });

  it('4.x: the largest block is too small for RAM and 4.x has no dynamic window', async () => {
    const d = await decide(
      '-M pseries -m 2G,maxmem=16T,slots=2 -device e1000e -global spapr-pci-host-bridge.pgsz=0x1000',
      FOUR_X,
    );
    expect(oneLine(d)).toBe(
      'no DDW: Linux 4.x maps all RAM (up to 16 TiB) directly and needs 0x100000000 TCEs of 4K, but the ' +
        "query's largest block is 0x80000000 (a 5-output query gives it as a 32-bit count); 4.x has no " +
        `dynamic windows, so ${DEFAULT_WINDOW}. Offer larger pages (-global spapr-pci-host-bridge.pgsz=0x1011000), ` +
        'give less maxmem, or use Linux 6.1 or newer (a dynamic window)',
    );
  });

  it('populate failing: 6.1 removes the window, 4.x leaves it', async () => {
    for (const [options, undo] of [
      [{}, 'Linux 6.1 cleared and removed the window'],
      [FOUR_X, 'Linux 4.x leaves that window created and unused'],
    ] as const) {
      const rig = await machine('-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e');
      const port = hookedPort(rig.m.guest, {
        hcall: (opcode, args, real) =>
          opcode === H_PUT_TCE_INDIRECT && args[0] === BigInt(W1) ? { ret: H_PARAMETER } : real(),
      });
      const d = bootGuest(rig, options, port).guest.decisions()[0]!;
      expect(oneLine(d)).toContain(
        'created a direct window (LIOBN 0x80000001, 64K pages) but mapping RAM into it failed with -4 (H_PARAMETER)',
      );
      expect(d.summary).toContain(`${undo}, and ${DEFAULT_WINDOW}`);
    }
  });

  it('a query the hypervisor refuses: its status', async () => {
    const rig = await machine('-M pseries -m 2G -device e1000e');
    const port = hookedPort(rig.m.guest, {
      rtas: (token, _args, nret, real) =>
        token === RTAS_IBM_QUERY_PE_DMA_WINDOW
          ? { status: -3, rets: [0xfffffffd, ...new Array<number>(nret - 1).fill(0)], hcallRet: 0n }
          : real(),
    });
    const d = bootGuest(rig, {}, port).guest.decisions()[0]!;
    expect(oneLine(d)).toBe(
      `no DDW: ibm,query-pe-dma-windows (6 outputs) returned -3 (parameter error); ${DEFAULT_WINDOW}. ` +
        "The hypervisor refused to describe the PE's windows: check its DDW support for this PE",
    );
  });

  it('6.12 with a 48-bit mask: limited-address mode, which QEMU lacks (-EOVERFLOW)', async () => {
    const d = await decide('-M pseries -m 2G,maxmem=4G,slots=2 -device e1000e', {
      ...SIX_12,
      dmaMaskBits: () => 48,
    });
    expect(oneLine(d)).toBe(
      "no DDW: e1000e 0000:00:00.0 set a 48-bit DMA mask, and Linux 6.12 then needs the PHB's " +
        'limited-address mode: ibm,ddw-extensions has no limited-address entry (-75); ' +
        `${DEFAULT_WINDOW}. Only a 64-bit mask gets a DDW from this PHB`,
    );
  });
});

describe('summary: no DDW tried', () => {
  it('32-bit-only drivers: the default window is all they can address', async () => {
    const d = await decide('-M pseries -m 2G -device e1000e -device dma-engine', { dmaMaskBits: () => 32 });
    expect(d.outcome).toBe('not-attempted');
    expect(oneLine(d)).toBe(
      'no DDW tried: e1000e 0000:00:00.0 set a 32-bit DMA mask, ddw-dma 0000:00:01.0 set a 32-bit DMA mask, ' +
        `and Linux 6.1 asks for a DDW only with a 64-bit mask; ${DEFAULT_WINDOW}, which is all a 32-bit ` +
        'device can address (nothing to change)',
    );
    const six12 = await decide('-M pseries -m 2G -device e1000e', { ...SIX_12, dmaMaskBits: () => 32 });
    expect(oneLine(six12)).toContain('Linux 6.12 asks for a DDW only with a mask over 32 bits');
  });

  it('a 48-bit mask on 6.1 and 4.x: only 64 bits ask for a DDW', async () => {
    const d = await decide('-M pseries -m 2G -device e1000e', { ...FOUR_X, dmaMaskBits: () => 48 });
    expect(oneLine(d)).toBe(
      'no DDW tried: e1000e 0000:00:00.0 set a 48-bit DMA mask, and Linux 4.x asks for a DDW only with a ' +
        `64-bit mask; ${DEFAULT_WINDOW}. A driver that sets a 64-bit mask gets a DDW`,
    );
  });

  it('disable_ddw, a PHB without devices, a device without a driver', async () => {
    const disabled = await decide('-M pseries -m 2G -device e1000e', { disableDdw: true });
    expect(oneLine(disabled)).toBe(
      `no DDW tried: the kernel's disable_ddw is set; ${DEFAULT_WINDOW}. Boot without disable_ddw for a DDW`,
    );
    const rig = await machine(
      '-M pseries -m 2G -device spapr-pci-host-bridge,index=1,id=phb1 -device e1000e',
    );
    const [first, empty] = bootGuest(rig).guest.decisions();
    expect(first!.outcome).toBe('direct');
    expect(oneLine(empty!)).toBe('no DDW tried: no PCI device on this PHB');
    const rig2 = await machine('-M pseries -m 2G -device e1000e');
    const noDriver = bootGuest(rig2, { dmaMaskBits: () => undefined }).guest.decisions()[0]!;
    expect(oneLine(noDriver)).toBe(
      'no DDW tried: no driver set a DMA mask; a device needs a driver with a 64-bit mask for a DDW',
    );
  });
});

describe('summary: a DDW', () => {
  it('direct (6.12 with maxmem): the window from ibm,lrdr-capacity', async () => {
    const d = await decide('-M pseries -m 2G,maxmem=4G,slots=2 -device e1000e', SIX_12);
    expect(d.outcome).toBe('direct');
    expect(oneLine(d)).toBe(
      'direct window: Linux 6.12 mapped RAM up to 4 GiB (ibm,lrdr-capacity: maxmem) 1:1 into LIOBN ' +
        '0x80000001 at 0x800000000000000: 2^32 bytes (4 GiB) in 16M pages, the largest of 4K, 64K, 2M, 16M ' +
        'the query offers; device address = guest address + 0x800000000000000',
    );
  });

  it('the default window removal path (x-ddw-windows=1): not a failure, says what happened', async () => {
    const d = await decide(
      '-M pseries -m 2G -device e1000e -device dma-engine -global spapr-pci-host-bridge.x-ddw-windows=1',
      { dmaMaskBits: (fn) => (fn.driver === 'e1000e' ? 64 : 32) },
    );
    expect(d).toMatchObject({ outcome: 'direct', defaultWindowRemoved: true });
    expect(oneLine(d)).toBe(
      'direct window, default window removed: the query said 0 windows available (the PHB has one DMA ' +
        'window, as with x-ddw-windows=1), so Linux 6.1 removed the 1 GiB default window (remove returned 0) ' +
        'and mapped RAM up to 2 GiB into LIOBN 0x80000000 at 0x0: 2^31 bytes (2 GiB) in 16M pages, the ' +
        'largest of 4K, 64K, 2M, 16M the query offers; device address = guest address + 0x0; ddw-dma ' +
        '0000:00:01.0 has no DMA window left (mask under 64 bits)',
    );
    const six12 = await decide(
      '-M pseries -m 2G,maxmem=4G,slots=2 -device e1000e -global spapr-pci-host-bridge.x-ddw-windows=1',
      SIX_12,
    );
    expect(oneLine(six12)).toMatch(
      /^direct window, default window removed: .* Linux 6\.12 removed the 1 GiB/,
    );
  });

  it('pseries-2.7: a 5-output query offering 4K|64K (6.1 and 4.x)', async () => {
    const d = await decide('-M pseries-2.7 -m 2G -device e1000e');
    expect(oneLine(d)).toBe(
      'direct window: Linux 6.1 mapped RAM up to 2 GiB 1:1 into LIOBN 0x80000001 at 0x800000000000000: ' +
        '2^31 bytes (2 GiB) in 64K pages, the largest of 4K, 64K the query offers (a 5-output query: no ' +
        '64-bit largest-block extension, as QEMU 2.7 answers); device address = guest address + 0x800000000000000',
    );
    const old = await decide('-M pseries-2.7 -m 2G -device e1000e', FOUR_X);
    expect(oneLine(old)).toContain('Linux 4.x mapped RAM up to 2 GiB 1:1 into LIOBN 0x80000001');
    expect(old.summary).toContain('in 64K pages, the largest of 4K, 64K the query offers');
  });

  it('dynamic: RAM (17 TiB) larger than the largest block QEMU 2.7 reports in 32 bits', async () => {
    const rig = await machine('-M pseries-2.7 -m 2G,maxmem=17T,slots=2 -device e1000e -device e1000e');
    const { guest } = bootGuest(rig);
    const d = guest.decisions()[0]!;
    expect(d.outcome).toBe('dynamic');
    expect(oneLine(d)).toBe(
      "dynamic window: the query's largest block (0x10000000 x 64K pages = 2^44 bytes) is smaller than RAM " +
        '(up to 17 TiB, 2^45; a 5-output query gives the block as a 32-bit count), so Linux 6.1 uses LIOBN ' +
        '0x80000001 at 0x800000000000000, 2^44 bytes (16 TiB), as an IOMMU table mapped per DMA request, for ' +
        'e1000e 0000:00:00.0 only (the other functions stay on the default window). For a direct window ' +
        'offer larger pages (-global spapr-pci-host-bridge.pgsz=0x1011000) or give less RAM/maxmem',
    );
  }, 60_000);

  it('every summary is written from the record: the RTAS calls it names are the ones made', async () => {
    const d = await decide('-M pseries -m 2G -device e1000e', SIX_12);
    const create = d.rtas.find((r) => r.call === 'ibm,create-pe-dma-window')!;
    expect(create.args).toEqual([0, BUID_HI, BUID_LO, 24, 0]);
    expect(create.rets[0]! | 0).toBe(-3);
    expect(d.summary).toContain(`create returned ${create.rets[0]! | 0}`);
  });
});
