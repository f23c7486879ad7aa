import { ConfigError, RTAS_IBM_RESET_PE_DMA_WINDOW } from '@ddw/machine';
import { type PhbDmaProperties, QEMU_7_2_PHB_DEFAULTS } from '@ddw/spapr-pci';

/** What a pseries machine type decides about DMA windows. */
export interface PseriesMachineType {
  /** The canonical name, e.g. "pseries-7.2". */
  readonly name: string;
  readonly description: string;
  /** PHB property defaults (`pgsz` is the one that changed over the years). */
  readonly phbDefaults: PhbDmaProperties;
  readonly ddw: {
    /** Query accepts nret 6 (PAPR 2.8's 64-bit largest block). */
    readonly queryNret6: boolean;
    /** The 2M page size is reported by query. */
    readonly pgsize2M: boolean;
    /** Removing the last non-default window restores the default window. */
    readonly resetOnLastRemove: boolean;
    /** ibm,ddw-extensions cells after the count. */
    readonly extensions: readonly number[];
    /** How query's largest block is computed: from the highest RAM address, or fixed. */
    readonly largestBlock: 'max-ram' | 'fixed';
  };
  /** Version of the "spapr_iommu" migration section. */
  readonly migrationVersion: number;
  /** RAM when -m is not given. */
  readonly defaultRam: bigint;
}

const MiB = 1n << 20n;

/**
 * The machine types ddw models. `pseries-2.7` is the pseries machine as QEMU 2.7 ran it (the
 * original DDW patchset), not QEMU 7.2's compat machine of that name; its trace formats stay
 * QEMU 7.2's so that traces of both compare.
 */
export const PSERIES_MACHINE_TYPES: readonly PseriesMachineType[] = [
  {
    name: 'pseries-7.2',
    description: 'QEMU 7.2 pseries (default)',
    phbDefaults: QEMU_7_2_PHB_DEFAULTS,
    ddw: {
      queryNret6: true,
      pgsize2M: true,
      resetOnLastRemove: true,
      extensions: [RTAS_IBM_RESET_PE_DMA_WINDOW, 1],
      largestBlock: 'fixed',
    },
    migrationVersion: 3,
    defaultRam: 512n * MiB,
  },
  {
    name: 'pseries-2.7',
    description: 'QEMU 2.7 pseries: the original DDW patchset',
    phbDefaults: { ...QEMU_7_2_PHB_DEFAULTS, pgsz: 0x11000n },
    ddw: {
      queryNret6: false,
      pgsize2M: false,
      resetOnLastRemove: false,
      extensions: [RTAS_IBM_RESET_PE_DMA_WINDOW],
      largestBlock: 'max-ram',
    },
    migrationVersion: 2,
    defaultRam: 512n * MiB,
  },
];

/** `pseries` means the newest machine type, as in QEMU. */
const ALIASES: Readonly<Record<string, string>> = { pseries: 'pseries-7.2' };

/** The machine type a `-M` name selects; anything else is refused with the list of known ones. */
export function machineType(name: string, field = '-M'): PseriesMachineType {
  const canonical = ALIASES[name] ?? name;
  const found = PSERIES_MACHINE_TYPES.find((t) => t.name === canonical);
  if (found) return found;
  const known = [...Object.keys(ALIASES), ...PSERIES_MACHINE_TYPES.map((t) => t.name)].join(', ');
  throw new ConfigError(field, `unknown machine type "${name}"`, `use one of: ${known}`, {
    subject: field.startsWith('-') ? 'QEMU options' : 'machine description',
  });
}
