import { token } from '@ddw/machine';
import type { PciDriverRegistry } from './driver-registry.js';
import type { PciBuses } from './pci-buses.js';

/**
 * What a machine with PCI holds, by token. The plugin that brings the host bridges provides them
 * (@ddw/spapr-pci's `spapr-pci`); device plugins register their drivers in `Drivers`.
 */
export const PciTokens = {
  /** Every PCI driver a `devices` entry (or `-device`) can name. */
  Drivers: token<PciDriverRegistry>('pci', 'Drivers'),
  /** Every PCI bus of the machine, in description order. */
  Buses: token<PciBuses>('pci', 'Buses'),
} as const;
