import { formatHex, RTAS_IBM_RESET_PE_DMA_WINDOW } from '@ddw/machine';
import { pageMaskToQueryMask } from '@ddw/rtas-ddw';
import {
  PHB_PGSZ_4K_64K,
  PHB_PGSZ_4K_64K_2M_16M,
  type PhbDmaProperties,
  QEMU_7_2_PHB_DEFAULTS,
} from '@ddw/spapr-pci';

/**
 * QEMU versions as presets (design: Fidelity). A version is its machine types with their compat
 * properties, its `pseries` alias, which types it deprecates, and its own DDW behaviour.
 *
 * - 10.0: pseries-3.0 .. pseries-10.0, `pseries` = pseries-10.0; 3.0 .. 7.0 deprecated.
 * - 7.2: pseries-2.1 .. pseries-7.2 (and pseries-2.12-sxxm), `pseries` = pseries-7.2.
 * - 2.7: the pseries machine as QEMU 2.7 ran it, the original DDW patchset (query nret 5 only,
 *   largest block from the RAM size, ddw-extensions <1 reset>, no 2M bit, pgsz 4K|64K), with the
 *   older types QEMU 2.7 offered (pseries-2.1 .. 2.6 have no DDW).
 */
export const QEMU_VERSIONS = ['10.0', '7.2', '2.7'] as const;
export type QemuVersion = (typeof QEMU_VERSIONS)[number];

/**
 * The QEMU version of a machine whose description names none. '7.2' for now: the switch to '10.0'
 * is this one line.
 */
export const DEFAULT_QEMU_VERSION: QemuVersion = '10.0';

/** What a pseries machine type decides about DMA windows. */
export interface PseriesMachineType {
  /** The canonical name, e.g. "pseries-7.2". */
  readonly name: string;
  readonly description: string;
  /** The QEMU version whose machine type this is. */
  readonly qemuVersion: QemuVersion;
  /** QEMU warns "Machine type 'NAME' is deprecated: REASON" when it starts one. */
  readonly deprecated: boolean;
  readonly deprecationReason?: string;
  /** PHB property defaults (`pgsz` and `ddw` are the ones machine types change). */
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
  /** The PHB's `pre-2.8-migration`: "spapr_pci" carries the default window's LIOBN check. */
  readonly pre28Migration: boolean;
  /** The machine's `cap-htm` default; undefined when the version has no machine capabilities. */
  readonly capHtm?: boolean;
  /** Version of the "spapr_iommu" migration section. */
  readonly migrationVersion: number;
  /** RAM when -m is not given. */
  readonly defaultRam: bigint;
  /** The compat steps folded into this type, newest first, as QEMU chains them (with sources). */
  readonly compat: readonly CompatStep[];
}

/** The per-type values ddw models (QEMU compat properties and machine-class fields). */
export interface MachineCompat {
  /** spapr-pci-host-bridge `pgsz` (page_size_mask). */
  readonly pgsz: bigint;
  /** spapr-pci-host-bridge `ddw`. */
  readonly ddw: boolean;
  /** spapr-pci-host-bridge `pre-2.8-migration`. */
  readonly pre28Migration: boolean;
  /** Default of the machine's `cap-htm` (versions with machine capabilities only). */
  readonly capHtm: boolean;
}

/**
 * One `spapr_machine_X_class_options` function: what it changes on top of the next newer type's
 * options. A type's compat is the newest type's plus every step down to its own, as QEMU chains
 * them.
 */
export interface CompatStep {
  /** The type it defines, without "pseries-" ("4.1", "2.12-sxxm"). */
  readonly type: string;
  /** What it changes that ddw models. */
  readonly set?: Partial<MachineCompat>;
  /** Where QEMU says so. */
  readonly source?: string;
  /** Compat it applies that touches neither DMA windows nor RTAS DDW (not modelled). */
  readonly notes?: readonly string[];
  /** Derived from the previous type, but the next one does not inherit it (pseries-2.12-sxxm). */
  readonly branch?: true;
}

/** What a QEMU version does the same for every machine type (its code, not compat properties). */
export interface QemuDdwBehaviour {
  readonly queryNret6: boolean;
  readonly pgsize2M: boolean;
  readonly resetOnLastRemove: boolean;
  readonly extensions: readonly number[];
  readonly largestBlock: 'max-ram' | 'fixed';
  readonly migrationVersion: number;
  readonly defaultRam: bigint;
  /** The machine has capabilities (`cap-htm` ...): QEMU 2.12 and later. */
  readonly machineCaps: boolean;
}

