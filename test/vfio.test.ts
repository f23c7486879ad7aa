import { SimulatedSpaprTceHost } from '@ddw/host-linux';
import { H_PUT_TCE, type HostErrorEvent, type Machine, MachineTokens, TraceBus } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { buildPseries } from '@ddw/pseries';
import { H_PUT_TCE_INDIRECT, H_STUFF_TCE, SpaprIommuTokens } from '@ddw/spapr-iommu';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import { GUEST_RAM_HOST_BASE, type HostIommuOp, type VfioPciDevice, VfioTokens } from '@ddw/vfio-common';
import { afterEach, describe, expect, it } from 'vitest';

const BUID = [0x08000000, 0x20000000];
const W0 = 0x80000000;
const W1 = 0x80000001;
const GiB = 1n << 30n;
const LIST = 0x100000n; // where the test guest keeps its TCE lists

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

interface Setup {
  m: Machine;
  phb: SpaprPhb;
  nic: VfioPciDevice;
  lines: string[];
  hostErrors: HostErrorEvent[];
}

async function passthrough(
  qemuArgs: string,
  options: { host?: string; trace?: string[] } = {},
): Promise<Setup> {
  const trace = new TraceBus();
  trace.setPatterns(options.trace ?? []);
  const lines: string[] = [];
  trace.addSink({ write: (l) => void lines.push(l) });
  const m = await buildPseries(`${qemuArgs} -device vfio-pci,host=0000:01:00.0,id=hostnic`, {
    trace,
    ...(options.host !== undefined ? { host: options.host } : {}),
  });
  machines.push(m);
  const hostErrors: HostErrorEvent[] = [];
  m.get(MachineTokens.Events).on('host-error', (e) => hostErrors.push(e));
  const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
  const nic = phb.devices.find((d) => d.id === 'hostnic') as VfioPciDevice;
  return { m, phb, nic, lines, hostErrors };
}

function rtas(m: Machine, name: string, args: number[], nret: number): number[] {
  return m.guest.rtasCall(name, args, nret).rets.map((r) => r >>> 0);
}

/** Maps guest pages [first, first + count) 1:1 into the window at `busOffset`, as Linux does for a direct window. */
function mapDirect(
  m: Machine,
  liobn: number,
  busOffset: bigint,
  pageShift: number,
  firstPage: number,
  count: number,
) {
  for (let done = 0; done < count; done += 512) {
    const n = Math.min(512, count - done);
    const list = new Uint8Array(n * 8);
    const view = new DataView(list.buffer);
    for (let k = 0; k < n; k++) {
      view.setBigUint64(k * 8, (BigInt(firstPage + done + k) << BigInt(pageShift)) | 3n);
    }
    m.memory.write(LIST, list);
    const ioba = busOffset + (BigInt(firstPage + done) << BigInt(pageShift));
    const r = m.guest.hcall(H_PUT_TCE_INDIRECT, BigInt(liobn), ioba, LIST, BigInt(n));
    expect(r.ret).toBe(0n);
  }
}

