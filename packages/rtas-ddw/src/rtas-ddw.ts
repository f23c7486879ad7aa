import {
  definePlugin,
  formatHex,
  MachineTokens,
  RTAS_IBM_CREATE_PE_DMA_WINDOW,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
  RTAS_IBM_REMOVE_PE_DMA_WINDOW,
  RTAS_IBM_RESET_PE_DMA_WINDOW,
  RTAS_OUT_HW_ERROR,
  RTAS_OUT_PARAM_ERROR,
  RTAS_OUT_SUCCESS,
  type RtasCall,
  type ServiceGetter,
  token,
} from '@ddw/machine';
import { SpaprIommuTokens } from '@ddw/spapr-iommu';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import { pageMaskToQueryMask } from './query-mask.js';

/** hw/ppc/trace-events (QEMU 7.2) for spapr_rtas_ddw.c. */
export const RTAS_DDW_TRACE_EVENTS = `
spapr_iommu_ddw_query(uint64_t buid, uint32_t cfgaddr, unsigned wa, uint64_t win_size, uint32_t pgmask) "buid=0x%"PRIx64" addr=0x%"PRIx32", %u windows available, max window size=0x%"PRIx64", mask=0x%"PRIx32
spapr_iommu_ddw_create(uint64_t buid, uint32_t cfgaddr, uint64_t pg_size, uint64_t req_size, uint64_t start, uint32_t liobn) "buid=0x%"PRIx64" addr=0x%"PRIx32", page size=0x%"PRIx64", requested=0x%"PRIx64", start addr=0x%"PRIx64", liobn=0x%"PRIx32
spapr_iommu_ddw_remove(uint32_t liobn) "liobn=0x%"PRIx32
spapr_iommu_ddw_reset(uint64_t buid, uint32_t cfgaddr) "buid=0x%"PRIx64" addr=0x%"PRIx32
`;

/** What the DDW calls do differently from one machine type to another. */
export interface RtasDdwCompat {
  /** Query accepts nret 6 and returns the largest block as a 64-bit count (QEMU 7.1+). */
  queryNret6: boolean;
  /** The 2M page size has a query bit (0x100) (QEMU 7.1+). */
  pgsize2M: boolean;
  /** Removing the last window, when it was not the default one, restores the default (QEMU 7.1+). */
  resetOnLastRemove: boolean;
  /**
   * The largest block the query reports: QEMU 4.0+ says 0x80000000 TCEs whatever the RAM; QEMU 2.7
   * said (uint32)(maximum RAM address >> 12), printing that address in its trace.
   */
  largestBlock: { kind: 'fixed' } | { kind: 'max-ram'; maxRamAddress: bigint };
}

export const QEMU_7_2_DDW: RtasDdwCompat = {
  queryNret6: true,
  pgsize2M: true,
  resetOnLastRemove: true,
  largestBlock: { kind: 'fixed' },
};

/** The RTAS tokens of the four DDW calls, as registered. */
export interface RtasDdwCalls {
  readonly query: number;
  readonly create: number;
  readonly remove: number;
  readonly reset: number;
}

export const RtasDdwTokens = {
  /** The DDW calls, registered on the machine's RTAS table when the machine is assembled. */
  Calls: token<RtasDdwCalls>('rtas-ddw', 'Calls'),
} as const;

/** 2^37 TCEs: the 64-bit largest block QEMU 7.1+ reports with nret 6 (cells 0x20, 0x0). */
const LARGEST_BLOCK_64 = 0x2000000000n;

/**
 * ibm,query-pe-dma-window, ibm,create-pe-dma-window, ibm,remove-pe-dma-window and
 * ibm,reset-pe-dma-window (hw/ppc/spapr_rtas_ddw.c): the checks in QEMU's order, its return codes
 * and its trace lines. Every error path writes only the status cell.
 */
export const rtasDdw = definePlugin((options: { compat?: RtasDdwCompat } = {}) => ({
  name: 'rtas-ddw',
  requires: ['spapr-iommu', 'spapr-pci'],
  register(ctx) {
    const compat = options.compat ?? QEMU_7_2_DDW;
    ctx.provide(RtasDdwTokens.Calls, { useFactory: (get) => registerDdwCalls(get, compat, ctx.plugin) });
  },
}));

