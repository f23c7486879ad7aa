import { ConfigError } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { type PciAddress, type PciBus, PciDevice, type PciDriver, type PciDriverProperty } from '@ddw/pci';
import type { VfioContainer } from './container.js';
import type { HostVirtualMemory } from './host/host-memory.js';
import { VfioError } from './vfio-error.js';

/** What vfio-pci devices share in a machine: their containers, and the way to connect to one. */
export interface VfioConnector {
  /** Joins the container of `bus`'s DMA address space (or makes one), as vfio_get_group does. */
  connect(bus: PciBus, group: string): VfioContainer;
  /** The IOMMU group number of a host device, for messages. */
  groupNumber(group: string): number;
  /**
   * Takes host function `host` for device `id`; returns the id of the device that already has
   * it (a host function can be passed through once), or undefined when it was free.
   */
  claimHost?(host: string, id: string): string | undefined;
  /** Gives `host` back (the device holding it unrealized). */
  releaseHost?(host: string, id: string): void;
  readonly hostMemory: HostVirtualMemory;
}

/** The simulated host device: a Mellanox ConnectX-5 function, whose Linux driver sets a 64-bit mask. */
export const HOST_DEVICE_IDS = { vendorId: 0x15b3, deviceId: 0x1017, classCode: 0x020000 };

