import type { Device } from '@ddw/machine';
import { type AddressSpace, MemTxResult } from '@ddw/memory';
import type { PciAddress, PciBus } from './pci-bus.js';

/** What a PCI function says it is (its config space header), as the device tree publishes it. */
export interface PciIds {
  vendorId: number;
  deviceId: number;
  /** 24-bit class code: base class, subclass, programming interface. */
  classCode: number;
}

/** Device-tree node names QEMU uses for PCI base classes (spapr_pci.c's class table). */
const CLASS_NODE_NAMES: Readonly<Record<number, string>> = {
  1: 'scsi',
  2: 'ethernet',
  3: 'display',
  4: 'multimedia',
  5: 'memory',
  6: 'pci',
  12: 'usb',
};

/**
 * A PCI function on a bus. Its DMA goes through the bus's DMA address space (on a sPAPR PHB, the
 * TCE windows), and a DMA that is not wholly mapped with the needed permission fails without
 * touching anything.
 */
export class PciDevice implements Device {
  /** Lifecycle hooks a model may add (vfio-pci connects to the host IOMMU in realize). */
  realize?(): void | Promise<void>;
  reset?(): void;
  unrealize?(): void;
  dispose?(): void;

  constructor(
    readonly id: string,
    readonly driver: string,
    /** The bus the function is attached to, at `address`. */
    readonly bus: PciBus,
    readonly address: PciAddress,
    /** Whether the driver sets a 64-bit DMA mask (what makes Linux negotiate a DDW). */
    readonly dma64: boolean,
    readonly ids: PciIds = { vendorId: 0x1234, deviceId: 0x11e8, classCode: 0x00ff00 },
  ) {}

  /** The function's device-tree node name under its bus's node: `ethernet@1`, `pci1234,11e8@2,1`. */
  get nodeName(): string {
    const base =
      CLASS_NODE_NAMES[this.ids.classCode >> 16] ??
      `pci${this.ids.vendorId.toString(16)},${this.ids.deviceId.toString(16)}`;
    const unit =
      this.address.fn === 0
        ? this.address.slot.toString(16)
        : `${this.address.slot.toString(16)},${this.address.fn.toString(16)}`;
    return `${base}@${unit}`;
  }

  get devfn(): number {
    return (this.address.slot << 3) | this.address.fn;
  }

  /** The RTAS config address: bus << 16 | devfn << 8 (on the root bus, bus 0). */
  get configAddress(): number {
    return (0 << 16) | (this.devfn << 8);
  }

  get dmaAddressSpace(): AddressSpace {
    return this.bus.dmaAddressSpace;
  }

  /** Device reads guest memory at bus address `iova` (the bus's IOMMU, e.g. the guest's TCEs, must allow reading). */
  dmaRead(iova: bigint, length: number): { result: MemTxResult; data: Uint8Array } {
    const data = new Uint8Array(length);
    if (!this.dmaAddressSpace.accessValid(iova, BigInt(length), false)) {
      return { result: MemTxResult.DECODE_ERROR, data };
    }
    return { result: this.dmaAddressSpace.read(iova, data), data };
  }

  /** Device writes guest memory at bus address `iova` (the bus's IOMMU, e.g. the guest's TCEs, must allow writing). */
  dmaWrite(iova: bigint, data: Uint8Array): MemTxResult {
    if (!this.dmaAddressSpace.accessValid(iova, BigInt(data.length), true)) return MemTxResult.DECODE_ERROR;
    return this.dmaAddressSpace.write(iova, data);
  }
}