export interface QemuVersionPreset {
  readonly version: QemuVersion;
  /** The type `pseries` names. */
  readonly alias: string;
  /** The newest type's values (the base class's defaults). */
  readonly base: MachineCompat;
  /** The compat steps, newest type first. */
  readonly chain: readonly CompatStep[];
  readonly behaviour: QemuDdwBehaviour;
  /** QEMU's machine-type lifecycle rule, when the version has one (9.1+). */
  readonly deprecation?: { readonly major: number; readonly minor: number };
  /** Where the version-wide facts come from. */
  readonly sources: readonly string[];
}

const MiB = 1n << 20n;
const SPAPR_C = 'hw/ppc/spapr.c';

/**
 * The spapr_machine_*_class_options chain of hw/ppc/spapr.c, newest first. QEMU 7.2 and 10.0 share
 * it over the types both offer; only pgsz (4.1), cap-htm (2.11), pre-2.8-migration (2.7) and ddw
 * (2.6) touch what ddw models. The hw_compat_X arrays (hw/core/machine.c) hold no spapr entries.
 */
const SPAPR_CHAIN: readonly CompatStep[] = [
  { type: '10.0' },
  { type: '9.2' },
  { type: '9.1' },
  { type: '9.0' },
  { type: '8.2' },
  { type: '8.1' },
  { type: '8.0' },
  { type: '7.2' },
  { type: '7.1' },
  { type: '7.0' },
  { type: '6.2' },
  { type: '6.1', notes: ['pre-6.2 NUMA affinity (device tree)'] },
  { type: '6.0' },
  { type: '5.2' },
  { type: '5.1', notes: ['pre-5.2 NUMA associativity (device tree)'] },
  { type: '5.0', notes: ['PHB pre-5.1-associativity=on (PHB node ibm,associativity)'] },
  { type: '4.2', notes: ['cap-ccf-assist=off, cap-fwnmi=off, RMA limit 16G, no NVDIMM'] },
  {
    type: '4.1',
    set: { pgsz: PHB_PGSZ_4K_64K },
    source: `${SPAPR_C} spapr_machine_4_1_class_options: { TYPE_SPAPR_PCI_HOST_BRIDGE, "pgsz", "0x11000" }`,
    notes: ['no linux,pci-probe-only, no smp-threads vsmt'],
  },
  { type: '4.0', notes: ['phb_placement_4_0, XICS only, pre-4.1 migration'] },
  { type: '3.1', notes: ['POWER8 default CPU, no PHB hotplug, no DT update, spectre caps broken'] },
  { type: '3.0', notes: ['legacy IRQ allocation'] },
  { type: '2.12', notes: ['CPU and core pre-3.0-migration=on'] },
  { type: '2.12-sxxm', branch: true, notes: ['spectre caps workaround/fixed-ccd'] },
  {
    type: '2.11',
    set: { capHtm: true },
    source: `${SPAPR_C} spapr_machine_2_11_class_options: default_caps.caps[SPAPR_CAP_HTM] = SPAPR_CAP_ON`,
  },
  { type: '2.10' },
  { type: '2.9', notes: ['CPU pre-2.10-migration=on, unused ICPs, resize-hpt disabled'] },
  { type: '2.8', notes: ['PHB pcie-extended-configuration-space=off'] },
  {
    type: '2.7',
    set: { pre28Migration: true },
    source: `${SPAPR_C} spapr_machine_2_7_class_options: { TYPE_SPAPR_PCI_HOST_BRIDGE, "pre-2.8-migration", "on" }`,
    notes: ['PHB mem_win_size=0xf80000000 mem64_win_size=0, phb_placement_2_7, POWER7 default CPU'],
  },
  {
    type: '2.6',
    set: { ddw: false },
    source: `${SPAPR_C} spapr_machine_2_6_class_options: { TYPE_SPAPR_PCI_HOST_BRIDGE, "ddw", "off" }`,
    notes: ['no CPU hotplug'],
  },
  { type: '2.5', notes: ['spapr-vlan use-rx-buffer-pools=off, OHCI by default'] },
  { type: '2.4', notes: ['no memory hotplug (dr_lmb_enabled off)'] },
  { type: '2.3', notes: ['PHB dynamic-reconfiguration=off'] },
  { type: '2.2', notes: ['PHB mem_win_size=0x20000000'] },
  { type: '2.1' },
];

/** The chain from type `newest` down to type `oldest`, both included. */
function chainSlice(newest: string, oldest: string): CompatStep[] {
  const from = SPAPR_CHAIN.findIndex((s) => s.type === newest);
  const to = SPAPR_CHAIN.findIndex((s) => s.type === oldest);
  return SPAPR_CHAIN.slice(from, to + 1);
}

/** QEMU 7.1's DDW changes (2M bit, 64-bit query, reset on last remove, def_win) apply to every type. */
const QEMU_7_1_PLUS: QemuDdwBehaviour = {
  queryNret6: true,
  pgsize2M: true,
  resetOnLastRemove: true,
  extensions: [RTAS_IBM_RESET_PE_DMA_WINDOW, 1],
  largestBlock: 'fixed',
  migrationVersion: 3,
  defaultRam: 512n * MiB,
  machineCaps: true,
};

