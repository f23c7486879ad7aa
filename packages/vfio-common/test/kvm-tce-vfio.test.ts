import { type SimulatedSpaprTceContainer, SimulatedSpaprTceHost } from '@ddw/host-linux';
import { H_PUT_TCE } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { H_GET_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, SpaprIommuTokens } from '@ddw/spapr-iommu';
import { describe, expect, it } from 'vitest';
import {
  GUEST_RAM_HOST_BASE,
  type HostIommuConfig,
  type HostVirtualMemory,
  type VfioQemuVersion,
  VfioTokens,
} from '../src/index.js';
import { BUID, DDW_BUS, passthrough, rtas, W0, W1 } from './helpers.js';

const LIST = 0x100000n;
const TRACE = [
  'spapr_iommu_pci_*',
  'spapr_iommu_new_table',
  'vfio_iommu_map_notify',
  'vfio_spapr_group_attach',
];

/** A passthrough machine under -accel kvm on a host with (or without) KVM_CAP_SPAPR_TCE_VFIO. */
async function kvmRig(kvmTceVfio: boolean, qemuVersion: VfioQemuVersion = '7.2', hostIommu?: typeof broken) {
  const rig = await passthrough(
    '-M pseries-7.2 -m 2G -accel kvm',
    { qemuVersion, host: { kvmTceVfio }, ...(hostIommu ? { hostIommu } : {}) },
    TRACE,
  );
  const tables = rig.m.get(SpaprIommuTokens.Tables);
  const container = rig.m.get(VfioTokens.Vfio).containers[0];
  return { ...rig, tables, container };
}

/** A host whose containers cannot be driven by KVM (no kvmTables): every group attach fails. */
function broken(config: HostIommuConfig, memory: HostVirtualMemory) {
  const host = new SimulatedSpaprTceHost(config, memory);
  const open = host.openContainer.bind(host);
  host.openContainer = () => {
    const c = open();
    Object.defineProperty(c, 'kvmTables', { value: undefined });
    return c as SimulatedSpaprTceContainer;
  };
  return host;
}

