export { checkDeviceProps } from './device-properties.js';
export { PciDriverRegistry } from './driver-registry.js';
export { DMA_ENGINE_IDS, E1000E_IDS, E1000E_PROPERTIES, emulatedDmaDriver } from './emulated-dma-device.js';
export type { PciAddress, PciBus } from './pci-bus.js';
export { PciBuses } from './pci-buses.js';
export { PciDevice, type PciIds } from './pci-device.js';
export {
  driverProperties,
  PCI_DEVICE_PROPERTIES,
  type PciDriver,
  type PciDriverInfo,
  type PciDriverProperty,
  type PciPropertyKind,
} from './pci-driver.js';
export { PciTokens } from './tokens.js';
