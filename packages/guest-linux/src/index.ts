export type {
  DeviceDmaState,
  DmaDirection,
  DmaMode,
  DmaWindowInfo,
  KnownDriver,
  LinuxGeneration,
  LinuxGuestOptions,
  LinuxGuestPort,
  PciFunction,
  PeDecision,
} from './api.js';
export { KNOWN_DRIVERS, knownDriver } from './drivers.js';
export { LinuxGuest } from './guest.js';
export { IommuTable } from './iommu-table.js';
export {
  DEFAULT_LINUX_GENERATION,
  GUEST_CHOICES,
  GUEST_PAGE_SIZES,
  type GuestChoice,
  type GuestSection,
  guestOf,
  guestPageSize,
  guestSectionSchema,
  LINUX_GENERATIONS,
  linuxGuestSection,
} from './section.js';
export { TCE_READ, TCE_WRITE, TCES_PER_CALL } from './tce.js';
export { DIRECT64_PROP, DMA64_PROP, windowInfoProperty } from './window-info.js';