describe('in-kernel TCE acceleration with VFIO (KVM_CAP_SPAPR_TCE_VFIO)', () => {
  it('keeps the table in the kernel, attaches the group, and maps guest TCEs without QEMU', async () => {
    const { m, nic, lines, tables, container } = await kvmRig(true);
    const w0 = tables.get(W0)!;
    expect(w0.fd).toBeGreaterThanOrEqual(0);
    expect(w0.needVfio).toBe(true);
    expect(w0.kvmIommuTables).toHaveLength(1);
    // Allocated in the kernel when the PHB reset enabled it; VFIO's notifier leaves it there.
    expect(lines).toEqual([
      expect.stringMatching(
        new RegExp(`^spapr_iommu_new_table liobn=0x80000000 table=0x[0-9a-f]+ fd=${w0.fd}$`),
      ),
      `vfio_spapr_group_attach Attached groupfd 25 to liobn fd ${w0.fd}`,
    ]);
    lines.length = 0;

    // H_PUT_TCE is KVM's: no spapr_iommu_pci_put, no vfio_iommu_map_notify, yet the host maps it.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(lines).toEqual([]);
    expect(container!.fd.translate(0x1000n)).toMatchObject({
      vaddr: GUEST_RAM_HOST_BASE + 0xabc000n,
      read: true,
      write: true,
    });
    expect(m.guest.hcall(H_GET_TCE, BigInt(W0), 0x1000n)).toMatchObject({ ret: 0n, outputs: [0xabc003n] });

    // The device's DMA lands where the TCE says.
    const bytes = Uint8Array.from({ length: 0x1800 }, (_, i) => (i * 5 + 1) & 0xff);
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x2000n, 0x200000n | 3n);
    expect(nic.dmaWrite(0x1800n, bytes)).toBe(MemTxResult.OK);
    const back = new Uint8Array(0x800);
    m.memory.read(0xabc800n, back);
    expect(back).toEqual(bytes.subarray(0, 0x800));
    m.memory.read(0x200000n, back);
    expect(back).toEqual(bytes.subarray(0x800, 0x1000));

    // A read-only TCE (device reads memory) maps read-only; clearing unmaps.
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x3000n, 0x300000n | 1n);
    expect(container!.fd.translate(0x3000n)).toMatchObject({ read: true, write: false });
    m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x3000n, 0n);
    expect(container!.fd.translate(0x3000n)).toBeUndefined();
    expect(lines).toEqual([]);
  });

  it('applies the kernel rules: aligned ioba, whole ranges, stuff only clears', async () => {
    const { m, lines, container } = await kvmRig(true);
    lines.length = 0;
    // QEMU masks a misaligned ioba; KVM refuses it.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1fffn, 0x12345000n | 3n).ret).toBe(-4n);
    expect(m.guest.hcall(H_GET_TCE, BigInt(W0), 0x1008n).ret).toBe(-4n);
    // Out of the window: H_PARAMETER from KVM, nothing reaches QEMU.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x40000000n, 0x1000n | 3n).ret).toBe(-4n);
    // H_STUFF_TCE with a permission bit is refused; clearing works and unmaps.
    expect(m.guest.hcall(H_STUFF_TCE, BigInt(W0), 0n, 0x5000n | 3n, 4n).ret).toBe(-4n);
    const list = new Uint8Array(4 * 8);
    const view = new DataView(list.buffer);
    for (let i = 0; i < 4; i++) view.setBigUint64(i * 8, (0x400000n + (BigInt(i) << 12n)) | 3n);
    m.memory.write(LIST, list);
    // H_PUT_TCE_INDIRECT past the end writes nothing in KVM (QEMU would write what fits).
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, BigInt(W0), 0x3fffe000n, LIST, 4n).ret).toBe(-4n);
    expect(m.guest.hcall(H_GET_TCE, BigInt(W0), 0x3fffe000n)).toMatchObject({ ret: 0n, outputs: [0n] });
    // npages 0 is a success in KVM (QEMU: H_PARAMETER).
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, BigInt(W0), 0x10000n, LIST, 0n).ret).toBe(0n);
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, BigInt(W0), 0x10000n, LIST, 4n).ret).toBe(0n);
    expect(container!.fd.translate(0x13000n)).toMatchObject({ vaddr: GUEST_RAM_HOST_BASE + 0x403000n });
    expect(m.guest.hcall(H_STUFF_TCE, BigInt(W0), 0x10000n, 0n, 4n).ret).toBe(0n);
    expect(container!.fd.translate(0x10000n)).toBeUndefined();
    expect(lines).toEqual([]);
  });

  it('passes to QEMU what KVM finds too hard (a TCE not aligned to its page), traced and notified', async () => {
    const { m, lines, container } = await kvmRig(true);
    lines.length = 0;
    // iommu_tce_check_gpa fails: H_TOO_HARD, QEMU masks the address and VFIO maps it by ioctl.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x5000n, 0x7654321n).ret).toBe(0n);
    expect(lines).toEqual([
      'vfio_iommu_map_notify iommu MAP @ 0x5000 - 0x5fff',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x5000 tce=0x7654321 ret=0',
    ]);
    expect(container!.fd.translate(0x5000n)).toMatchObject({ vaddr: GUEST_RAM_HOST_BASE + 0x7654000n });
  });

  it('drives a DDW of 16M pages through a 64K-page host window, and lets go when it is removed', async () => {
    const { m, nic, lines, tables, container } = await kvmRig(true);
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 24, 34], 4)).toEqual([0, W1, 0x08000000, 0]);
    const w1 = tables.get(W1)!;
    expect(w1.fd).toBeGreaterThanOrEqual(0);
    expect(w1.kvmIommuTables.map((a) => a.tbl.pageShift)).toEqual([16]);
    expect(lines.at(-1)).toBe(`vfio_spapr_group_attach Attached groupfd 25 to liobn fd ${w1.fd}`);
    lines.length = 0;
    // One 16M TCE is 256 host entries of 64K.
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W1), DDW_BUS + 0x1000000n, 0x3000000n | 3n).ret).toBe(0n);
    expect(lines).toEqual([]);
    expect(container!.fd.mappings()).toHaveLength(256);
    expect(container!.fd.translate(DDW_BUS + 0x1ff0000n)).toMatchObject({
      vaddr: GUEST_RAM_HOST_BASE + 0x3ff0000n,
    });
    const data = Uint8Array.of(1, 2, 3, 4);
    expect(nic.dmaWrite(DDW_BUS + 0x1abcdefn, data)).toBe(MemTxResult.OK);
    const back = new Uint8Array(4);
    m.memory.read(0x3abcdefn, back);
    expect(back).toEqual(data);
    // Removing the window unmaps it on the host and frees the in-kernel table with its attachment.
    expect(rtas(m, 'ibm,remove-pe-dma-window', [W1], 1)).toEqual([0]);
    expect(w1.kvmIommuTables).toEqual([]);
    expect(container!.fd.mappings()).toEqual([]);
  });

  it('under 10.0 attaches the same way', async () => {
    const { m, lines, tables, container } = await kvmRig(true, '10.0');
    expect(lines.at(-1)).toBe(
      `vfio_spapr_group_attach Attached groupfd 25 to liobn fd ${tables.get(W0)!.fd}`,
    );
    lines.length = 0;
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(container!.fd.translate(0x1000n)).toMatchObject({ vaddr: GUEST_RAM_HOST_BASE + 0xabc000n });
    expect(lines).toEqual([]);
  });

  it('releases the attachment when the device goes, and the table keeps working in the kernel', async () => {
    const { m, tables, container } = await kvmRig(true);
    const w0 = tables.get(W0)!;
    container!.detachGroup('0000:01:00.0');
    expect(w0.kvmIommuTables).toEqual([]);
    expect(w0.needVfio).toBe(false);
    expect(w0.fd).toBeGreaterThanOrEqual(0);
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
  });
});

