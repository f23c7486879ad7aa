import { formatPageShift, formatSize } from '@ddw/machine';
import type { DmaWindowInfo, LinuxGeneration, LinuxGuestPort, PciFunction } from './api.js';
import type { GuestTreeView } from './device-tree.js';
import { IommuTable } from './iommu-table.js';
import {
  type DdwFailureCause,
  DIRECT64_PROP,
  DMA64_PROP,
  type NegotiationRecord,
  type PeState,
  windowInfoProperty,
} from './pe.js';
import { orderBase2, type RamLayout } from './ram.js';
import type { TceCalls } from './tce.js';

/** What negotiation needs from the guest. */
export interface DdwContext {
  port: LinuxGuestPort;
  tree: GuestTreeView;
  tce: TceCalls;
  generation: LinuxGeneration;
  /** The guest's PAGE_SIZE. */
  pageSize: bigint;
  ram: RamLayout;
  /** What the generation's ddw_memory_hotplug_max() gives (see ddwMaxAddress). */
  ddwMax: bigint;
  /** A dmesg line for the function that set the mask. */
  log: (fn: PciFunction, line: string) => void;
  /** The function as dmesg names it ("e1000e 0000:00:00.0"); its node when not given. */
  name?: (fn: PciFunction) => string;
}

/** The bus range of a QEMU PHB's 32-bit MMIO window, which a dynamic window never hands out. */
export const MMIO32_BUS_START = 0x80000000n;
export const MMIO32_BUS_END = 0x100000000n;

/** Query page-size bits and the shifts they stand for (LoPAR order; 2M came last, as bit 8). */
const PAGE_BITS_61: readonly [number, number][] = [
  [0x1, 12],
  [0x2, 16],
  [0x4, 24],
  [0x8, 25],
  [0x10, 26],
  [0x20, 27],
  [0x40, 28],
  [0x80, 34],
  [0x100, 21],
];

/** RTAS statuses rtas_busy_delay() retries on: busy and the extended-delay range. */
function isBusy(status: number): boolean {
  return status === -2 || (status >= 9900 && status <= 9905);
}

/** A hypervisor that answers busy for ever would hang Linux; the model gives up after this many. */
const MAX_BUSY_RETRIES = 1000;

const ROLE = {
  query: 'ibm,query-pe-dma-windows',
  create: 'ibm,create-pe-dma-window',
  remove: 'ibm,remove-pe-dma-window',
  reset: 'ibm,reset-pe-dma-windows',
} as const;

interface Query {
  status: number;
  windowsAvailable: number;
  largestBlock: bigint;
  pageMask: number;
}

/** enable_ddw giving up: the reason line, and the step that failed for the summary. */
class Failure extends Error {
  constructor(
    message: string,
    readonly why: DdwFailureCause,
  ) {
    super(message);
  }
}

/** What one enable_ddw call returns, and the limited-address flags 6.12 prints with it. */
export interface EnableDdwResult {
  direct: boolean;
  lsaRequired: boolean;
  lsaEnabled: boolean;
}

/** Errnos 6.12 reports from reading ibm,ddw-extensions for limited-address mode. */
const EINVAL = -22;
const EOVERFLOW = -75;
const EPROTO = -71;

let windowCounter = 0;

/**
 * One run of enable_ddw for a PE, on behalf of the function whose driver set a 64-bit mask.
 * Fills the PE's window (or its failed flag) and its decision record.
 */
export class DdwNegotiation {
  private readonly hi: number;
  private readonly lo: number;
  private tokens: number[] = [];
  private ext: number[] | undefined;
  private defaultRemoved = false;
  /** 6.12: enable_ddw's direct_mapping, which it returns even when it fails after deciding it. */
  private directMapping = false;
  private lsaRequired = false;
  private lsaEnabled = false;
  /** What this run learnt and did (enable_ddw runs only; the PCI-setup query keeps none). */
  private record: NegotiationRecord | undefined;

  constructor(
    private readonly ctx: DdwContext,
    private readonly pe: PeState,
    private readonly fn: PciFunction,
    /** The DMA mask the driver set, in bits. */
    private readonly maskBits = 64,
  ) {
    this.hi = Number(pe.buid >> 32n);
    this.lo = Number(pe.buid & 0xffffffffn);
  }

  run(): EnableDdwResult {
    const pe = this.pe;
    pe.negotiated = true;
    this.record = { fn: this.ctx.name?.(this.fn) ?? this.fn.node, maskBits: this.maskBits, queries: [] };
    pe.negotiation = this.record;
    try {
      if (this.ctx.generation === 'linux-4.x') this.run4x();
      else if (this.ctx.generation === 'linux-6.12') this.run612();
      else this.run61();
    } catch (error) {
      if (!(error instanceof Failure)) throw error;
      this.record.failure = error.why;
      this.reason(error.message);
      if (this.defaultRemoved || this.lsaEnabled) this.resetWindows();
      pe.failed = true;
      pe.decision.outcome = 'failed';
      this.log(`DDW failed (${error.message}); using the default DMA window`);
    }
    return {
      direct: this.ctx.generation === 'linux-6.12' ? this.directMapping : pe.window?.direct === true,
      lsaRequired: this.lsaRequired,
      lsaEnabled: this.lsaEnabled,
    };
  }

