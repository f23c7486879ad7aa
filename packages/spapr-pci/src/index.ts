export * from './constants.js';
export { emulatedDmaDriver, type PciDriver, PciDriverRegistry } from './drivers.js';
export { type PciAddress, PciDevice } from './pci-device.js';
export { SpaprPhb, type SpaprPhbCompat, type SpaprPhbConfig } from './phb.js';
export {
  type PciDeviceDescription,
  type PhbDescription,
  type SpaprPciOptions,
  SpaprPciTokens,
  SpaprPhbs,
  spaprPci,
} from './plugin.js';
