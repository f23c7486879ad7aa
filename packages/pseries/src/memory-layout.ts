import { ConfigError, formatHex, formatSize } from '@ddw/machine';

const MiB = 1n << 20n;
const GiB = 1n << 30n;

/** The unit of pseries memory hotplug (an LMB); RAM and maxmem must be multiples of it. */
export const SPAPR_MEMORY_BLOCK_SIZE = 256n * MiB;
/** Where hotpluggable memory starts: RAM's end rounded up to this. */
export const SPAPR_DEVICE_MEM_ALIGN = GiB;
/** Memory slots a pseries machine accepts without KVM (KVM allows more). */
export const SPAPR_MAX_RAM_SLOTS = 32;

export interface PseriesMemoryLayout {
  /** Boot RAM at guest physical 0. */
  readonly ram: bigint;
  /** RAM plus what can be hotplugged. */
  readonly maxmem: bigint;
  readonly slots: number;
  /** The hotplug (device-memory) region, when maxmem > ram. */
  readonly deviceMemory?: { readonly base: bigint; readonly size: bigint };
  /**
   * The end of the highest address RAM can ever occupy: ram when nothing can be hotplugged, else
   * the end of the device-memory region. QEMU 2.7's query derives its largest block from it.
   */
  readonly maxRamAddress: bigint;
}

/**
 * Lays out pseries RAM as QEMU's spapr machine init does: boot RAM at 0, and when maxmem exceeds
 * it, the device-memory region of (maxmem - ram) bytes at RAM's end rounded up to 1 GiB. Refuses
 * what QEMU refuses, naming the description field at fault (`ram`, `maxmem`, `pseries.slots`);
 * the configuration layer re-addresses it to the `-m` option or file that set it.
 */
export function pseriesMemoryLayout(options: {
  ram: bigint;
  maxmem?: bigint;
  slots?: number;
}): PseriesMemoryLayout {
  const { ram } = options;
  const maxmem = options.maxmem ?? ram;
  const slots = options.slots ?? 0;
  const refuse = (field: string, problem: string, fix: string): never => {
    throw new ConfigError(field, problem, fix);
  };
  if (ram === 0n) refuse('ram', 'RAM size is 0', 'give a size such as 2G');
  if (maxmem < ram) {
    refuse(
      'maxmem',
      `maximum memory size (${formatHex(maxmem)}) must be at least the initial memory size (${formatHex(ram)})`,
      'raise maxmem or lower the RAM size',
    );
  }
  if (slots > 0 && maxmem === ram) {
    refuse(
      'maxmem',
      `memory slots were specified but maximum memory size (${formatHex(maxmem)}) is equal to the initial memory size (${formatHex(ram)})`,
      'give maxmem above the RAM size, or drop slots',
    );
  }
  if (slots === 0 && maxmem > ram) {
    refuse(
      'maxmem',
      'maxmem was specified, but no hotplug slots were specified',
      'give hotplug slots too, e.g. -m 2G,maxmem=8G,slots=4',
    );
  }
  if (slots > SPAPR_MAX_RAM_SLOTS) {
    refuse(
      'pseries.slots',
      `specified number of memory slots ${slots} exceeds max supported ${SPAPR_MAX_RAM_SLOTS}`,
      `use at most ${SPAPR_MAX_RAM_SLOTS} slots`,
    );
  }
  if (ram % SPAPR_MEMORY_BLOCK_SIZE !== 0n) {
    refuse('ram', `memory size ${formatHex(ram)} is not aligned to 256 MiB`, 'use a multiple of 256M');
  }
  if (maxmem % SPAPR_MEMORY_BLOCK_SIZE !== 0n) {
    refuse(
      'maxmem',
      `maximum memory size ${formatHex(maxmem)} is not aligned to 256 MiB`,
      'use a multiple of 256M',
    );
  }
  if (maxmem === ram) return { ram, maxmem, slots, maxRamAddress: ram };
  const base = ((ram + SPAPR_DEVICE_MEM_ALIGN - 1n) / SPAPR_DEVICE_MEM_ALIGN) * SPAPR_DEVICE_MEM_ALIGN;
  const size = maxmem - ram;
  return { ram, maxmem, slots, deviceMemory: { base, size }, maxRamAddress: base + size };
}

/** "2 GiB RAM, 8 GiB max (device memory at 0x80000000)": for reports. */
export function describeMemoryLayout(layout: PseriesMemoryLayout): string {
  const dm = layout.deviceMemory;
  return dm
    ? `${formatSize(layout.ram)} RAM, up to ${formatSize(layout.maxmem)} (device memory ${formatSize(dm.size)} at ${formatHex(dm.base)})`
    : `${formatSize(layout.ram)} RAM`;
}