const HOST_ADDRESS = /^(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;
const SYSFS_DEVICE = /^\/sys\/bus\/pci\/devices\/([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\/?$/i;

/**
 * What `-device vfio-pci` accepts (QEMU's hw/vfio/pci.c property list; the PCI ones every device
 * has come on top). Only `host` (or `sysfsdev`) matters to ddw; the rest change nothing about DMA
 * and are accepted so QEMU command lines run unchanged.
 */
export const VFIO_PCI_PROPERTIES: readonly PciDriverProperty[] = [
  {
    name: 'host',
    kind: 'str',
    description: 'host PCI function to pass through, DDDD:BB:DD.F (required, or sysfsdev)',
  },
  {
    name: 'sysfsdev',
    kind: 'str',
    description: 'the host function as a sysfs path, /sys/bus/pci/devices/DDDD:BB:DD.F',
  },
  { name: 'bootindex', kind: 'int32', description: 'boot order of the device' },
  { name: 'vf-token', kind: 'str', description: 'UUID shared with the PF driver of an SR-IOV VF' },
  { name: 'iommufd', kind: 'link', description: 'an iommufd object to use instead of a VFIO container' },
  { name: 'display', kind: 'OnOffAuto', description: 'expose the device display (vGPU)' },
  { name: 'xres', kind: 'uint32', description: 'display width' },
  { name: 'yres', kind: 'uint32', description: 'display height' },
  { name: 'enable-migration', kind: 'OnOffAuto', description: 'allow migration of the device' },
  { name: 'migration-events', kind: 'bool', description: 'emit migration state events' },
  { name: 'skip-vsc-check', kind: 'bool', description: 'skip the vendor-specific capability check' },
  { name: 'x-pre-copy-dirty-page-tracking', kind: 'OnOffAuto', description: 'track dirty pages in pre-copy' },
  { name: 'x-device-dirty-page-tracking', kind: 'OnOffAuto', description: 'use device dirty page tracking' },
  { name: 'x-vga', kind: 'bool', description: 'pass through the VGA ranges' },
  { name: 'x-req', kind: 'bool', description: 'enable the device request notifier' },
  { name: 'x-igd-opregion', kind: 'bool', description: 'expose the IGD OpRegion' },
  { name: 'x-igd-lpc', kind: 'bool', description: 'create the IGD LPC bridge' },
  { name: 'x-igd-legacy-mode', kind: 'OnOffAuto', description: 'IGD legacy mode' },
  { name: 'x-igd-gms', kind: 'uint32', description: 'IGD graphics stolen memory size' },
  { name: 'x-no-mmap', kind: 'bool', description: 'do not mmap the BARs' },
  { name: 'x-balloon-allowed', kind: 'bool', description: 'allow memory ballooning' },
  { name: 'x-no-kvm-intx', kind: 'bool', description: 'do not route INTx through KVM' },
  { name: 'x-no-kvm-msi', kind: 'bool', description: 'do not route MSI through KVM' },
  { name: 'x-no-kvm-msix', kind: 'bool', description: 'do not route MSI-X through KVM' },
  { name: 'x-no-geforce-quirks', kind: 'bool', description: 'disable the GeForce quirks' },
  { name: 'x-no-kvm-ioeventfd', kind: 'bool', description: 'do not use KVM ioeventfds' },
  { name: 'x-no-vfio-ioeventfd', kind: 'bool', description: 'do not use VFIO ioeventfds' },
  {
    name: 'x-intx-mmap-timeout-ms',
    kind: 'uint32',
    description: 'delay before re-enabling BAR mmaps after INTx',
  },
  { name: 'x-pci-vendor-id', kind: 'uint32', description: 'override the vendor ID' },
  { name: 'x-pci-device-id', kind: 'uint32', description: 'override the device ID' },
  { name: 'x-pci-sub-vendor-id', kind: 'uint32', description: 'override the subsystem vendor ID' },
  { name: 'x-pci-sub-device-id', kind: 'uint32', description: 'override the subsystem device ID' },
  { name: 'x-nv-gpudirect-clique', kind: 'uint8', description: 'NVIDIA GPUDirect clique ID' },
  { name: 'x-msix-relocation', kind: 'str', description: 'move the MSI-X table to another BAR' },
];

/**
 * A host PCI function passed through to the guest (QEMU's vfio-pci). Its DMA goes through the
 * host IOMMU, never through the emulator's translation: a bus address works only where the host
 * has a mapping with the right permission, and lands in whatever host memory that mapping names.
 */
export class VfioPciDevice extends PciDevice {
  container: VfioContainer | undefined;

  constructor(
    id: string,
    bus: PciBus,
    address: PciAddress,
    /** The host device, "0000:01:00.0"; also its IOMMU group here. */
    readonly host: string,
    private readonly connector: VfioConnector,
    /** Where the device is in the description (`devices[2]`), for errors; default `devices.ID`. */
    private readonly field = `devices.${id}`,
  ) {
    super(id, 'vfio-pci', bus, address, true, HOST_DEVICE_IDS);
  }

  override realize(): void {
    // QEMU attaches each host function once; a second vfio-pci naming it fails its realize.
    const holder = this.connector.claimHost?.(this.host, this.id);
    if (holder !== undefined) {
      throw new ConfigError(
        `${this.field}.props.host`,
        `vfio ${this.host}: device is already attached`,
        `device "${holder}" already passes ${this.host} through; give each vfio-pci device its own host function`,
      );
    }
    try {
      this.container = this.connector.connect(this.bus, this.host);
    } catch (error) {
      this.connector.releaseHost?.(this.host, this.id);
      if (!(error instanceof VfioError)) throw error;
      throw new VfioError(
        `vfio ${this.host}: failed to setup container for group ${this.connector.groupNumber(this.host)}: ${error.message}`,
      );
    }
  }

  override unrealize(): void {
    this.container?.detachGroup(this.host);
    this.container = undefined;
    this.connector.releaseHost?.(this.host, this.id);
  }

  /** Device reads host memory through the host IOMMU (the mapping must allow device reads). */
  override dmaRead(iova: bigint, length: number): { result: MemTxResult; data: Uint8Array } {
    const data = new Uint8Array(length);
    const pieces = this.resolve(iova, length, false);
    if (!pieces) return { result: MemTxResult.DECODE_ERROR, data };
    for (const p of pieces) this.connector.hostMemory.read(p.vaddr, data.subarray(p.at, p.at + p.length));
    return { result: MemTxResult.OK, data };
  }

  /** Device writes host memory through the host IOMMU (the mapping must allow device writes). */
  override dmaWrite(iova: bigint, data: Uint8Array): MemTxResult {
    const pieces = this.resolve(iova, data.length, true);
    if (!pieces) return MemTxResult.DECODE_ERROR;
    for (const p of pieces) this.connector.hostMemory.write(p.vaddr, data.subarray(p.at, p.at + p.length));
    return MemTxResult.OK;
  }

  /** Every IOMMU page the access touches, checked before anything moves. */
  private resolve(
    iova: bigint,
    length: number,
    write: boolean,
  ): { vaddr: bigint; at: number; length: number }[] | undefined {
    const fd = this.container?.fd;
    if (!fd) return undefined;
    const pieces: { vaddr: bigint; at: number; length: number }[] = [];
    let at = 0;
    while (at < length) {
      const addr = iova + BigInt(at);
      const m = fd.translate(addr);
      if (!m || !(write ? m.write : m.read)) return undefined;
      const inPage = Number(m.iova + m.size - addr);
      const n = Math.min(inPage, length - at);
      const vaddr = m.vaddr + (addr - m.iova);
      if (!this.connector.hostMemory.find(vaddr, BigInt(n))) return undefined;
      pieces.push({ vaddr, at, length: n });
      at += n;
    }
    return pieces;
  }
}

/** The `vfio-pci` driver: `-device vfio-pci,host=0000:01:00.0` (or `sysfsdev=/sys/bus/pci/devices/...`). */
export function vfioPciDriver(connector: VfioConnector): PciDriver {
  return {
    name: 'vfio-pci',
    description: 'VFIO-based PCI device assignment (a host function passed through its IOMMU)',
    properties: VFIO_PCI_PROPERTIES,
    dma64: true,
    create: ({ id, bus, address, props, field = `devices.${id}` }) => {
      const host = hostOf(props, field);
      return new VfioPciDevice(id, bus, address, host, connector, field);
    },
  };
}

/** The host function a vfio-pci names, as DDDD:BB:DD.F; sysfsdev wins over host, as in QEMU. */
function hostOf(props: Readonly<Record<string, string>>, field: string): string {
  const { host, sysfsdev } = props;
  if (sysfsdev !== undefined) {
    const match = SYSFS_DEVICE.exec(sysfsdev);
    if (!match) {
      throw new ConfigError(
        `${field}.props.sysfsdev`,
        `Property 'vfio-pci.sysfsdev' doesn't take value '${sysfsdev}'`,
        'give the sysfs path of a host PCI function, e.g. /sys/bus/pci/devices/0000:01:00.0',
      );
    }
    return match[1]!.toLowerCase();
  }
  if (host === undefined) {
    throw new ConfigError(
      `${field}.props.host`,
      'No provided host device',
      'Use -device vfio-pci,host=DDDD:BB:DD.F or -device vfio-pci,sysfsdev=PATH_TO_DEVICE',
    );
  }
  if (!HOST_ADDRESS.test(host)) {
    throw new ConfigError(
      `${field}.props.host`,
      `Property 'vfio-pci.host' doesn't take value '${host}'`,
      'write it as DDDD:BB:DD.F, e.g. 0000:01:00.0',
    );
  }
  return (host.length === 7 ? `0000:${host}` : host).toLowerCase();
}