const MODERN_BASE: MachineCompat = {
  pgsz: PHB_PGSZ_4K_64K_2M_16M,
  ddw: true,
  pre28Migration: false,
  capHtm: false,
};

const MODERN_SOURCES = [
  'hw/ppc/spapr_pci.c properties: pgsz (1<<12)|(1<<16)|(1<<21)|(1<<24), ddw true, pre-2.8-migration false, dma_win_addr 0, dma_win_size 0x40000000, dma64_win_addr 0x800000000000000',
  'hw/ppc/spapr_rtas_ddw.c: query nret 5 or 6, 2M bit 0x100, reset after the last non-default window is removed (7.1, for every type)',
  'hw/ppc/spapr_pci.c spapr_dt_phb: ibm,ddw-extensions <2 0x2029 1> (7.1, for every type)',
  'hw/ppc/spapr_iommu.c vmstate_spapr_tce_table: version 3, minimum 2 (def_win, 7.1)',
  'hw/ppc/spapr.c spapr_machine_class_init: default_ram_size 512 MiB, caps[SPAPR_CAP_HTM] off',
  'hw/ppc/spapr_caps.c cap_htm_apply: under TCG "No Transactional Memory support in TCG", hint "Try appending -machine cap-htm=off"',
];

export const QEMU_VERSION_PRESETS: Readonly<Record<QemuVersion, QemuVersionPreset>> = {
  '10.0': {
    version: '10.0',
    alias: 'pseries-10.0',
    base: MODERN_BASE,
    chain: chainSlice('10.0', '3.0'),
    behaviour: QEMU_7_1_PLUS,
    deprecation: { major: 10, minor: 0 },
    sources: [
      ...MODERN_SOURCES,
      'hw/ppc/spapr.c: DEFINE_SPAPR_MACHINE_AS_LATEST(10, 0) .. DEFINE_SPAPR_MACHINE(3, 0); pseries-2.x removed',
      'include/hw/boards.h: MACHINE_VER_DEPRECATION_MAJOR 3, deprecated when (10 - major) > 3 or (== 3 and minor <= 0); deletion disabled until 10.1',
      'system/vl.c: warn "Machine type \'%s\' is deprecated: %s"',
    ],
  },
  '7.2': {
    version: '7.2',
    alias: 'pseries-7.2',
    base: MODERN_BASE,
    chain: chainSlice('7.2', '2.1'),
    behaviour: QEMU_7_1_PLUS,
    sources: [
      ...MODERN_SOURCES,
      'hw/ppc/spapr.c: DEFINE_SPAPR_MACHINE(7_2, "7.2", true) .. DEFINE_SPAPR_MACHINE(2_1, "2.1", false); no type deprecated',
    ],
  },
  '2.7': {
    version: '2.7',
    alias: 'pseries-2.7',
    base: { pgsz: PHB_PGSZ_4K_64K, ddw: true, pre28Migration: true, capHtm: false },
    chain: [
      { type: '2.7' },
      {
        type: '2.6',
        set: { ddw: false },
        source: `${SPAPR_C} SPAPR_COMPAT_2_6 (2.7): spapr-pci-host-bridge ddw=off`,
      },
      { type: '2.5' },
      { type: '2.4' },
      { type: '2.3' },
      { type: '2.2' },
      { type: '2.1' },
    ],
    behaviour: {
      queryNret6: false,
      pgsize2M: false,
      resetOnLastRemove: false,
      extensions: [RTAS_IBM_RESET_PE_DMA_WINDOW],
      largestBlock: 'max-ram',
      migrationVersion: 2,
      defaultRam: 512n * MiB,
      machineCaps: false,
    },
    sources: [
      'the original DDW patchset (ae4de14cd3, QEMU 2.7): pgsz 0x11000, query nret 5 with (uint32)(max RAM >> 12), ibm,ddw-extensions <1 0x2029>, spapr_iommu version 2, spapr_pci LIOBN equality check',
    ],
  },
};

/** Whether QEMU `version` deprecates machine type `type` ("3.1", "2.12-sxxm"). */
function isDeprecated(preset: QemuVersionPreset, type: string): boolean {
  const rule = preset.deprecation;
  if (!rule) return false;
  const [major, minor] = type.split(/[.-]/).map(Number) as [number, number];
  const age = rule.major - major;
  return age > 3 || (age === 3 && rule.minor - minor >= 0);
}

/** QEMU's deprecation reason for versioned machine types (include/hw/boards.h). */
export const MACHINE_VER_DEPRECATION_MSG =
  'machines more than 3 years old are subject to deletion after 6 years';

const folded = new Map<QemuVersion, readonly PseriesMachineType[]>();

