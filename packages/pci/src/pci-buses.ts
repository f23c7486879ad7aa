import type { PciBus } from './pci-bus.js';

/**
 * The machine's PCI buses, in the order their host bridges were described: where a device finds
 * the bus its description names (`bus`), whatever kind of host bridge holds it.
 */
export class PciBuses {
  readonly list: PciBus[] = [];

  byName(name: string): PciBus | undefined {
    return this.list.find((b) => b.name === name);
  }
}