  /**
   * 6.12's spapr_tce_init_table_group at PCI device setup, for the first function of a PE: the
   * PE's tokens and one query (its result only sizes the VFIO-facing table group). Runs before
   * any driver and whatever disable_ddw says; nothing is created and nothing fails the PE.
   */
  initTableGroup(): void {
    const pe = this.pe;
    if (pe.maxDynamicWindows !== 0) return;
    if (!this.ctx.tree.getProp(pe.node, 'ibm,dma-window')) this.log('default dma window missing!');
    const cells = this.ctx.tree.getCells(pe.node, 'ibm,ddw-applicable');
    if (!cells || cells.length < 3) {
      pe.maxDynamicWindows = -1;
      return;
    }
    this.tokens = cells.slice(0, 3);
    this.ext = this.ctx.tree.getCells(pe.node, 'ibm,ddw-extensions');
    try {
      const q = this.query();
      pe.maxDynamicWindows = q.windowsAvailable === 0 ? 1 : 2;
      this.reason(`PCI device setup queried the PE: ${pe.maxDynamicWindows} dynamic window(s) for VFIO`);
    } catch (error) {
      if (!(error instanceof Failure)) throw error;
      this.log('spapr_tce_init_table_group: query_ddw failed');
      pe.maxDynamicWindows = -1;
    }
  }

  /**
   * Linux 6.12 (Debian's 6.12.y): like 6.1, but the window covers ibm,lrdr-capacity alone,
   * masks of 33-63 bits ask for limited-address mode and cap the window, the default window is
   * saved as ibm,dma-window-saved, and the window is populated only up to the hotplug maximum.
   */
  private run612(): void {
    const ctx = this.ctx;
    this.readTokens();
    this.ext = ctx.tree.getCells(this.pe.node, 'ibm,ddw-extensions');
    const first = this.query();
    this.lsaRequired = this.maskBits < 64;
    if (this.lsaRequired) this.limitedAddressMode();
    const query = this.withFreeWindow(first);
    const pageShift = this.largestPageShift(query.pageMask);
    const maxRamLen = orderBase2(ctx.ddwMax);
    const blockShift = orderBase2(BigInt.asUintN(64, query.largestBlock << BigInt(pageShift)));
    const ddwSize = Math.min(blockShift, this.maskBits);
    let len = maxRamLen;
    const dynamic = ddwSize < len;
    this.sized('lrdr-capacity', ctx.ddwMax, maxRamLen, blockShift, dynamic ? ddwSize : len, dynamic);
    if (dynamic) {
      len = ddwSize;
      this.reason(
        `largest block 0x${query.largestBlock.toString(16)} x 2^${pageShift} (capped to the ${this.maskBits}-bit mask) ` +
          `covers 2^${ddwSize} bytes, less than the 2^${maxRamLen} RAM needs: dynamic window of 2^${len}`,
      );
    } else {
      // No persistent memory is modelled, so a window that covers RAM is always direct.
      this.directMapping = true;
      this.reason(
        `ibm,lrdr-capacity 0x${ctx.ddwMax.toString(16)} (the hotplug maximum alone): direct window of 2^${len}`,
      );
    }
    const info = this.create(pageShift, len);
    const propName = dynamic ? DMA64_PROP : DIRECT64_PROP;
    ctx.tree.setProp(this.pe.node, propName, windowInfoProperty(info));
    let table: IommuTable | undefined;
    if (!dynamic) {
      const rc = this.populate(info, ctx.ddwMax);
      if (rc !== 0n) {
        this.reason(`populating the window failed with ${rc}: clearing and removing it`);
        this.log(`failed to map DMA window for ${this.fn.node}: ${rc}`);
        this.cleanWindow(info);
        this.rtas('remove', this.tokens[2]!, [info.liobn], 1);
        ctx.tree.removeProp(this.pe.node, propName);
        throw new Failure('populate failed', { kind: 'populate', rc });
      }
      if (this.defaultRemoved) this.pe.defaultTable = undefined;
    } else {
      table = this.dynamicTable(info);
      if (this.defaultRemoved) this.pe.defaultTable = undefined;
    }
    if (this.defaultRemoved) {
      const saved = ctx.tree.getProp(this.pe.node, 'ibm,dma-window');
      if (saved && !ctx.tree.getProp(this.pe.node, 'ibm,dma-window-saved')) {
        ctx.tree.setProp(this.pe.node, 'ibm,dma-window-saved', saved);
      }
      ctx.tree.removeProp(this.pe.node, 'ibm,dma-window');
      this.log(`Removed default DMA window for ${this.pe.node}`);
    }
    this.succeed({ info, direct: !dynamic, table, propName, owner: dynamic ? this.fn.node : undefined });
  }

  /**
   * 6.12's limited_dma_window: a mask below 64 bits needs the reset extension and a non-zero
   * limited-address extension (ibm,ddw-extensions entry 3), then reset-pe-dma-windows with a 4th
   * argument of 1. QEMU advertises 2 extensions, so this fails there with -EOVERFLOW.
   */
  private limitedAddressMode(): void {
    const resetToken = this.readExt(1);
    const ext = this.ext;
    if (resetToken < 0 || !ext) {
      throw new Failure(`limited-address mode needs the reset extension (${resetToken})`, {
        kind: 'limited-address',
        errno: resetToken < 0 ? resetToken : EINVAL,
      });
    }
    const las = (ext[0] ?? 0) < 3 || ext.length < 4 ? EOVERFLOW : ext[3] === 0 ? EPROTO : 0;
    if (las !== 0) {
      this.log(`Limited Address Space for DDW not Supported, err: ${las}`);
      throw new Failure(
        `a ${this.maskBits}-bit mask needs limited-address mode, which the PE lacks (${las})`,
        { kind: 'limited-address', errno: las },
      );
    }
    const r = this.rtas('reset', ext[1]!, [this.fn.cfgAddr, this.hi, this.lo, 1], 1);
    if (r.status !== 0) {
      this.log(
        `${ROLE.reset}(${hex(ext[1]!)}) for Limited Addr Support: ${hex(this.fn.cfgAddr)} ${hex(this.hi)} ${hex(this.lo)} returned ${r.status}`,
      );
      throw new Failure(`limited-address reset returned ${r.status}`, {
        kind: 'limited-address',
        status: r.status,
      });
    }
    this.lsaEnabled = true;
    this.reason('PHB placed in limited-address mode');
  }

