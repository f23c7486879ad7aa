export {
  PHB_PGSZ_4K_64K,
  PHB_PGSZ_4K_64K_2M_16M,
  type PhbDmaProperties,
  QEMU_7_2_PHB_DEFAULTS,
  SPAPR_PCI_BASE_BUID,
  SPAPR_PCI_DMA_MAX_WINDOWS,
  SPAPR_PCI_MSI_SIZE,
  SPAPR_PCI_MSI_WINDOW,
  spaprPciBuid,
  spaprPciLiobn,
} from './constants.js';
export { PhbMigration, spaprPciVmstate } from './migration.js';
export { SpaprPhb, type SpaprPhbCompat, type SpaprPhbConfig } from './phb.js';
export {
  type PciDeviceDescription,
  type PhbDescription,
  SPAPR_MAX_PHB_INDEX,
  type SpaprPciOptions,
  SpaprPciTokens,
  SpaprPhbs,
  spaprPci,
} from './plugin.js';
