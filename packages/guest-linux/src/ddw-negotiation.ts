/**
 * enable_ddw as each kernel generation runs it, on the steps of ddw-steps.ts: 6.12 (Debian's
 * 6.12.y), 6.1 and 4.x side by side, and 6.12's query at PCI device setup.
 */
import { formatHex } from '@ddw/machine';
import type { DmaWindowInfo, PciFunction } from './api.js';
import { DdwFailure } from './ddw-failure.js';
import { type DdwContext, DdwSteps } from './ddw-steps.js';
import { cellHex } from './device-tree.js';
import type { IommuTable } from './iommu-table.js';
import type { QueryRecord } from './negotiation-record.js';
import type { PeState, PeWindow } from './pe.js';
import { orderBase2 } from './ram.js';
import { DIRECT64_PROP, DMA64_PROP, windowInfoProperty } from './window-info.js';
import { blockShiftOf, firstPageShift4x, largestPageShift, sizeWindow } from './window-sizing.js';
import { clearWindow, dynamicWindowTable, populateDirectWindow } from './window-tces.js';

/** What one enable_ddw call returns, and the limited-address flags 6.12 prints with it. */
export interface EnableDdwResult {
  direct: boolean;
  lsaRequired: boolean;
  lsaEnabled: boolean;
}

/** Numbers the PEs in the order they got their window (PeState.windowSeq). */
let windowCounter = 0;

/**
 * One run of enable_ddw for a PE, on behalf of the function whose driver set a 64-bit mask.
 * Fills the PE's window (or its failed flag) and its decision record.
 */
export class DdwNegotiation {
  constructor(
    private readonly ctx: DdwContext,
    private readonly pe: PeState,
    private readonly fn: PciFunction,
    /** The DMA mask the driver set, in bits. */
    private readonly maskBits = 64,
  ) {}

  run(): EnableDdwResult {
    const { ctx, pe } = this;
    const steps = new DdwSteps(ctx, pe, this.fn, this.maskBits);
    pe.negotiated = true;
    pe.negotiation = steps.record;
    try {
      if (ctx.generation === 'linux-4.x') enableDdw4x(steps);
      else if (ctx.generation === 'linux-6.12') enableDdw612(steps);
      else enableDdw61(steps);
    } catch (error) {
      if (!(error instanceof DdwFailure)) throw error;
      steps.record.failure = error.why;
      steps.reason(error.message);
      if (steps.defaultRemoved || steps.lsaEnabled) steps.resetWindows();
      pe.failed = true;
      pe.decision.outcome = 'failed';
      steps.log(`DDW failed (${error.message}); using the default DMA window`);
    }
    return {
      direct: ctx.generation === 'linux-6.12' ? steps.directMapping : pe.window?.direct === true,
      lsaRequired: steps.lsaRequired,
      lsaEnabled: steps.lsaEnabled,
    };
  }

  /**
   * 6.12's spapr_tce_init_table_group at PCI device setup, for the first function of a PE: the
   * PE's tokens and one query (its result only sizes the VFIO-facing table group). Runs before
   * any driver and whatever disable_ddw says; nothing is created and nothing fails the PE, and
   * the PE keeps no negotiation record of it.
   */
  initTableGroup(): void {
    const pe = this.pe;
    if (pe.maxDynamicWindows !== 0) return;
    const steps = new DdwSteps(this.ctx, pe, this.fn, this.maskBits);
    if (!this.ctx.tree.getProp(pe.node, 'ibm,dma-window')) steps.log('default dma window missing!');
    if (!steps.readTokens()) {
      pe.maxDynamicWindows = -1;
      return;
    }
    steps.readExtensions();
    try {
      const q = steps.query();
      pe.maxDynamicWindows = q.windowsAvailable === 0 ? 1 : 2;
      steps.reason(`PCI device setup queried the PE: ${pe.maxDynamicWindows} dynamic window(s) for VFIO`);
    } catch (error) {
      if (!(error instanceof DdwFailure)) throw error;
      steps.log('spapr_tce_init_table_group: query_ddw failed');
      pe.maxDynamicWindows = -1;
    }
  }
}

/**
 * Linux 6.12 (Debian's 6.12.y): like 6.1, but the window covers ibm,lrdr-capacity alone,
 * masks of 33-63 bits ask for limited-address mode and cap the window, the default window is
 * saved as ibm,dma-window-saved, and the window is populated only up to the hotplug maximum.
 */