  /** ddw_read_ext: the extension's value, or a negative errno as the kernel gets it. */
  private readExt(index: number): number {
    const ext = this.ext;
    if (!ext) return EINVAL;
    if (ext.length < 1) return EOVERFLOW;
    if ((ext[0] ?? 0) < index || ext.length <= index) return EOVERFLOW;
    return ext[index]!;
  }

  /**
   * The query's answer once a window is free: with none, the default window is removed and the
   * PE queried again (6.1 and 6.12 alike); still none is a failure.
   */
  private withFreeWindow(query: Query): Query {
    if (query.windowsAvailable !== 0) return query;
    this.removeDefaultWindow();
    const again = this.query();
    if (again.windowsAvailable === 0)
      throw new Failure('still no window available after removing the default one', {
        kind: 'no-window',
        why: 'still-none',
      });
    return again;
  }

  /** Linux 6.1: dynamic windows, default-window removal, nret 6, the 2M page size. */
  private run61(): void {
    const ctx = this.ctx;
    this.readTokens();
    this.ext = ctx.tree.getCells(this.pe.node, 'ibm,ddw-extensions');
    const query = this.withFreeWindow(this.query());
    const pageShift = this.largestPageShift(query.pageMask);
    const maxRamLen = orderBase2(ctx.ram.maxAddress);
    const ddwSize = orderBase2(BigInt.asUintN(64, query.largestBlock << BigInt(pageShift)));
    let len = maxRamLen;
    const dynamic = ddwSize < len;
    this.sized('ram', ctx.ram.maxAddress, maxRamLen, ddwSize, dynamic ? ddwSize : len, dynamic);
    if (dynamic) {
      len = ddwSize;
      this.reason(
        `largest block 0x${query.largestBlock.toString(16)} x 2^${pageShift} covers 2^${ddwSize} bytes, less than ` +
          `the 2^${maxRamLen} RAM needs: dynamic window of 2^${len}`,
      );
    } else {
      this.reason(`RAM up to 0x${ctx.ram.maxAddress.toString(16)}: direct window of 2^${len}`);
    }
    const info = this.create(pageShift, len);
    const propName = dynamic ? DMA64_PROP : DIRECT64_PROP;
    ctx.tree.setProp(this.pe.node, propName, windowInfoProperty(info));
    let table: IommuTable | undefined;
    if (!dynamic) {
      const rc = this.populate(info);
      if (rc !== 0n) {
        this.reason(`populating the window failed with ${rc}: clearing and removing it`);
        this.log(`failed to map DMA window 0x${info.liobn.toString(16)}: ${rc}`);
        this.cleanWindow(info);
        this.rtas('remove', this.tokens[2]!, [info.liobn], 1);
        ctx.tree.removeProp(this.pe.node, propName);
        throw new Failure('populate failed', { kind: 'populate', rc });
      }
    } else {
      table = this.dynamicTable(info);
    }
    if (this.defaultRemoved) {
      ctx.tree.removeProp(this.pe.node, 'ibm,dma-window');
      this.pe.defaultTable = undefined;
      this.log(`Removed default DMA window for ${this.pe.node}`);
    }
    this.succeed({ info, direct: !dynamic, table, propName, owner: dynamic ? this.fn.node : undefined });
  }

  /** Linux 4.x (2016-2020): nret 5, 16M/64K/4K, a direct window or nothing. */
  private run4x(): void {
    const ctx = this.ctx;
    this.readTokens();
    const query = this.query();
    if (query.windowsAvailable === 0)
      throw new Failure('no free dynamic windows', { kind: 'no-window', why: 'no-removal' });
    const pageShift =
      query.pageMask & 0x4 ? 24 : query.pageMask & 0x2 ? 16 : query.pageMask & 0x1 ? 12 : undefined;
    if (pageShift === undefined) {
      throw new Failure(`no page size this kernel knows in mask 0x${query.pageMask.toString(16)}`, {
        kind: 'page-size',
        mask: query.pageMask,
      });
    }
    if (this.record) this.record.pageShift = pageShift;
    this.reason(
      `page size 2^${pageShift}: the first of 16M, 64K, 4K in mask 0x${query.pageMask.toString(16)}`,
    );
    const maxAddr = ctx.ram.maxAddress;
    if (query.largestBlock < maxAddr >> BigInt(pageShift)) {
      throw new Failure(
        `largest block 0x${query.largestBlock.toString(16)} is smaller than the 0x${(maxAddr >> BigInt(pageShift)).toString(16)} TCEs RAM needs`,
        {
          kind: 'block-too-small',
          block: query.largestBlock,
          needed: maxAddr >> BigInt(pageShift),
          pageShift,
          maxAddress: maxAddr,
        },
      );
    }
    const len = orderBase2(maxAddr);
    this.sized(
      'ram',
      maxAddr,
      len,
      orderBase2(BigInt.asUintN(64, query.largestBlock << BigInt(pageShift))),
      len,
      false,
    );
    this.reason(`RAM up to 0x${maxAddr.toString(16)}: direct window of 2^${len}`);
    const info = this.create(pageShift, len);
    const rc = this.populate(info);
    if (rc !== 0n) {
      // These kernels look for the window's property to undo it, and it is not there yet: the
      // window stays mapped and created.
      this.reason(`populating the window failed with ${rc}; the window is left in place (not removed)`);
      this.log(`failed to map DMA window 0x${info.liobn.toString(16)}: ${rc}`);
      throw new Failure('populate failed', { kind: 'populate', rc });
    }
    ctx.tree.setProp(this.pe.node, DIRECT64_PROP, windowInfoProperty(info));
    this.succeed({ info, direct: true, table: undefined, propName: DIRECT64_PROP, owner: undefined });
  }

