export * from './constants.js';
export {
  checkDeviceProps,
  DMA_ENGINE_IDS,
  driverProperties,
  E1000E_IDS,
  E1000E_PROPERTIES,
  emulatedDmaDriver,
  PCI_DEVICE_PROPERTIES,
  type PciDriver,
  type PciDriverInfo,
  type PciDriverProperty,
  PciDriverRegistry,
  type PciPropertyKind,
} from './drivers.js';
export { PhbMigration, spaprPciVmstate } from './migration.js';
export { type PciAddress, PciDevice, type PciIds } from './pci-device.js';
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
