/** include/hw/pci-host/spapr.h facts (reference section 1). */
export const SPAPR_PCI_BASE_BUID = 0x800000020000000n;
export const SPAPR_PCI_DMA_MAX_WINDOWS = 2;
export const SPAPR_PCI_MSI_WINDOW = 0x40000000000n;
/** The MSI region's size under TCG (the host page size under KVM). */
export const SPAPR_PCI_MSI_SIZE = 0x1000n;

/** SPAPR_PCI_LIOBN(index, window). */
export function spaprPciLiobn(phbIndex: number, window: number): number {
  return (0x80000000 | (phbIndex << 8) | window) >>> 0;
}

export function spaprPciBuid(phbIndex: number): bigint {
  return SPAPR_PCI_BASE_BUID + BigInt(phbIndex);
}

/** The PHB properties QEMU exposes for DMA (hw/ppc/spapr_pci.c), as ddw carries them. */
export interface PhbDmaProperties {
  dma_win_addr: bigint;
  dma_win_size: bigint;
  dma64_win_addr: bigint;
  /** page_size_mask: a bit per supported IOMMU page size. */
  pgsz: bigint;
  ddw: boolean;
  /** ddw extension `x-ddw-windows`: DMA windows the PHB offers with DDW on (1 or 2; default 2). */
  ddwWindows?: number;
}

/** `pgsz` of QEMU 2.7 .. 4.1 and of pseries-4.1 and older types: 4K|64K. */
export const PHB_PGSZ_4K_64K = 0x11000n;
/** `pgsz` since QEMU 4.2 (hw/ppc/spapr_pci.c): 4K|64K|2M|16M. */
export const PHB_PGSZ_4K_64K_2M_16M = 0x1211000n;

/** QEMU 7.2's defaults (10.0's are the same); presets for other machine types override them. */
export const QEMU_7_2_PHB_DEFAULTS: PhbDmaProperties = {
  dma_win_addr: 0n,
  dma_win_size: 0x40000000n,
  dma64_win_addr: 0x800000000000000n,
  pgsz: PHB_PGSZ_4K_64K_2M_16M,
  ddw: true,
};