  private sized(
    basis: 'lrdr-capacity' | 'ram',
    maxAddress: bigint,
    ramShift: number,
    blockShift: number,
    windowShift: number,
    dynamic: boolean,
  ): void {
    if (this.record) this.record.sizing = { basis, maxAddress, ramShift, blockShift, windowShift, dynamic };
  }

  private succeed(window: NonNullable<PeState['window']>): void {
    this.pe.window = window;
    this.pe.windowSeq = ++windowCounter;
    this.pe.decision.outcome = window.direct ? 'direct' : 'dynamic';
    this.pe.decision.window = window.info;
    this.pe.decision.defaultWindowRemoved = this.defaultRemoved;
  }

  private readTokens(): void {
    const cells = this.ctx.tree.getCells(this.pe.node, 'ibm,ddw-applicable');
    if (!cells || cells.length < 3)
      throw new Failure('no ibm,ddw-applicable on the PE: the hypervisor offers no DDW', { kind: 'no-ddw' });
    this.tokens = cells.slice(0, 3);
  }

  private query(): Query {
    const ext = this.ext;
    const nret = this.ctx.generation !== 'linux-4.x' && ext && (ext[0] ?? 0) >= 2 && ext[2] === 1 ? 6 : 5;
    const r = this.rtas('query', this.tokens[0]!, [this.fn.cfgAddr, this.hi, this.lo], nret);
    const q: Query =
      nret === 6
        ? {
            status: r.status,
            windowsAvailable: r.rets[1]!,
            largestBlock: (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!),
            pageMask: r.rets[4]!,
          }
        : {
            status: r.status,
            windowsAvailable: r.rets[1]!,
            largestBlock: BigInt(r.rets[2]!),
            pageMask: r.rets[3]!,
          };
    this.log(
      `${ROLE.query}(${hex(this.tokens[0]!)}) ${hex(this.fn.cfgAddr)} ${hex(this.hi)} ${hex(this.lo)} returned ${q.status}, ` +
        `lb=${q.largestBlock.toString(16)} ps=${hex(q.pageMask)} wn=${q.windowsAvailable}`,
    );
    this.record?.queries.push({ nret, ...q });
    if (q.status !== 0)
      throw new Failure(`query returned ${q.status}`, { kind: 'query', status: q.status, nret });
    this.reason(
      `query (nret ${nret}): ${q.windowsAvailable} window(s) available, largest block 0x${q.largestBlock.toString(16)} TCEs, page mask 0x${hex(q.pageMask)}`,
    );
    return q;
  }

  /** 6.1's choice: the largest page size the mask offers. */
  private largestPageShift(mask: number): number {
    let best = 0;
    for (const [bit, shift] of PAGE_BITS_61) if (mask & bit && shift > best) best = shift;
    if (best === 0) {
      throw new Failure(`no page size this kernel knows in mask 0x${hex(mask)}`, { kind: 'page-size', mask });
    }
    if (this.record) this.record.pageShift = best;
    this.reason(`page size 2^${best}: the largest in mask 0x${hex(mask)}`);
    return best;
  }

  private create(pageShift: number, windowShift: number): DmaWindowInfo {
    const args = [this.fn.cfgAddr, this.hi, this.lo, pageShift, windowShift];
    let r = this.rtas('create', this.tokens[1]!, args, 4);
    for (let tries = 0; isBusy(r.status) && tries < MAX_BUSY_RETRIES; tries++) {
      r = this.rtas('create', this.tokens[1]!, args, 4);
    }
    const [status, liobn = 0, ahi = 0, alo = 0] = [r.status, r.rets[1], r.rets[2], r.rets[3]];
    this.log(
      `${ROLE.create}(${hex(this.tokens[1]!)}) ${args.map(hex).join(' ')} returned ${status} ` +
        `(liobn = 0x${hex(liobn)} starting addr = ${hex(ahi)} ${hex(alo)})`,
    );
    const busOffset = (BigInt(ahi) << 32n) | BigInt(alo);
    if (this.record) {
      this.record.create = {
        pageShift,
        windowShift,
        status,
        ...(status === 0 ? { liobn, busOffset } : {}),
      };
    }
    if (status !== 0) throw new Failure(`create returned ${status}`, { kind: 'create', status });
    this.reason(
      `created LIOBN 0x${hex(liobn)} at 0x${busOffset.toString(16)}, page size 2^${pageShift}, 2^${windowShift} bytes`,
    );
    return { liobn, busOffset, pageShift, windowShift };
  }