describe('without KVM_CAP_SPAPR_TCE_VFIO, or when the attach fails', () => {
  it('moves the table to userspace as before: QEMU sees and maps every TCE', async () => {
    const { m, lines, tables, container } = await kvmRig(false);
    expect(tables.get(W0)!.fd).toBe(-1);
    // Allocated in the kernel, then moved out when VFIO's notifier came; no group attach.
    expect(lines).toEqual([
      expect.stringMatching(/^spapr_iommu_new_table liobn=0x80000000 table=0x[0-9a-f]+ fd=\d+$/),
      expect.stringMatching(/^spapr_iommu_new_table liobn=0x80000000 table=0x[0-9a-f]+ fd=-1$/),
    ]);
    lines.length = 0;
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(lines).toEqual([
      'vfio_iommu_map_notify iommu MAP @ 0x1000 - 0x1fff',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0xabc003 ret=0',
    ]);
    expect(container!.fd.translate(0x1000n)).toMatchObject({ vaddr: GUEST_RAM_HOST_BASE + 0xabc000n });
  });

  it('7.2 reports a refused attach and never follows the window: the TCEs stay in the kernel', async () => {
    const { m, hostErrors, tables, container, lines } = await kvmRig(true, '7.2', broken);
    // The default window's attach failed at the PHB reset: no notifier, so need_vfio never rose.
    const w0 = tables.get(W0)!;
    expect(w0.needVfio).toBe(false);
    expect(w0.fd).toBeGreaterThanOrEqual(0);
    expect(container!.broken).toBeUndefined();
    lines.length = 0;
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(lines).toEqual([]);
    expect(container!.fd.translate(0x1000n)).toBeUndefined();
    // The same for a DDW: reported, and region_add returns before following the window.
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4)).toEqual([0, W1, 0x08000000, 0]);
    expect(hostErrors.map((e) => e.message)).toEqual([
      `vfio: failed to setup fd ${tables.get(W1)!.fd} for a group with fd 25: Invalid argument`,
    ]);
    expect(tables.get(W1)!.needVfio).toBe(false);
  });

  it('10.0 fails the section on a refused attach, as any other region_add error', async () => {
    const { m, hostErrors, tables, container } = await kvmRig(true, '10.0', broken);
    expect(container!.broken).toBe('vfio: DMA mapping failed, unable to continue');
    expect(tables.get(W0)!.needVfio).toBe(false);
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4)).toEqual([0, W1, 0x08000000, 0]);
    expect(hostErrors.map((e) => [e.message, e.fatal === true])).toEqual([
      [
        `vfio: failed GROUP_SET_SPAPR_TCE for KVM VFIO device ${tables.get(W1)!.fd} and group fd 25: Invalid argument`,
        false,
      ],
      ['vfio: DMA mapping failed, unable to continue', true],
    ]);
  });

  it('follows QEMU on a v1 host: no group is attached, yet the table stays in the kernel', async () => {
    // QEMU attaches groups only for SPAPR TCE v2, while need_vfio keeps any in-kernel table in the
    // kernel once the capability is there: the guest's TCEs then reach neither QEMU nor the host.
    const rig = await passthrough(
      '-M pseries-7.2 -m 2G -accel kvm',
      { host: { type: 'v1', kvmTceVfio: true } },
      TRACE,
    );
    const w0 = rig.m.get(SpaprIommuTokens.Tables).get(W0)!;
    const container = rig.m.get(VfioTokens.Vfio).containers[0]!;
    expect(container.type).toBe('v1');
    expect(w0.kvmAccelerated).toBe(true);
    expect(w0.kvmIommuTables).toEqual([]);
    rig.lines.length = 0;
    expect(rig.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(rig.lines).toEqual([]);
    expect(container.fd.translate(0x1000n)).toBeUndefined();
  });

  it('changes nothing under TCG', async () => {
    const rig = await passthrough('-M pseries-7.2 -m 2G', { host: { kvmTceVfio: true } }, TRACE);
    const w0 = rig.m.get(SpaprIommuTokens.Tables).get(W0)!;
    expect(w0.fd).toBe(-1);
    expect(w0.kvmIommuTables).toEqual([]);
    rig.lines.length = 0;
    expect(rig.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0xabc000n | 3n).ret).toBe(0n);
    expect(rig.lines).toEqual([
      'vfio_iommu_map_notify iommu MAP @ 0x1000 - 0x1fff',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0xabc003 ret=0',
    ]);
  });
});