describe('passthrough end to end', () => {
  it('maps all RAM through a DDW and moves bytes exactly where the TCEs say, both directions', async () => {
    const { m, nic } = await passthrough('-M pseries -m 4G');
    const [status, liobn, hi, lo] = rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4);
    expect(status).toBe(0);
    expect(liobn).toBe(W1);
    const busOffset = (BigInt(hi!) << 32n) | BigInt(lo!);
    mapDirect(m, W1, busOffset, 16, 0, 0x10000); // 4 GiB of 64K pages
    const vfio = m.get(VfioTokens.Vfio);
    const container = vfio.containers[0]!;
    expect(container.fd.mappings()).toHaveLength(0x10000);

    // Guest writes a buffer at 3 GiB + 0x1230; the device reads it at the matching bus address.
    const gpa = 3n * GiB + 0x1230n;
    const payload = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 7 + 3) & 0xff);
    m.memory.write(gpa, payload);
    const read = nic.dmaRead(busOffset + gpa, payload.length);
    expect(read.result).toBe(MemTxResult.OK);
    expect(read.data).toEqual(payload);

    // The device writes; the guest finds the bytes at the guest address the TCE names.
    const reply = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 13) & 0xff);
    expect(nic.dmaWrite(busOffset + 0x20000n, reply)).toBe(MemTxResult.OK);
    const back = new Uint8Array(reply.length);
    m.memory.read(0x20000n, back);
    expect(back).toEqual(reply);
  });

  it('does the same through the default window, and a TCE pointing elsewhere moves the data there', async () => {
    const { m, nic } = await passthrough('-M pseries -m 2G');
    // Bus page 5 of the default window -> guest page 0x12345 (4K pages), read/write.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x5000n, (0x12345n << 12n) | 3n).ret).toBe(0n);
    const data = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
    expect(nic.dmaWrite(0x5000n, data)).toBe(MemTxResult.OK);
    const back = new Uint8Array(4096);
    m.memory.read(0x12345000n, back);
    expect(back).toEqual(data);
    expect(nic.dmaRead(0x5000n, 4096).data).toEqual(data);
  });

  it('fails a DMA to an IOVA the host has not mapped, or without the permission, touching nothing', async () => {
    const { m, nic } = await passthrough('-M pseries -m 2G');
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x200000n | 1n).ret).toBe(0n); // device may only read
    const before = new Uint8Array(8192);
    m.memory.read(0x200000n, before);
    expect(nic.dmaWrite(0x1000n, new Uint8Array(16).fill(0xee))).toBe(MemTxResult.DECODE_ERROR);
    // Straddling into the unmapped next page: nothing of the first page is written either.
    expect(nic.dmaRead(0x1ff0n, 32).result).toBe(MemTxResult.DECODE_ERROR);
    const after = new Uint8Array(8192);
    m.memory.read(0x200000n, after);
    expect(after).toEqual(before);
  });

  it('maps a write-only TCE read+write on the host (QEMU maps READ always)', async () => {
    const { m } = await passthrough('-M pseries -m 2G');
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x3000n, 0x400000n | 2n);
    const container = m.get(VfioTokens.Vfio).containers[0]!;
    expect(container.fd.translate(0x3000n)).toMatchObject({
      read: true,
      write: true,
      vaddr: GUEST_RAM_HOST_BASE + 0x400000n,
    });
  });
});

describe('host windows follow guest windows (v2)', () => {
  it('removes the host default window at start, then creates one per guest window with QEMU traces', async () => {
    const { m, lines } = await passthrough('-M pseries -m 4G', {
      trace: ['vfio_spapr_*', 'vfio_prereg_register'],
    });
    expect(lines).toEqual([
      'vfio_prereg_register va=0x7e0000000000 size=0x100000000 ret=0',
      'vfio_spapr_remove_window offset=0x0',
      'vfio_spapr_create_window pageshift=0xc levels=1 winsize=0x40000000 offset=0x0',
    ]);
    lines.length = 0;
    rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 41], 4);
    // 2^41 in 64K pages on a 64K-page host: 2^25 entries of 8 bytes -> 28 bits, 24 per level -> 2 (T27).
    expect(lines).toEqual([
      'vfio_spapr_create_window pageshift=0x10 levels=2 winsize=0x20000000000 offset=0x800000000000000',
    ]);
    lines.length = 0;
    rtas(m, 'ibm,remove-pe-dma-window', [W1], 1);
    expect(lines).toEqual(['vfio_spapr_remove_window offset=0x800000000000000']);
  });

  it('backs 16M guest pages with the largest host page the RAM backing allows', async () => {
    const { m, lines } = await passthrough('-M pseries -m 4G', { trace: ['vfio_spapr_create_window'] });
    lines.length = 0;
    rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 24, 32], 4);
    expect(lines).toEqual([
      'vfio_spapr_create_window pageshift=0x10 levels=1 winsize=0x100000000 offset=0x800000000000000',
    ]);
    const { m: huge, lines: hugeLines } = await passthrough('-M pseries -m 4G', {
      host: 'rampage=16M',
      trace: ['vfio_spapr_create_window'],
    });
    hugeLines.length = 0;
    rtas(huge, 'ibm,create-pe-dma-window', [0, ...BUID, 24, 32], 4);
    expect(hugeLines).toEqual([
      'vfio_spapr_create_window pageshift=0x18 levels=1 winsize=0x100000000 offset=0x800000000000000',
    ]);
  });

  it('traces map and unmap notifications with bus addresses', async () => {
    const { m, lines } = await passthrough('-M pseries -m 2G', { trace: ['vfio_iommu_map_notify'] });
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x7000n, 0x9000n | 3n);
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x7000n, 0n);
    expect(lines).toEqual([
      'vfio_iommu_map_notify iommu MAP @ 0x7000 - 0x7fff',
      'vfio_iommu_map_notify iommu UNMAP @ 0x7000 - 0x7fff',
    ]);
  });
});