  /**
   * Maps all RAM 1:1 (bus = phys + window address), range by range in whole guest pages, each
   * range's start rounded down to the TCE size and its count rounded down (a tail shorter than a
   * TCE stays unmapped). Stops at the first failing range.
   */
  private populate(info: DmaWindowInfo, limit?: bigint): bigint {
    const P = this.ctx.pageSize;
    const T = 1n << BigInt(info.pageShift);
    for (const range of this.ctx.ram.ranges) {
      const end = limit !== undefined && range.end > limit ? limit : range.end;
      const firstPfn = (range.start + P - 1n) / P;
      const endPfn = end / P;
      if (endPfn <= firstPfn) continue;
      const start = firstPfn * P;
      const aligned = start & ~(T - 1n);
      const count = ((endPfn - firstPfn) * P + (start - aligned)) >> BigInt(info.pageShift);
      const rc = this.ctx.tce.populate(info.liobn, info.busOffset, aligned, info.pageShift, Number(count));
      if (rc !== 0n) return rc;
    }
    return 0n;
  }

  /** Clears a whole window the way its removal does: 2^windowShift bytes from its start. */
  private cleanWindow(info: DmaWindowInfo): void {
    const P = this.ctx.pageSize;
    const pfns = info.windowShift >= 64 ? 0n : (1n << BigInt(info.windowShift)) / P;
    const count = (pfns * P) >> BigInt(info.pageShift);
    this.ctx.tce.clearRange(info.liobn, info.busOffset, info.pageShift, count);
  }

  /**
   * The window the DMA API allocates from when RAM does not fit: the 32-bit MMIO bus range is
   * kept out, and the whole table is cleared before use.
   */
  private dynamicTable(info: DmaWindowInfo): IommuTable {
    const entries = Number((2n ** BigInt(info.windowShift)) >> BigInt(info.pageShift));
    const table = new IommuTable(info.liobn, info.busOffset, info.pageShift, entries);
    table.reserveBus(MMIO32_BUS_START, MMIO32_BUS_END);
    this.ctx.tce.freePages(info.liobn, info.busOffset, info.pageShift, entries);
    this.reason(
      `dynamic window: ${entries} entries of page size 2^${info.pageShift}, mapped per DMA request`,
    );
    return table;
  }

  /**
   * windows_available was 0: give the default window back so the DDW can take its slot. Needs
   * an unused default table, ibm,dma-window and the reset extension (to undo it on failure).
   */
  private removeDefaultWindow(): void {
    const ctx = this.ctx;
    const pe = this.pe;
    if (pe.defaultTable?.inUse()) {
      throw new Failure('no window available and the default window has live mappings', {
        kind: 'no-window',
        why: 'live-mappings',
      });
    }
    const prop = ctx.tree.getProp(pe.node, 'ibm,dma-window');
    if (!prop) {
      throw new Failure('no window available and no ibm,dma-window to remove', {
        kind: 'no-window',
        why: 'no-default-window',
      });
    }
    if (!this.ext || (this.ext[0] ?? 0) < 1) {
      throw new Failure('no window available and no reset extension to restore the default window', {
        kind: 'no-window',
        why: 'no-reset-extension',
      });
    }
    this.reason('no window available: removing the default window');
    // The kernel reads ibm,dma-window through the 24-byte window-info layout, so the liobn is
    // right and the rest is whatever those bytes hold (see cleanDefaultWindow).
    const liobn = cell(prop, 0);
    this.cleanDefaultWindow(prop);
    const r = this.rtas('remove', this.tokens[2]!, [liobn], 1);
    this.log(`${ROLE.remove}(${hex(this.tokens[2]!)}) 0x${hex(liobn)} returned ${r.status}`);
    if (r.status !== 0) this.reason(`removing the default window returned ${r.status} (ignored)`);
    if (this.record) this.record.removal = { status: r.status };
    this.defaultRemoved = true;
    pe.decision.defaultWindowRemoved = true;
  }

  /**
   * The clear before removing the default window. ibm,dma-window (liobn, address, size cells) is
   * read as a window-info property: bus address from bytes 8-15, TCE shift from 16-19, window shift
   * from 20-23 (past a 20-byte property: read as 0 here; in the kernel it is whatever follows).
   * Shifts behave as the 64-bit POWER shift instructions (amount mod 128, 64 and more give 0).
   * On QEMU's property this is one H_STUFF_TCE of 0 entries, which QEMU answers H_PARAMETER.
   */
  private cleanDefaultWindow(prop: Uint8Array): void {
    const liobn = cell(prop, 0);
    const base = (BigInt(cell(prop, 8)) << 32n) | BigInt(cell(prop, 12));
    const tceShift = cell(prop, 16);
    const windowShift = cell(prop, 20);
    const pageShift = BigInt(orderBase2(this.ctx.pageSize));
    const pfns = shl64(1n, (windowShift - Number(pageShift)) >>> 0);
    const tceSize = shl64(1n, tceShift);
    const count = shr64(BigInt.asUintN(64, pfns << pageShift), tceShift);
    let left = count;
    let ioba = base;
    let rc = 0n;
    do {
      const k = left < 512n ? left : 512n;
      rc = this.ctx.tce.stuffTce(liobn, BigInt.asUintN(64, ioba), 0n, Number(k));
      ioba += k * tceSize;
      left -= k;
    } while (left > 0n && rc === 0n);
    if (rc !== 0n) this.reason(`clearing the default window returned ${rc} (ignored)`);
  }

  private resetWindows(): void {
    const token = this.ext?.[1];
    if (token === undefined) return;
    const r = this.rtas('reset', token, [this.fn.cfgAddr, this.hi, this.lo], 1);
    this.log(
      `${ROLE.reset}(${hex(token)}) ${hex(this.fn.cfgAddr)} ${hex(this.hi)} ${hex(this.lo)} returned ${r.status}`,
    );
    this.reason(`reset the PE's windows (default window restored), status ${r.status}`);
    if (this.record) this.record.resetStatus = r.status;
  }

