import {
  ConfigError,
  type Device,
  type DeviceTree,
  RTAS_IBM_CREATE_PE_DMA_WINDOW,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
  RTAS_IBM_REMOVE_PE_DMA_WINDOW,
} from '@ddw/machine';
import { AddressSpace, ContainerRegion, MmioRegion, UINT64_MAX } from '@ddw/memory';
import type { PciBus, PciDevice } from '@ddw/pci';
import type { SpaprTceTable, SpaprTceTables } from '@ddw/spapr-iommu';
import {
  type PhbDmaProperties,
  SPAPR_PCI_DMA_MAX_WINDOWS,
  SPAPR_PCI_MSI_SIZE,
  SPAPR_PCI_MSI_WINDOW,
  spaprPciBuid,
  spaprPciLiobn,
} from './constants.js';

export interface SpaprPhbConfig extends PhbDmaProperties {
  /** The PHB's device id; its root bus is `<id>.0` (the default PHB is "pci", bus "pci.0"). */
  id: string;
  index: number;
  /**
   * The root bus name when it is not `<id>.0`: QEMU names the bus of a PHB created without an id
   * `pci.N`, N counting such buses.
   */
  bus?: string;
}

/** What differs between machine types in what a PHB publishes. */
export interface SpaprPhbCompat {
  /** ibm,ddw-extensions cells after the count: [reset token] (2.7) or [reset token, 1] (7.1+). */
  ddwExtensions: readonly number[];
  /**
   * The "spapr_pci" migration section carries the equality check of the default window's LIOBN,
   * as QEMU 2.7 sent it (QEMU's `pre-2.8-migration` PHB property). Default false.
   */
  pre28Migration?: boolean;
}

/**
 * A sPAPR PCI host bridge (spapr-pci-host-bridge) as far as DMA goes: its BUID and LIOBNs, its
 * DMA address space holding the TCE windows and the MSI region, the DMA reset that restores the
 * default window, and its device-tree node. It is its root bus too: the PciBus its functions are
 * attached to.
 */
export class SpaprPhb implements Device, PciBus {
  readonly id: string;
  /** The root bus's name (PciBus.name), what devices give as `bus=`. */
  readonly name: string;
  readonly index: number;
  readonly buid: bigint;
  readonly props: PhbDmaProperties;
  /** "pci@800000020000000": the node name, and the DMA address space's name, as QEMU's dtbusname. */
  readonly dtBusName: string;
  readonly dmaRoot: ContainerRegion;
  readonly dmaAddressSpace: AddressSpace;
  readonly msi: MmioRegion;
  /** The TCE tables for windows 0..windowsSupported-1, all created disabled. */
  readonly windows: SpaprTceTable[] = [];
  readonly devices: PciDevice[] = [];

  constructor(
    config: SpaprPhbConfig,
    private readonly compat: SpaprPhbCompat,
    private readonly tables: SpaprTceTables,
    private readonly deviceTree: DeviceTree,
  ) {
    const { id, index, bus, ...props } = config;
    this.id = id;
    this.name = bus ?? `${id}.0`;
    this.index = index;
    this.props = props;
    this.buid = spaprPciBuid(index);
    this.dtBusName = `pci@${this.buid.toString(16)}`;
    this.dmaRoot = new ContainerRegion(`${this.dtBusName}.iommu-root`, UINT64_MAX);
    for (let w = 0; w < this.windowsSupported; w++) {
      const table = tables.create(spaprPciLiobn(index, w), `phbs[${index}]`);
      this.windows.push(table);
      this.dmaRoot.addSubregion(0n, table.root);
    }
    this.msi = new MmioRegion('msi', SPAPR_PCI_MSI_SIZE, {
      endianness: 'little',
      read: () => 0n,
      write: () => undefined,
    });
    this.dmaRoot.addSubregion(SPAPR_PCI_MSI_WINDOW, this.msi);
    this.dmaAddressSpace = new AddressSpace(this.dmaRoot, this.dtBusName);
  }

  /**
   * 2 with DDW, 1 without (only the default window exists then). The ddw extension
   * `x-ddw-windows` lowers it to 1 with DDW on, a PHB whose only window is the default one, so a
   * guest must remove it to get a DDW (QEMU has no such PHB).
   */
  get windowsSupported(): number {
    return this.props.ddw ? (this.props.ddwWindows ?? SPAPR_PCI_DMA_MAX_WINDOWS) : 1;
  }

  get nodePath(): string {
    return `/${this.dtBusName}`;
  }

  liobn(window: number): number {
    return spaprPciLiobn(this.index, window);
  }