/** The four calls on the machine's RTAS table, served from its PHBs and TCE tables; returns their tokens. */
function registerDdwCalls(get: ServiceGetter, compat: RtasDdwCompat, owner: string): RtasDdwCalls {
  const phbs = get(SpaprPciTokens.Phbs);
  const tables = get(SpaprIommuTokens.Tables);
  const rtas = get(MachineTokens.Rtas);
  const events = get(MachineTokens.Events);
  const ev = new Map(
    get(MachineTokens.Trace)
      .defineAll(RTAS_DDW_TRACE_EVENTS, 'spapr_iommu')
      .map((e) => [e.name, e]),
  );
  const traceQuery = ev.get('spapr_iommu_ddw_query')!;
  const traceCreate = ev.get('spapr_iommu_ddw_create')!;
  const traceRemove = ev.get('spapr_iommu_ddw_remove')!;
  const traceReset = ev.get('spapr_iommu_ddw_reset')!;

  const buidOf = (call: RtasCall) => (BigInt(call.args[1]!) << 32n) | BigInt(call.args[2]!);
  /** The PHB a DDW call names, if it exists and offers DDW. */
  const ddwPhb = (call: RtasCall): SpaprPhb | undefined => {
    const phb = phbs.byBuid(buidOf(call));
    return phb?.props.ddw ? phb : undefined;
  };
  const fail = (call: RtasCall, status: number) => call.setRet(0, status);

  rtas.register(
    'ibm,query-pe-dma-window',
    (call) => {
      const nretOk = call.nret === 5 || (compat.queryNret6 && call.nret === 6);
      if (call.nargs !== 3 || !nretOk) return fail(call, RTAS_OUT_PARAM_ERROR);
      const phb = ddwPhb(call);
      if (!phb) return fail(call, RTAS_OUT_PARAM_ERROR);
      const cfgaddr = call.args[0]!;
      const pgmask = pageMaskToQueryMask(phb.props.pgsz, compat.pgsize2M);
      const avail = phb.windowsSupported - phb.activeWindows();
      let traced: bigint;
      call.setRet(0, RTAS_OUT_SUCCESS);
      call.setRet(1, avail);
      if (call.nret === 6) {
        call.setRet(2, Number(LARGEST_BLOCK_64 >> 32n));
        call.setRet(3, Number(LARGEST_BLOCK_64 & 0xffffffffn));
        call.setRet(4, pgmask);
        call.setRet(5, 0);
        traced = 0x80000000n; // QEMU keeps printing the 32-bit figure
      } else {
        const block =
          compat.largestBlock.kind === 'fixed'
            ? 0x80000000
            : Number(BigInt.asUintN(32, compat.largestBlock.maxRamAddress >> 12n));
        traced = compat.largestBlock.kind === 'fixed' ? 0x80000000n : compat.largestBlock.maxRamAddress;
        call.setRet(2, block);
        call.setRet(3, pgmask);
        call.setRet(4, 0); // DMA migration mask: not supported
      }
      if (traceQuery.enabled) traceQuery.emit(phb.buid, cfgaddr, avail, traced, pgmask);
    },
    { token: RTAS_IBM_QUERY_PE_DMA_WINDOW, owner },
  );

  rtas.register(
    'ibm,create-pe-dma-window',
    (call) => {
      if (call.nargs !== 5 || call.nret !== 4) return fail(call, RTAS_OUT_PARAM_ERROR);
      const phb = ddwPhb(call);
      if (!phb) return fail(call, RTAS_OUT_PARAM_ERROR);
      const cfgaddr = call.args[0]!;
      const pageShift = call.args[3]!;
      const windowShift = call.args[4]!;
      const liobn = phb.freeLiobn();
      const windows = phb.activeWindows();
      // A shift of 64 or more is undefined in C; ddw treats that page size as not offered.
      const offered = pageShift < 64 && ((phb.props.pgsz >> BigInt(pageShift)) & 1n) === 1n;
      if (!offered || windowShift < pageShift) return fail(call, RTAS_OUT_PARAM_ERROR);
      if (liobn === 0 || windows === phb.windowsSupported) return fail(call, RTAS_OUT_HW_ERROR);
      const table = tables.get(liobn);
      if (!table) return fail(call, RTAS_OUT_HW_ERROR);
      // Chosen by how many windows are active, not by which LIOBN is free (reference 2.3 step 7).
      const winAddr = windows === 0 ? phb.props.dma_win_addr : phb.props.dma64_win_addr;
      // nb_table is a uint32 in QEMU: 2^32 entries or more truncate to 0 and the create fails.
      const diff = windowShift - pageShift;
      const nbTable = diff >= 32 ? 0 : 2 ** diff;
      table.skippingReplay = true;
      try {
        table.enable(pageShift, winAddr, nbTable);
      } finally {
        table.skippingReplay = false;
      }
      if (!table.enabled) return fail(call, RTAS_OUT_HW_ERROR);
      if (traceCreate.enabled) {
        traceCreate.emit(
          phb.buid,
          cfgaddr,
          1n << BigInt(pageShift),
          pow2u64(windowShift),
          table.busOffset,
          liobn,
        );
      }
      call.setRet(0, RTAS_OUT_SUCCESS);
      call.setRet(1, liobn);
      call.setRet(2, Number(table.busOffset >> 32n));
      call.setRet(3, Number(table.busOffset & 0xffffffffn));
    },
    { token: RTAS_IBM_CREATE_PE_DMA_WINDOW, owner },
  );

  rtas.register(
    'ibm,remove-pe-dma-window',
    (call) => {
      if (call.nargs !== 1 || call.nret !== 1) return fail(call, RTAS_OUT_PARAM_ERROR);
      const liobn = call.args[0]!;
      const table = tables.get(liobn);
      if (!table) return fail(call, RTAS_OUT_PARAM_ERROR);
      const phb = phbs.list.find((p) => p.tableFor(liobn) === table);
      if (!phb) {
        // QEMU's checked cast aborts for a VIO device's LIOBN; ddw answers PARAM_ERROR instead.
        events.guestError(
          'rtas-ddw',
          `ibm,remove-pe-dma-window: LIOBN ${formatHex(liobn)} is not a PHB window`,
        );
        return fail(call, RTAS_OUT_PARAM_ERROR);
      }
      if (!phb.props.ddw || !table.enabled) return fail(call, RTAS_OUT_PARAM_ERROR);
      table.disable();
      if (traceRemove.enabled) traceRemove.emit(liobn);
      if (compat.resetOnLastRemove && phb.activeWindows() === 0 && !table.defWin) {
        phb.dmaReset();
        if (traceReset.enabled) traceReset.emit(phb.buid, 0);
      }
      call.setRet(0, RTAS_OUT_SUCCESS);
    },
    { token: RTAS_IBM_REMOVE_PE_DMA_WINDOW, owner },
  );

  rtas.register(
    'ibm,reset-pe-dma-window',
    (call) => {
      if (call.nargs !== 3 || call.nret !== 1) return fail(call, RTAS_OUT_PARAM_ERROR);
      const phb = ddwPhb(call);
      if (!phb) return fail(call, RTAS_OUT_PARAM_ERROR);
      phb.dmaReset();
      if (traceReset.enabled) traceReset.emit(phb.buid, call.args[0]!);
      call.setRet(0, RTAS_OUT_SUCCESS);
    },
    { token: RTAS_IBM_RESET_PE_DMA_WINDOW, owner },
  );
  return {
    query: RTAS_IBM_QUERY_PE_DMA_WINDOW,
    create: RTAS_IBM_CREATE_PE_DMA_WINDOW,
    remove: RTAS_IBM_REMOVE_PE_DMA_WINDOW,
    reset: RTAS_IBM_RESET_PE_DMA_WINDOW,
  };
}

/** 1ULL << shift as QEMU's trace prints it; shifts of 64 and more print as 0 here. */
function pow2u64(shift: number): bigint {
  return shift >= 64 ? 0n : 1n << BigInt(shift);
}