  private rtas(role: keyof typeof ROLE, token: number, args: number[], nret: number) {
    const r = this.ctx.port.rtasCall(token, args, nret);
    this.pe.decision.rtas.push({ call: ROLE[role], args: [...args], rets: [...r.rets] });
    return r;
  }

  private reason(text: string): void {
    this.pe.decision.reasons.push(text);
  }

  private log(line: string): void {
    this.ctx.log(this.fn, line);
  }
}

/** What a decision's summary needs besides the PE's own record. */
export interface ExplainContext {
  generation: LinuxGeneration;
  ram: RamLayout;
  /** The kernel's disable_ddw. */
  disableDdw: boolean;
  /** The PE's functions, as dmesg names them, with the driver bound (if any). */
  functions: readonly { node: string; name: string; driver: string | undefined }[];
}

const GENERATION_NAMES: Record<LinuxGeneration, string> = {
  'linux-6.12': 'Linux 6.12',
  'linux-6.1': 'Linux 6.1',
  'linux-4.x': 'Linux 4.x',
};

/** The page sizes a generation picks from, largest first (4.x: the first of 16M, 64K, 4K). */
const KNOWN_PAGES: Record<LinuxGeneration, string> = {
  'linux-6.12': '16G, 256M, 128M, 64M, 32M, 16M, 2M, 64K or 4K',
  'linux-6.1': '16G, 256M, 128M, 64M, 32M, 16M, 2M, 64K or 4K',
  'linux-4.x': '16M, 64K or 4K',
};

/** A PHB pgsz every generation and QEMU version can use: 4K, 64K and 16M. */
const PORTABLE_PGSZ = '-global spapr-pci-host-bridge.pgsz=0x1011000';

/**
 * The one-line summary of a PE's decision: what the guest got and, for no DDW or a dynamic
 * window, why and what to change. Written from the negotiation record (what was queried,
 * returned, removed), the masks the drivers set and the guest's memory layout.
 */
export function explainDecision(pe: PeState, ctx: ExplainContext): string {
  const g = GENERATION_NAMES[ctx.generation];
  const rec = pe.negotiation;
  const fallback = pe.defaultWindow
    ? `the devices use the ${formatSize(pe.defaultWindow.size)} default window`
    : 'the devices have no DMA window';
  if (pe.decision.outcome === 'not-attempted' || !rec) return notAttempted(pe, ctx, fallback);
  const query = rec.queries.at(-1);
  const offered = query ? pageList(query.pageMask) : '';
  const fiveOutputs =
    ctx.generation !== 'linux-4.x' && query?.nret === 5
      ? ' (a 5-output query: no 64-bit largest-block extension, as QEMU 2.7 answers)'
      : '';
  const win = pe.decision.window;
  if (pe.decision.outcome === 'direct' && win) {
    const sizing = rec.sizing;
    const upTo = sizing
      ? `RAM up to ${formatSize(sizing.maxAddress)}${sizing.basis === 'lrdr-capacity' ? ' (ibm,lrdr-capacity: maxmem)' : ''}`
      : 'RAM';
    const window =
      `LIOBN 0x${hex(win.liobn)} at 0x${win.busOffset.toString(16)}: ${windowSize(win.windowShift)} in ` +
      `${pageName(win.pageShift)} pages, the largest of ${offered} the query offers${fiveOutputs}`;
    const direct = `device address = guest address + 0x${win.busOffset.toString(16)}`;
    if (rec.removal) {
      const stranded = smallMasks(pe, ctx);
      return (
        `direct window, default window removed: the query said 0 windows available (the PHB has ` +
        `one DMA window, as with x-ddw-windows=1), so ${g} removed the ${defaultSize(pe)} default ` +
        `window (remove returned ${rec.removal.status}) and mapped ${upTo} into ${window}; ${direct}` +
        (stranded.length > 0
          ? `; ${stranded.join(', ')} ${stranded.length === 1 ? 'has' : 'have'} no DMA window left (mask under 64 bits)`
          : '')
      );
    }
    return `direct window: ${g} mapped ${upTo} 1:1 into ${window}; ${direct}`;
  }
  if (pe.decision.outcome === 'dynamic' && win && rec.sizing && query) {
    const sz = rec.sizing;
    const capped =
      rec.maskBits < sz.blockShift ? `, capped to the ${rec.maskBits}-bit mask: 2^${sz.windowShift}` : '';
    const others = ctx.functions.filter((f) => f.name !== rec.fn && pe.masks.has(f.node)).length;
    return (
      `dynamic window: the query's largest block (0x${query.largestBlock.toString(16)} x ${pageName(win.pageShift)} ` +
      `pages = 2^${sz.blockShift} bytes${capped}) is smaller than RAM (up to ${formatSize(sz.maxAddress)}, ` +
      `2^${sz.ramShift}${query.nret === 5 ? '; a 5-output query gives the block as a 32-bit count' : ''}), ` +
      `so ${g} uses LIOBN 0x${hex(win.liobn)} at 0x${win.busOffset.toString(16)}, ${windowSize(win.windowShift)}, ` +
      `as an IOMMU table mapped per DMA request, for ${rec.fn}${others > 0 ? ' only (the other functions stay on the default window)' : ''}. ` +
      `For a direct window offer larger pages (${PORTABLE_PGSZ}) or give less ${sz.basis === 'lrdr-capacity' ? 'maxmem' : 'RAM/maxmem'}`
    );
  }
  return `no DDW: ${failed(pe, ctx, rec, fallback)}`;
}

