import {
  type MachineEventBus,
  type VarraySource,
  type VarrayView,
  VMState,
  type VMStateDescription,
  type VMStateLoaded,
  type VmstateRegistry,
} from '@ddw/machine';
import { type AddressSpace, formatHex, RunTable, UINT64_SPAN } from '@ddw/memory';
import { SpaprTceTables } from './tables.js';
import type { SpaprIommuTraces, SpaprTceTable } from './tce-table.js';

/** The default window's geometry: the "spapr_iommu_ex" subsection is sent only for another one. */
const DEFAULT_BUS_OFFSET = 0n;
const DEFAULT_PAGE_SHIFT = 12;

/**
 * What the "spapr_iommu" section saves from and checks against: the table's own fields, plus the
 * migration temporaries mig_nb_table / mig_table that pre_save fills (QEMU's SpaprTceTable).
 */
export class TceTableMigration {
  mig_nb_table = 0;
  /** Aliases the live entries while saving (no copy), as QEMU's pre_save. */
  mig_table: VarraySource | null = null;

  constructor(readonly table: SpaprTceTable) {}

  get liobn(): number {
    return this.table.liobn;
  }
  get bypass(): boolean {
    return this.table.bypass;
  }
  get def_win(): boolean {
    return this.table.defWin;
  }
  get bus_offset(): bigint {
    return this.table.busOffset;
  }
  get page_shift(): number {
    return this.table.pageShift;
  }
}

/** What validate() works out, so that post_load only applies. */
interface PreparedTce {
  nb: number;
  busOffset: bigint;
  pageShift: number;
  entries: RunTable | null;
}

/**
 * The "spapr_iommu" section (hw/ppc/spapr_iommu.c, vmstate_spapr_tce_table), instance id = LIOBN,
 * as QEMU 7.2 writes it (version 3, minimum 2) or, with `version` 2, as QEMU 2.7 did (no def_win):
 *   liobn (u32, must be equal), mig_nb_table (u32), bypass (bool),
 *   mig_table (VARRAY_UINT32_ALLOC of u64, mig_nb_table elements), def_win (bool, v3)
 *   subsection "spapr_iommu_ex" v1: bus_offset (u64), page_shift (u32), sent only when the window
 *   is not at bus 0 with 4 KiB pages.
 */
export function spaprIommuVmstate(version: 2 | 3 = 3): VMStateDescription<TceTableMigration, PreparedTce> {
  return {
    name: 'spapr_iommu',
    version,
    minimumVersion: 2,
    fields: [
      VMState.uint32('liobn', { equal: true }),
      VMState.uint32('mig_nb_table'),
      VMState.bool('bypass'),
      VMState.varrayUint32Alloc('mig_table', 'mig_nb_table', 'uint64'),
      VMState.bool('def_win', { version: 3 }),
    ],
    subsections: [
      {
        name: 'spapr_iommu_ex',
        version: 1,
        fields: [VMState.uint64('bus_offset'), VMState.uint32('page_shift')],
        needed: (o) => o.bus_offset !== DEFAULT_BUS_OFFSET || o.page_shift !== DEFAULT_PAGE_SHIFT,
      },
    ],

    preSave(o) {
      const t = o.table;
      const storage = t.storage;
      o.mig_nb_table = t.nbTable;
      // The live entries, by runs: a direct window's progression is saved as a few records.
      o.mig_table =
        storage === null
          ? null
          : {
              length: storage.entries,
              forEachNonZero: (fn) => storage.forEachNonZero(fn),
              forEachRun: (fn) => storage.forEachRun(fn),
              forEachSpan: (onRun, onSlots) => storage.forEachSpan(onRun, onSlots),
            };
      const trace = t.traces.preSave;
      if (trace.enabled) trace.emit(t.liobn, o.mig_nb_table, t.busOffset, t.pageShift);
    },

    postSave(o) {
      o.mig_table = null;
    },

    validate(_o, loaded) {
      return prepare(loaded);
    },

    postLoad(o, loaded, prepared) {
      const t = o.table;
      const oldNb = t.nbTable;
      // No VIO device in ddw applies bypass; the value is kept, as QEMU keeps it in the table.
      t.bypass = loaded.fields.bypass as boolean;
      if (loaded.version >= 3) t.defWin = loaded.fields.def_win as boolean;
      const { nb, busOffset, pageShift, entries } = prepared;
      // QEMU disables only when the size differs; a window of the same size elsewhere or with other
      // pages would keep its old region while its fields changed (reference 4.1's quirk), so ddw
      // re-creates it at the incoming geometry.
      const moved = nb !== 0 && (t.busOffset !== busOffset || t.pageShift !== pageShift);
      if (nb !== t.nbTable || moved) t.disable();
      if (nb !== 0 && entries !== null) {
        // A window that appears gets its entries before its region does (VFIO replays them); one
        // that stays gets them with a notification per changed entry.
        if (!t.enabled) t.enable(pageShift, busOffset, nb, entries);
        else t.replaceEntries(entries);
      }
      const trace = t.traces.postLoad;
      if (trace.enabled) trace.emit(t.liobn, oldNb, t.nbTable, t.busOffset, t.pageShift);
    },
  };
}