function enableDdw612(steps: DdwSteps): void {
  const { ctx, pe, fn, maskBits } = steps;
  steps.requireTokens();
  steps.readExtensions();
  const first = steps.query();
  steps.lsaRequired = maskBits < 64;
  if (steps.lsaRequired) steps.enterLimitedAddressMode();
  const query = withFreeWindow(steps, first);
  const pageShift = largestOfferedPageShift(steps, query.pageMask);
  const sizing = sizeWindow('lrdr-capacity', ctx.ddwMax, query.largestBlock, pageShift, maskBits);
  steps.record.sizing = sizing;
  const { dynamic, windowShift: len } = sizing;
  if (dynamic) {
    steps.reason(
      `largest block ${formatHex(query.largestBlock)} x 2^${pageShift} (capped to the ${maskBits}-bit mask) ` +
        `covers 2^${len} bytes, less than the 2^${sizing.ramShift} RAM needs: dynamic window of 2^${len}`,
    );
  } else {
    // No persistent memory is modelled, so a window that covers RAM is always direct.
    steps.directMapping = true;
    steps.reason(
      `ibm,lrdr-capacity ${formatHex(ctx.ddwMax)} (the hotplug maximum alone): direct window of 2^${len}`,
    );
  }
  const info = steps.create(pageShift, len);
  const propName = dynamic ? DMA64_PROP : DIRECT64_PROP;
  ctx.tree.setProp(pe.node, propName, windowInfoProperty(info));
  let table: IommuTable | undefined;
  if (!dynamic) {
    const rc = populateDirectWindow(ctx.tce, ctx.pageSize, ctx.ram, info, ctx.ddwMax);
    if (rc !== 0n)
      undoDirectWindow(steps, info, propName, rc, `failed to map DMA window for ${fn.node}: ${rc}`);
    if (steps.defaultRemoved) pe.defaultTable = undefined;
  } else {
    table = dynamicTable(steps, info);
    if (steps.defaultRemoved) pe.defaultTable = undefined;
  }
  if (steps.defaultRemoved) {
    const saved = ctx.tree.getProp(pe.node, 'ibm,dma-window');
    if (saved && !ctx.tree.getProp(pe.node, 'ibm,dma-window-saved')) {
      ctx.tree.setProp(pe.node, 'ibm,dma-window-saved', saved);
    }
    ctx.tree.removeProp(pe.node, 'ibm,dma-window');
    steps.log(`Removed default DMA window for ${pe.node}`);
  }
  succeed(steps, { info, direct: !dynamic, table, propName, owner: dynamic ? fn.node : undefined });
}

/** Linux 6.1: dynamic windows, default-window removal, nret 6, the 2M page size. */
function enableDdw61(steps: DdwSteps): void {
  const { ctx, pe, fn } = steps;
  steps.requireTokens();
  steps.readExtensions();
  const query = withFreeWindow(steps, steps.query());
  const pageShift = largestOfferedPageShift(steps, query.pageMask);
  const sizing = sizeWindow('ram', ctx.ram.maxAddress, query.largestBlock, pageShift);
  steps.record.sizing = sizing;
  const { dynamic, windowShift: len } = sizing;
  if (dynamic) {
    steps.reason(
      `largest block ${formatHex(query.largestBlock)} x 2^${pageShift} covers 2^${len} bytes, less than ` +
        `the 2^${sizing.ramShift} RAM needs: dynamic window of 2^${len}`,
    );
  } else {
    steps.reason(`RAM up to ${formatHex(ctx.ram.maxAddress)}: direct window of 2^${len}`);
  }
  const info = steps.create(pageShift, len);
  const propName = dynamic ? DMA64_PROP : DIRECT64_PROP;
  ctx.tree.setProp(pe.node, propName, windowInfoProperty(info));
  let table: IommuTable | undefined;
  if (!dynamic) {
    const rc = populateDirectWindow(ctx.tce, ctx.pageSize, ctx.ram, info);
    if (rc !== 0n)
      undoDirectWindow(steps, info, propName, rc, `failed to map DMA window ${formatHex(info.liobn)}: ${rc}`);
  } else {
    table = dynamicTable(steps, info);
  }
  if (steps.defaultRemoved) {
    ctx.tree.removeProp(pe.node, 'ibm,dma-window');
    pe.defaultTable = undefined;
    steps.log(`Removed default DMA window for ${pe.node}`);
  }
  succeed(steps, { info, direct: !dynamic, table, propName, owner: dynamic ? fn.node : undefined });
}

