import { ConfigError } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { type PciAddress, PciDevice, type PciDriver, type SpaprPhb } from '@ddw/spapr-pci';
import { type VfioContainer, VfioError } from './container.js';
import type { HostVirtualMemory } from './host/host-memory.js';

/** What vfio-pci devices share in a machine: their containers, and the way to connect to one. */
export interface VfioConnector {
  /** Joins the container of `phb`'s address space (or makes one), as vfio_get_group does. */
  connect(phb: SpaprPhb, group: string): VfioContainer;
  /** The IOMMU group number of a host device, for messages. */
  groupNumber(group: string): number;
  readonly hostMemory: HostVirtualMemory;
}

/** The simulated host device: a Mellanox ConnectX-5 function, whose Linux driver sets a 64-bit mask. */
export const HOST_DEVICE_IDS = { vendorId: 0x15b3, deviceId: 0x1017, classCode: 0x020000 };

/** vfio-pci properties that change nothing about DMA: accepted, ignored. */
const IGNORED_PROPS = /^(rombar|romfile|multifunction|bootindex|failover_pair_id|x-[a-z0-9-]+)$/;
const HOST_ADDRESS = /^(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;

/**
 * A host PCI function passed through to the guest (QEMU's vfio-pci). Its DMA goes through the
 * host IOMMU, never through the emulator's translation: a bus address works only where the host
 * has a mapping with the right permission, and lands in whatever host memory that mapping names.
 */
export class VfioPciDevice extends PciDevice {
  container: VfioContainer | undefined;

  constructor(
    id: string,
    phb: SpaprPhb,
    address: PciAddress,
    /** The host device, "0000:01:00.0"; also its IOMMU group here. */
    readonly host: string,
    private readonly connector: VfioConnector,
  ) {
    super(id, 'vfio-pci', phb, address, true, HOST_DEVICE_IDS);
  }

  override realize(): void {
    try {
      this.container = this.connector.connect(this.phb, this.host);
    } catch (error) {
      if (!(error instanceof VfioError)) throw error;
      throw new VfioError(
        `vfio ${this.host}: failed to setup container for group ${this.connector.groupNumber(this.host)}: ${error.message}`,
      );
    }
  }

  override unrealize(): void {
    this.container?.detachGroup(this.host);
    this.container = undefined;
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

/** The `vfio-pci` driver: `-device vfio-pci,host=0000:01:00.0`. */
export function vfioPciDriver(connector: VfioConnector): PciDriver {
  return {
    name: 'vfio-pci',
    dma64: true,
    create: ({ id, phb, address, props }) => {
      const host = props.host;
      if (host === undefined) {
        throw new ConfigError(
          `devices.${id}.host`,
          'No provided host device',
          'use -device vfio-pci,host=DDDD:BB:DD.F',
        );
      }
      if (!HOST_ADDRESS.test(host)) {
        throw new ConfigError(
          `devices.${id}.host`,
          `"${host}" is not a PCI address`,
          'write it as DDDD:BB:DD.F, e.g. 0000:01:00.0',
        );
      }
      const unknown = Object.keys(props).filter((k) => k !== 'host' && !IGNORED_PROPS.test(k));
      if (unknown.length > 0) {
        throw new ConfigError(
          `devices.${id}.${unknown[0]}`,
          `vfio-pci has no property "${unknown[0]}" in ddw`,
          'give only host=',
        );
      }
      return new VfioPciDevice(id, phb, address, host.length === 7 ? `0000:${host}` : host, connector);
    },
  };
}