/** Why a PE that went through enable_ddw has no DDW, and the fix. */
function failed(pe: PeState, ctx: ExplainContext, rec: NegotiationRecord, fallback: string): string {
  const g = GENERATION_NAMES[ctx.generation];
  const why = rec.failure;
  const query = rec.queries.at(-1);
  const reset =
    rec.resetStatus !== undefined
      ? `; ${g} reset the PE's windows (reset returned ${rec.resetStatus}), restoring the default window`
      : '';
  const secondWindow = 'Give the PHB a second DMA window (drop x-ddw-windows=1: QEMU PHBs have 2)';
  switch (why?.kind) {
    case 'no-ddw':
      return (
        `the PHB offers none (no ibm,ddw-applicable on ${pe.node}: spapr-pci-host-bridge ddw=off, or a ` +
        `machine type older than pseries-2.7); ${fallback}. Turn DDW on (-global spapr-pci-host-bridge.ddw=on, ` +
        `pseries-2.7 or newer) for a 64-bit window`
      );
    case 'query':
      return (
        `ibm,query-pe-dma-windows (${why.nret} outputs) returned ${why.status}${rtasMeaning(why.status)}; ` +
        `${fallback}. The hypervisor refused to describe the PE's windows: check its DDW support for this PE`
      );
    case 'page-size': {
      const offered =
        why.mask === 0
          ? `no page size (mask 0x0: RTAS can name none of the PHB's pgsz sizes` +
            `${query?.nret === 5 ? '; a 5-output query, as QEMU 2.7 answers, cannot name 2M' : ''})`
          : `only ${pageList(why.mask)} pages (mask 0x${hex(why.mask)}), none of which ${g} uses ` +
            `(it picks from ${KNOWN_PAGES[ctx.generation]})`;
      return `the query offers ${offered}; ${fallback}. Offer 4K, 64K or 16M pages (${PORTABLE_PGSZ}) for a DDW`;
    }
    case 'no-window':
      switch (why.why) {
        case 'no-removal':
          return (
            `the query says 0 windows available and ${g} never removes the default window to make ` +
            `room; ${fallback}. ${secondWindow}, or use Linux 6.1 or newer, which removes the default window`
          );
        case 'still-none':
          return (
            `the query said 0 windows available; ${g} removed the ${defaultSize(pe)} default window ` +
            `(remove returned ${rec.removal?.status ?? '?'}) but the query still says 0${reset}, and ${fallback}. ${secondWindow}`
          );
        default: {
          const because =
            why.why === 'live-mappings'
              ? 'it has live DMA mappings'
              : why.why === 'no-default-window'
                ? 'the PE has no ibm,dma-window'
                : 'ibm,ddw-extensions has no reset-pe-dma-windows to restore it on failure';
          return (
            `the query says 0 windows available and ${g} cannot remove the default window: ${because}; ` +
            `${fallback}. ${secondWindow}${why.why === 'live-mappings' ? ', or set the 64-bit mask before any DMA' : ''}`
          );
        }
      }
    case 'block-too-small':
      return (
        `Linux 4.x maps all RAM (up to ${formatSize(why.maxAddress)}) directly and needs 0x${why.needed.toString(16)} ` +
        `TCEs of ${pageName(why.pageShift)}, but the query's largest block is 0x${why.block.toString(16)}` +
        `${query?.nret === 5 ? ' (a 5-output query gives it as a 32-bit count)' : ''}; 4.x has no dynamic windows, ` +
        `so ${fallback}. Offer larger pages (${PORTABLE_PGSZ}), give less maxmem, or use Linux 6.1 or newer (a dynamic window)`
      );
    case 'create': {
      const c = rec.create!;
      const sz = rec.sizing;
      const asked = `a window of ${windowSize(c.windowShift)} in ${pageName(c.pageShift)} pages`;
      const returned = `create returned ${why.status}${rtasMeaning(why.status)}`;
      if (c.windowShift < c.pageShift && sz) {
        if (sz.basis === 'lrdr-capacity' && sz.maxAddress === 0n) {
          const lrdr = ctx.ram.lrdrPresent ? 'which is 0 without maxmem' : 'which /rtas does not have';
          return (
            `${g} sizes the window from ibm,lrdr-capacity, ${lrdr}; ${returned}${reset}; ${fallback}. ` +
            `Give maxmem (${maxmemExample(ctx.ram)}) for a direct window`
          );
        }
        if (query && query.largestBlock << BigInt(c.pageShift) >= 1n << 64n) {
          return (
            `the query's largest block 0x${query.largestBlock.toString(16)} of ${pageName(c.pageShift)} pages ` +
            `overflows ${g}'s 64-bit window size, so it asked for ${asked}; ${returned}${reset}; ${fallback}. ` +
            `Offer pages of 16M or smaller (${PORTABLE_PGSZ})`
          );
        }
      }
      const tces = c.windowShift - c.pageShift;
      const fix =
        tces >= 32
          ? `The window needs 2^${tces} TCEs, more than QEMU's 32-bit table size: offer larger pages (${PORTABLE_PGSZ}) or give less maxmem`
          : c.windowShift < c.pageShift
            ? 'The window is smaller than one of its pages'
            : 'The PHB refused the window';
      return `${g} asked for ${asked}; ${returned}${reset}; ${fallback}. ${fix}`;
    }
    case 'populate': {
      const c = rec.create;
      const window =
        c?.liobn !== undefined ? `LIOBN 0x${hex(c.liobn)}, ${pageName(c.pageShift)} pages` : 'the window';
      const undo =
        ctx.generation === 'linux-4.x'
          ? 'Linux 4.x leaves that window created and unused'
          : `${g} cleared and removed the window${reset}`;
      return (
        `${g} created a direct window (${window}) but mapping RAM into it failed with ${why.rc}` +
        `${hcallMeaning(why.rc)}; ${undo}, and ${fallback}. The hypervisor refused the TCEs: check its ` +
        `limits (host IOMMU, locked memory)`
      );
    }
    case 'limited-address': {
      const lacks =
        why.status !== undefined
          ? `its limited-address reset returned ${why.status}`
          : why.errno === EOVERFLOW
            ? `ibm,ddw-extensions has no limited-address entry (${why.errno})`
            : why.errno === EPROTO
              ? `its limited-address entry is 0 (${why.errno})`
              : `ibm,ddw-extensions has no reset extension (${why.errno})`;
      return (
        `${rec.fn} set a ${rec.maskBits}-bit DMA mask, and ${g} then needs the PHB's limited-address mode: ` +
        `${lacks}; ${fallback}. Only a 64-bit mask gets a DDW from this PHB`
      );
    }
    default:
      return fallback;
  }
}