/** Linux 4.x (2016-2020): nret 5, 16M/64K/4K, a direct window or nothing. */
function enableDdw4x(steps: DdwSteps): void {
  const { ctx, pe } = steps;
  steps.requireTokens();
  const query = steps.query();
  if (query.windowsAvailable === 0)
    throw new DdwFailure('no free dynamic windows', { kind: 'no-window', why: 'no-removal' });
  const pageShift = firstPageShift4x(query.pageMask);
  if (pageShift === undefined) {
    throw new DdwFailure(`no page size this kernel knows in mask ${formatHex(query.pageMask)}`, {
      kind: 'page-size',
      mask: query.pageMask,
    });
  }
  steps.record.pageShift = pageShift;
  steps.reason(`page size 2^${pageShift}: the first of 16M, 64K, 4K in mask ${formatHex(query.pageMask)}`);
  const maxAddr = ctx.ram.maxAddress;
  if (query.largestBlock < maxAddr >> BigInt(pageShift)) {
    throw new DdwFailure(
      `largest block ${formatHex(query.largestBlock)} is smaller than the ${formatHex(maxAddr >> BigInt(pageShift))} TCEs RAM needs`,
      {
        kind: 'block-too-small',
        block: query.largestBlock,
        needed: maxAddr >> BigInt(pageShift),
        pageShift,
        maxAddress: maxAddr,
      },
    );
  }
  // 4.x maps all RAM or nothing: the window is as large as RAM whatever the block's size.
  const len = orderBase2(maxAddr);
  steps.record.sizing = {
    basis: 'ram',
    maxAddress: maxAddr,
    ramShift: len,
    blockShift: blockShiftOf(query.largestBlock, pageShift),
    windowShift: len,
    dynamic: false,
  };
  steps.reason(`RAM up to ${formatHex(maxAddr)}: direct window of 2^${len}`);
  const info = steps.create(pageShift, len);
  const rc = populateDirectWindow(ctx.tce, ctx.pageSize, ctx.ram, info);
  if (rc !== 0n) {
    // These kernels look for the window's property to undo it, and it is not there yet: the
    // window stays mapped and created.
    steps.reason(`populating the window failed with ${rc}; the window is left in place (not removed)`);
    steps.log(`failed to map DMA window ${formatHex(info.liobn)}: ${rc}`);
    throw new DdwFailure('populate failed', { kind: 'populate', rc });
  }
  ctx.tree.setProp(pe.node, DIRECT64_PROP, windowInfoProperty(info));
  succeed(steps, { info, direct: true, table: undefined, propName: DIRECT64_PROP, owner: undefined });
}

/**
 * 6.x: the query's answer once a window is free: with none, the default window is removed and
 * the PE queried again; still none is a failure.
 */
function withFreeWindow(steps: DdwSteps, query: QueryRecord): QueryRecord {
  if (query.windowsAvailable !== 0) return query;
  steps.removeDefaultWindow();
  const again = steps.query();
  if (again.windowsAvailable === 0)
    throw new DdwFailure('still no window available after removing the default one', {
      kind: 'no-window',
      why: 'still-none',
    });
  return again;
}

/** 6.x's choice: the largest page size the mask offers. */
function largestOfferedPageShift(steps: DdwSteps, mask: number): number {
  const best = largestPageShift(mask);
  if (best === undefined) {
    throw new DdwFailure(`no page size this kernel knows in mask 0x${cellHex(mask)}`, {
      kind: 'page-size',
      mask,
    });
  }
  steps.record.pageShift = best;
  steps.reason(`page size 2^${best}: the largest in mask 0x${cellHex(mask)}`);
  return best;
}

/** 6.x: a direct window RAM could not be mapped into is cleared, removed and forgotten. */
function undoDirectWindow(
  steps: DdwSteps,
  info: DmaWindowInfo,
  propName: string,
  rc: bigint,
  dmesg: string,
): never {
  const ctx = steps.ctx;
  steps.reason(`populating the window failed with ${rc}: clearing and removing it`);
  steps.log(dmesg);
  clearWindow(ctx.tce, ctx.pageSize, info);
  steps.removeWindow(info.liobn);
  ctx.tree.removeProp(steps.pe.node, propName);
  throw new DdwFailure('populate failed', { kind: 'populate', rc });
}

/** A dynamic window's table, and the decision's line about it. */
function dynamicTable(steps: DdwSteps, info: DmaWindowInfo): IommuTable {
  const table = dynamicWindowTable(steps.ctx.tce, info);
  steps.reason(
    `dynamic window: ${table.size} entries of page size 2^${info.pageShift}, mapped per DMA request`,
  );
  return table;
}

/** The PE got its window: the decision's outcome, and its place in the order windows were made. */
function succeed(steps: DdwSteps, window: PeWindow): void {
  const pe = steps.pe;
  pe.window = window;
  pe.windowSeq = ++windowCounter;
  pe.decision.outcome = window.direct ? 'direct' : 'dynamic';
  pe.decision.window = window.info;
  pe.decision.defaultWindowRemoved = steps.defaultRemoved;
}