/**
 * Works out the window a loaded section describes and builds its entries, refusing what the table
 * could not become. Without the subsection the window is the default geometry (bus 0, 4 KiB
 * pages): that is what the subsection's absence means. QEMU instead enables with the destination
 * table's own fields, which for a disabled table gives page_shift 0 (reference 4.1's quirk).
 */
function prepare(loaded: VMStateLoaded): PreparedTce {
  const nb = loaded.fields.mig_nb_table as number;
  const ex = loaded.subsections.spapr_iommu_ex;
  const busOffset = ex ? (ex.bus_offset as bigint) : DEFAULT_BUS_OFFSET;
  const pageShift = ex ? (ex.page_shift as number) : DEFAULT_PAGE_SHIFT;
  if (nb === 0) return { nb, busOffset, pageShift, entries: null };
  if (pageShift >= 64) throw new Error(`the window's page shift ${pageShift} is 64 or more`);
  const size = BigInt(nb) << BigInt(pageShift);
  if (busOffset + size > UINT64_SPAN) {
    throw new Error(
      `the window of ${formatHex(nb)} pages of 2^${pageShift} bytes at ${formatHex(busOffset)} ends beyond 2^64`,
    );
  }
  const table = loaded.fields.mig_table as VarrayView;
  const entries = new RunTable(nb);
  table.forEachStored(
    (first, count, high, low, stride) => entries.setRun(first, count, high, low, stride),
    (first, count, view, byteOffset) => entries.setList(first, count, view, byteOffset),
  );
  return { nb, busOffset, pageShift, entries };
}

/**
 * The machine's TCE tables, each registering its "spapr_iommu" section when created (QEMU does it
 * in the table's realize) and unregistering it when deleted.
 */
export class MigratingTceTables extends SpaprTceTables {
  readonly #vmstate: VmstateRegistry;
  readonly #description: VMStateDescription<TceTableMigration, PreparedTce>;
  readonly #unregister = new Map<SpaprTceTable, () => void>();

  constructor(
    targetAs: AddressSpace,
    traces: SpaprIommuTraces,
    events: MachineEventBus,
    kvm: boolean,
    vmstate: VmstateRegistry,
    migrationVersion: 2 | 3,
    readonly owner: string,
  ) {
    super(targetAs, traces, events, kvm);
    this.#vmstate = vmstate;
    this.#description = spaprIommuVmstate(migrationVersion);
  }

  override create(liobn: number, owner: string): SpaprTceTable {
    const table = super.create(liobn, owner);
    this.#unregister.set(
      table,
      this.#vmstate.register(this.#description, liobn, new TceTableMigration(table), this.owner),
    );
    return table;
  }

  override delete(table: SpaprTceTable): void {
    super.delete(table);
    this.#unregister.get(table)?.();
    this.#unregister.delete(table);
  }
}