  /** How many windows are enabled (RTAS "active windows"). */
  activeWindows(): number {
    return this.windows.filter((t) => t.enabled).length;
  }

  /**
   * The LIOBN of a disabled window, or 0 when there is none. QEMU takes the first free child in
   * hash-table order; with both free, ddw takes the lowest window number (reference 2.1).
   */
  freeLiobn(): number {
    return this.windows.find((t) => !t.enabled)?.liobn ?? 0;
  }

  tableFor(liobn: number): SpaprTceTable | undefined {
    return this.windows.find((t) => t.liobn === liobn);
  }

  /**
   * spapr_phb_dma_reset: disable every window, then enable window 0 as the default window (4 KiB
   * pages at dma_win_addr, dma_win_size bytes) with fresh, zeroed entries.
   */
  dmaReset(): void {
    for (const table of this.windows) table.disable();
    const def = this.windows[0]!;
    def.enable(12, this.props.dma_win_addr, Number(this.props.dma_win_size >> 12n));
    def.defWin = true;
  }

  attach(device: PciDevice): void {
    const clash = this.devices.find((d) => d.devfn === device.devfn);
    if (clash) {
      throw new ConfigError(
        `devices.${device.id}.addr`,
        `slot ${device.address.slot}.${device.address.fn} of ${this.name} is taken by ${clash.id}`,
        'give the device another addr',
      );
    }
    this.devices.push(device);
  }

  detach(device: PciDevice): void {
    const at = this.devices.indexOf(device);
    if (at >= 0) this.devices.splice(at, 1);
  }

  /** PHB reset (system reset): DMA reset, then the windows' own reset, then a fresh DT node. */
  reset(): void {
    this.dmaReset();
    for (const table of this.windows) table.reset();
    this.writeDeviceTree();
  }

  unrealize(): void {
    for (const table of this.windows) table.disable();
  }

  dispose(): void {
    for (const table of this.windows) this.tables.delete(table);
    this.dmaAddressSpace.destroy();
  }

  /** The PHB node's DMA properties (spapr_dt_phb): ddw tokens, extensions, the default window. */
  writeDeviceTree(): void {
    const dt = this.deviceTree;
    const node = this.nodePath;
    dt.ensureNode(node);
    dt.setPropString(node, 'device_type', 'pci');
    dt.setPropU32Cells(node, 'reg', [Number(this.buid >> 32n), Number(this.buid & 0xffffffffn), 0, 0]);
    dt.setPropU32Cells(node, '#address-cells', [3]);
    dt.setPropU32Cells(node, '#size-cells', [2]);
    dt.setPropU32Cells(node, 'ibm,#dma-address-cells', [2]);
    dt.setPropU32Cells(node, 'ibm,#dma-size-cells', [2]);
    if (this.props.ddw) {
      dt.setPropU32Cells(node, 'ibm,ddw-applicable', [
        RTAS_IBM_QUERY_PE_DMA_WINDOW,
        RTAS_IBM_CREATE_PE_DMA_WINDOW,
        RTAS_IBM_REMOVE_PE_DMA_WINDOW,
      ]);
      dt.setPropU32Cells(node, 'ibm,ddw-extensions', [
        this.compat.ddwExtensions.length,
        ...this.compat.ddwExtensions,
      ]);
    } else {
      dt.removeProp(node, 'ibm,ddw-applicable');
      dt.removeProp(node, 'ibm,ddw-extensions');
    }
    const def = this.windows[0]!;
    const size32 = Number(BigInt.asUintN(32, BigInt(def.nbTable) << BigInt(def.pageShift)));
    // One child node per PCI function, as QEMU's spapr_dt_pci_device: reg's first cell is the
    // config address the guest passes to the DDW RTAS calls.
    for (const child of dt.nodes().filter((n) => n.startsWith(`${node}/`))) dt.removeNode(child);
    for (const device of this.devices) {
      const path = `${node}/${device.nodeName}`;
      dt.ensureNode(path);
      dt.setPropU32Cells(path, 'reg', [device.configAddress, 0, 0, 0, 0]);
      dt.setPropU32Cells(path, 'vendor-id', [device.ids.vendorId]);
      dt.setPropU32Cells(path, 'device-id', [device.ids.deviceId]);
      dt.setPropU32Cells(path, 'class-code', [device.ids.classCode]);
      dt.setPropString(
        path,
        'compatible',
        `pci${device.ids.vendorId.toString(16)},${device.ids.deviceId.toString(16)}`,
      );
    }
    dt.setPropU32Cells(node, 'ibm,dma-window', [
      def.liobn,
      Number(def.busOffset >> 32n),
      Number(def.busOffset & 0xffffffffn),
      0,
      size32,
    ]);
  }
}