/** A PE whose functions never asked for a DDW: no device, no driver, small masks, disable_ddw. */
function notAttempted(pe: PeState, ctx: ExplainContext, fallback: string): string {
  if (ctx.functions.length === 0) return 'no DDW tried: no PCI device on this PHB';
  const masks = [...pe.masks.values()];
  const threshold = ctx.generation === 'linux-6.12' ? 'a mask over 32 bits' : 'a 64-bit mask';
  const g = GENERATION_NAMES[ctx.generation];
  if (ctx.disableDdw && masks.some((m) => wantsDdw(ctx.generation, m.bits))) {
    return `no DDW tried: the kernel's disable_ddw is set; ${fallback}. Boot without disable_ddw for a DDW`;
  }
  if (masks.length === 0) {
    const unbound = ctx.functions.filter((f) => f.driver === undefined).map((f) => f.name);
    return (
      `no DDW tried: no driver set a DMA mask` +
      (unbound.length > 0 ? ` (no driver the model knows for ${unbound.join(', ')})` : '') +
      `; a device needs a driver with ${threshold} for a DDW`
    );
  }
  const all32 = masks.every((m) => m.bits <= 32);
  return (
    `no DDW tried: ${masks.map((m) => `${m.name} set a ${m.bits}-bit DMA mask`).join(', ')}, and ${g} asks ` +
    `for a DDW only with ${threshold}; ${fallback}` +
    (all32
      ? ', which is all a 32-bit device can address (nothing to change)'
      : `. A driver that sets ${threshold} gets a DDW`)
  );
}

function wantsDdw(generation: LinuxGeneration, bits: number): boolean {
  return generation === 'linux-6.12' ? bits > 32 : bits >= 64;
}

/** Functions left with a mask too small for the DDW after the default window went away. */
function smallMasks(pe: PeState, ctx: ExplainContext): string[] {
  return [...pe.masks.values()].filter((m) => !wantsDdw(ctx.generation, m.bits)).map((m) => m.name);
}

function defaultSize(pe: PeState): string {
  return pe.defaultWindow ? formatSize(pe.defaultWindow.size) : '';
}

/** "2^31 bytes (2 GiB)". */
function windowSize(shift: number): string {
  return shift < 64 ? `2^${shift} bytes (${formatSize(1n << BigInt(shift))})` : `2^${shift} bytes`;
}

const pageName = formatPageShift;

/** The page sizes a query mask names, smallest first: "4K, 64K, 2M, 16M". */
function pageList(mask: number): string {
  const shifts = PAGE_BITS_61.filter(([bit]) => (mask & bit) !== 0)
    .map(([, shift]) => shift)
    .sort((a, b) => a - b);
  return shifts.length > 0 ? shifts.map(pageName).join(', ') : 'no';
}

function rtasMeaning(status: number): string {
  if (status === -1) return ' (hardware error)';
  if (status === -3) return ' (parameter error)';
  if (isBusy(status)) return ' (still busy after retries)';
  return '';
}

function hcallMeaning(rc: bigint): string {
  if (rc === -4n) return ' (H_PARAMETER)';
  if (rc === -44n) return ' (H_NOT_ENOUGH_RESOURCES)';
  if (rc === -1n) return ' (H_HARDWARE)';
  return '';
}

/** "-m 2G,maxmem=4G,slots=2": the guest's RAM, and twice as much for maxmem. */
function maxmemExample(ram: RamLayout): string {
  const size = ram.ranges.reduce((n, r) => n + (r.end - r.start), 0n);
  const qemu = (bytes: bigint) =>
    bytes > 0n && bytes % (1n << 30n) === 0n ? `${bytes >> 30n}G` : `${bytes >> 20n}M`;
  return size > 0n ? `-m ${qemu(size)},maxmem=${qemu(2n * size)},slots=2` : '-m 4G,maxmem=8G,slots=2';
}

function hex(n: number): string {
  return (n >>> 0).toString(16);
}

function cell(bytes: Uint8Array, at: number): number {
  if (at + 4 > bytes.length) return 0;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at);
}

function shl64(value: bigint, amount: number): bigint {
  const n = amount & 127;
  return n >= 64 ? 0n : BigInt.asUintN(64, value << BigInt(n));
}

function shr64(value: bigint, amount: number): bigint {
  const n = amount & 127;
  return n >= 64 ? 0n : value >> BigInt(n);
}