/** The machine types QEMU `version` offers, newest first: each the newer one's options plus its own compat. */
export function machineTypesOf(version: QemuVersion): readonly PseriesMachineType[] {
  const cached = folded.get(version);
  if (cached) return cached;
  const preset = QEMU_VERSION_PRESETS[version];
  const b = preset.behaviour;
  const types: PseriesMachineType[] = [];
  let compat = preset.base;
  let applied: CompatStep[] = [];
  for (const step of preset.chain) {
    const own = { ...compat, ...step.set };
    const steps = [...applied, step];
    const name = `pseries-${step.type}`;
    const deprecated = isDeprecated(preset, step.type);
    types.push({
      name,
      description: describe(preset, step.type, deprecated),
      qemuVersion: version,
      deprecated,
      ...(deprecated ? { deprecationReason: MACHINE_VER_DEPRECATION_MSG } : {}),
      phbDefaults: { ...QEMU_7_2_PHB_DEFAULTS, pgsz: own.pgsz, ddw: own.ddw },
      ddw: {
        queryNret6: b.queryNret6,
        pgsize2M: b.pgsize2M,
        resetOnLastRemove: b.resetOnLastRemove,
        extensions: b.extensions,
        largestBlock: b.largestBlock,
      },
      pre28Migration: own.pre28Migration,
      ...(b.machineCaps ? { capHtm: own.capHtm } : {}),
      migrationVersion: b.migrationVersion,
      defaultRam: b.defaultRam,
      compat: steps.slice().reverse(),
    });
    if (!step.branch) {
      compat = own;
      applied = steps;
    }
  }
  const frozen = Object.freeze(types);
  folded.set(version, frozen);
  return frozen;
}

function describe(preset: QemuVersionPreset, type: string, deprecated: boolean): string {
  if (preset.version === '2.7' && type === '2.7') return 'QEMU 2.7 pseries: the original DDW patchset';
  if (`pseries-${type}` === preset.alias) return `QEMU ${preset.version} pseries (default)`;
  return `QEMU ${preset.version}'s pseries-${type} compat machine${deprecated ? ' (deprecated)' : ''}`;
}

/** The warning QEMU prints when it starts a deprecated machine type (without QEMU's "warning: " prefix). */
export function deprecationWarning(type: PseriesMachineType): string | undefined {
  return type.deprecated ? `Machine type '${type.name}' is deprecated: ${type.deprecationReason}` : undefined;
}

/** A device-tree cell as dtc source writes small numbers and tokens. */
const cell = (v: number) => (v < 16 ? String(v) : formatHex(v));

/**
 * The machine types of `version` (default: every version, newest first) as Markdown tables, one
 * row per type, computed from the model: the README's table is this function's output.
 */
export function renderMachineTypeTable(version?: QemuVersion): string {
  const versions = version ? [version] : [...QEMU_VERSIONS];
  return versions.map(renderVersion).join('\n');
}

function renderVersion(version: QemuVersion): string {
  const preset = QEMU_VERSION_PRESETS[version];
  const types = machineTypesOf(version);
  const b = preset.behaviour;
  const header = [
    'machine type',
    'deprecated',
    'pgsz',
    'query mask',
    'DDW',
    'ibm,ddw-extensions',
    'query nret 6',
    'reset on last remove',
    'largest block',
    'pre-2.8-migration',
    'cap-htm',
    'spapr_iommu version',
  ];
  const rows = types.map((t) => [
    t.name === preset.alias ? `${t.name} (\`pseries\`)` : t.name,
    t.deprecated ? 'yes' : '',
    formatHex(t.phbDefaults.pgsz),
    ...(t.phbDefaults.ddw
      ? [
          formatHex(pageMaskToQueryMask(t.phbDefaults.pgsz, t.ddw.pgsize2M)),
          'yes',
          `<${[t.ddw.extensions.length, ...t.ddw.extensions].map(cell).join(' ')}>`,
          t.ddw.queryNret6 ? 'yes' : 'no',
          t.ddw.resetOnLastRemove ? 'yes' : 'no',
          t.ddw.largestBlock === 'fixed' ? '0x80000000' : 'max RAM >> 12',
        ]
      : ['-', 'no', '-', '-', '-', '-']),
    t.pre28Migration ? 'on' : 'off',
    t.capHtm === undefined ? '-' : t.capHtm ? 'on' : 'off',
    String(t.migrationVersion),
  ]);
  const d = QEMU_7_2_PHB_DEFAULTS;
  return [
    `### QEMU ${version} (\`pseries\` = ${preset.alias})`,
    '',
    `Every type: default RAM ${b.defaultRam / MiB} MiB, default window ${formatHex(d.dma_win_size)} bytes at ${formatHex(d.dma_win_addr)}, second window at ${formatHex(d.dma64_win_addr)}.`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
  ].join('\n');
}