describe('need_vfio and in-kernel tables (T24)', () => {
  it('keeps KVM tables in the kernel until VFIO listens, then moves them with their entries', async () => {
    const trace = new TraceBus();
    trace.setPatterns(['spapr_iommu_new_table', 'spapr_iommu_pci_put']);
    const lines: string[] = [];
    trace.addSink({ write: (l) => void lines.push(l) });
    const m = await buildPseries('-M pseries -m 2G -accel kvm', { trace });
    machines.push(m);
    const table = m.get(SpaprIommuTokens.Tables).get(W0)!;
    expect(table.fd).toBeGreaterThanOrEqual(0);
    // A hypercall on an in-kernel table: handled, but QEMU never sees it (no trace line).
    lines.length = 0;
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(lines).toEqual([]);
    // A VFIO notifier appears: the table moves to userspace (fd -1) and keeps the entry.
    const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
    const vfio = m.get(VfioTokens.Vfio);
    const container = vfio.connect(phb, '0000:01:00.0');
    expect(table.fd).toBe(-1);
    expect(table.needVfio).toBe(true);
    expect(lines).toEqual([
      expect.stringMatching(/^spapr_iommu_new_table liobn=0x80000000 table=0x[0-9a-f]+ fd=-1$/),
    ]);
    expect(table.entry(1)).toBe(0xabc003n);
    // The replay mapped the entry written while the table was in the kernel.
    expect(container.fd.translate(0x1000n)).toMatchObject({ vaddr: GUEST_RAM_HOST_BASE + 0xabc000n });
    // VFIO leaves: need_vfio drops, the table stays in userspace ([cur]).
    container.detachGroup('0000:01:00.0');
    expect(table.needVfio).toBe(false);
    expect(table.fd).toBe(-1);
  });
});

describe('host failures surface as QEMU surfaces them', () => {
  it('refuses a DDW on a v1 host: the window cannot fit the 32-bit host window (T29)', async () => {
    const { m, hostErrors } = await passthrough('-M pseries -m 2G', { host: 'type=v1' });
    const container = m.get(VfioTokens.Vfio).containers[0]!;
    expect(container.type).toBe('v1');
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 12, 31], 4)[0]).toBe(0);
    expect(hostErrors.map((e) => e.message)).toEqual([
      `Container 0x${container.pointer.toString(16)} can't map guest IOVA region 0x800000000000000..0x80000007fffffff`,
      'vfio: DMA mapping failed, unable to continue',
    ]);
    expect(hostErrors[1]!.fatal).toBe(true);
    expect(container.broken).toBe('vfio: DMA mapping failed, unable to continue');
  });

  it('fails the device realize when the host cannot pre-register RAM, naming the device', async () => {
    await expect(passthrough('-M pseries -m 2G', { host: 'memlock=1G' })).rejects.toThrow(
      'device "hostnic" failed to realize: vfio 0000:01:00.0: failed to setup container for group 1: RAM memory listener initialization failed: Memory registering failed: Operation not permitted',
    );
  });

  it('removes a host window that landed elsewhere than the guest window, and stops (T27)', async () => {
    const { m, hostErrors } = await passthrough(
      '-M pseries -m 2G -global spapr-pci-host-bridge.dma64_win_addr=0x10000000000',
    );
    const container = m.get(VfioTokens.Vfio).containers[0]!;
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4)).toEqual([0, W1, 0x100, 0]);
    expect(hostErrors.map((e) => e.message)).toEqual([
      "Host doesn't support DMA window at 10000000000, must be 800000000000000",
      'Failed to create SPAPR window: Invalid argument',
      'vfio: DMA mapping failed, unable to continue',
    ]);
    // The misplaced host window is gone again: only the default one exists on the host.
    expect(container.fd.windows().map((w) => w.startAddr)).toEqual([0n]);
  });

  it('reports a failed map and keeps the guest-visible state', async () => {
    const { m, hostErrors } = await passthrough('-M pseries -m 2G');
    const vfio = m.get(VfioTokens.Vfio);
    vfio.host.injectFault('mapDma', 12);
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x2000n, 0x5000n | 3n).ret).toBe(0n);
    const container = vfio.containers[0]!;
    expect(hostErrors.map((e) => e.message)).toEqual([
      'VFIO_MAP_DMA failed: Cannot allocate memory',
      `vfio_container_dma_map(0x${container.pointer.toString(16)}, 0x2000, 0x1000, 0x${(GUEST_RAM_HOST_BASE + 0x5000n).toString(16)}) = -12 (Cannot allocate memory)`,
    ]);
    expect(container.fd.translate(0x2000n)).toBeUndefined();
    // The guest's TCE is stored regardless, and the next change maps normally.
    expect(m.get(SpaprIommuTokens.Tables).get(W0)!.entry(2)).toBe(0x5003n);
    expect(m.guest.hcall(H_STUFF_TCE, BigInt(W0), 0x2000n, 0x6000n | 3n, 1n).ret).toBe(0n);
    expect(container.fd.translate(0x2000n)).toMatchObject({ vaddr: GUEST_RAM_HOST_BASE + 0x6000n });
  });
});

