export * from './constants.js';
export {
  DMA_ENGINE_IDS,
  E1000E_IDS,
  emulatedDmaDriver,
  type PciDriver,
  PciDriverRegistry,
} from './drivers.js';
export { PhbMigration, spaprPciVmstate } from './migration.js';
export { type PciAddress, PciDevice, type PciIds } from './pci-device.js';
export { SpaprPhb, type SpaprPhbCompat, type SpaprPhbConfig } from './phb.js';
export {
  type PciDeviceDescription,
  type PhbDescription,
  type SpaprPciOptions,
  SpaprPciTokens,
  SpaprPhbs,
  spaprPci,
} from './plugin.js';