describe('fault injection at each host step', () => {
  /** A machine whose simulated host fails the next call of `op` with -errno before anything runs. */
  async function faulty(op: HostIommuOp, errno: number, qemuArgs = '-M pseries -m 2G', count = 1) {
    const m = await buildPseries(`${qemuArgs} -device vfio-pci,host=0000:01:00.0,id=hostnic`, {
      hostIommu: (config, memory) => {
        const host = new SimulatedSpaprTceHost(config, memory);
        host.injectFault(op, errno, count);
        return host;
      },
    });
    machines.push(m);
    return m;
  }
  const realizeFails = (why: string) =>
    `device "hostnic" failed to realize: vfio 0000:01:00.0: failed to setup container for group 1: ${why}`;

  it.each([
    ['attachGroup', 16, 1, 'Failed to set group container: Device or resource busy'],
    // v2 refused, then v1 refused too.
    ['setIommu', 22, 2, 'Failed to set iommu for container: Invalid argument'],
    [
      'registerMemory',
      12,
      1,
      'RAM memory listener initialization failed: Memory registering failed: Operation not permitted',
    ],
    ['getInfo', 6, 1, 'VFIO_IOMMU_SPAPR_TCE_GET_INFO failed: No such device or address'],
    ['removeWindow', 22, 1, 'failed to remove existing window: Invalid argument'],
  ] as const)("%s failing at realize fails the device with QEMU's message", async (op, errno, count, why) => {
    await expect(faulty(op, errno, '-M pseries -m 2G', count)).rejects.toThrow(realizeFails(why));
  });

  it('a v2 SET_IOMMU refused falls back to v1, as QEMU does for sPAPR', async () => {
    const m = await faulty('setIommu', 22, '-M pseries -m 2G');
    expect(m.get(VfioTokens.Vfio).containers[0]!.type).toBe('v1');
  });

  it('v1 ENABLE failing fails the realize', async () => {
    await expect(
      buildPseries('-M pseries -m 2G -device vfio-pci,host=0000:01:00.0,id=hostnic', {
        hostIommu: (config, memory) => {
          const host = new SimulatedSpaprTceHost({ ...config, type: 'v1' }, memory);
          host.injectFault('enable', 12);
          return host;
        },
      }),
    ).rejects.toThrow(realizeFails('failed to enable container: Cannot allocate memory'));
  });

  it('createWindow failing is retried with more levels, and after the last try stops VFIO', async () => {
    // Boot creates the default window's host window: 1 level first, up to (64 - 12) / 16 = 3.
    const retried = await faulty('createWindow', 22, '-M pseries -m 2G', 2);
    const c1 = retried.get(VfioTokens.Vfio).containers[0]!;
    expect(c1.broken).toBeUndefined();
    expect(c1.fd.windows().map((w) => w.levels)).toEqual([3]);

    const errors: HostErrorEvent[] = [];
    const m = await faulty('createWindow', 22, '-M pseries -m 2G', 3);
    m.get(MachineTokens.Events).on('host-error', (e) => errors.push(e));
    const c = m.get(VfioTokens.Vfio).containers[0]!;
    expect(c.broken).toBe('vfio: DMA mapping failed, unable to continue');
    // The guest side is untouched: the default window exists and takes TCEs.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x1003n).ret).toBe(0n);
  });

  it('unmapDma and TCE_REMOVE failing are reported, the guest state stays', async () => {
    const { m, hostErrors } = await passthrough('-M pseries -m 2G');
    const vfio = m.get(VfioTokens.Vfio);
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x1003n);
    vfio.host.injectFault('unmapDma', 22);
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0n).ret).toBe(0n);
    const c = vfio.containers[0]!;
    expect(hostErrors.map((e) => e.message)).toEqual([
      'VFIO_UNMAP_DMA failed: Invalid argument',
      `vfio_container_dma_unmap(0x${c.pointer.toString(16)}, 0x1000, 0x1000) = -22 (Invalid argument)`,
    ]);
    hostErrors.length = 0;
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4)[0]).toBe(0);
    vfio.host.injectFault('removeWindow', 16);
    expect(rtas(m, 'ibm,remove-pe-dma-window', [W1], 1)).toEqual([0]);
    expect(hostErrors.map((e) => e.message)).toContain('Failed to remove window at 800000000000000');
  });
});
