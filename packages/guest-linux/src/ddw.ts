import type { DmaWindowInfo, LinuxGeneration, LinuxGuestPort, PciFunction } from './api.js';
import type { GuestTreeView } from './device-tree.js';
import { IommuTable } from './iommu-table.js';
import { DIRECT64_PROP, DMA64_PROP, type PeState, windowInfoProperty } from './pe.js';
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

class Failure extends Error {}

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
    try {
      if (this.ctx.generation === 'linux-4.x') this.run4x();
      else if (this.ctx.generation === 'linux-6.12') this.run612();
      else this.run61();
    } catch (error) {
      if (!(error instanceof Failure)) throw error;
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
    let query = this.query();
    this.lsaRequired = this.maskBits < 64;
    if (this.lsaRequired) this.limitedAddressMode();
    if (query.windowsAvailable === 0) {
      this.removeDefaultWindow();
      query = this.query();
      if (query.windowsAvailable === 0)
        throw new Failure('still no window available after removing the default one');
    }
    const pageShift = this.largestPageShift(query.pageMask);
    const maxRamLen = orderBase2(ctx.ddwMax);
    const blockShift = orderBase2(BigInt.asUintN(64, query.largestBlock << BigInt(pageShift)));
    const ddwSize = Math.min(blockShift, this.maskBits);
    let len = maxRamLen;
    const dynamic = ddwSize < len;
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
        throw new Failure('populate failed');
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
      throw new Failure(`limited-address mode needs the reset extension (${resetToken})`);
    }
    const las = (ext[0] ?? 0) < 3 || ext.length < 4 ? EOVERFLOW : ext[3] === 0 ? EPROTO : 0;
    if (las !== 0) {
      this.log(`Limited Address Space for DDW not Supported, err: ${las}`);
      throw new Failure(
        `a ${this.maskBits}-bit mask needs limited-address mode, which the PE lacks (${las})`,
      );
    }
    const r = this.rtas('reset', ext[1]!, [this.fn.cfgAddr, this.hi, this.lo, 1], 1);
    if (r.status !== 0) {
      this.log(
        `${ROLE.reset}(${hex(ext[1]!)}) for Limited Addr Support: ${hex(this.fn.cfgAddr)} ${hex(this.hi)} ${hex(this.lo)} returned ${r.status}`,
      );
      throw new Failure(`limited-address reset returned ${r.status}`);
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

  /** Linux 6.1: dynamic windows, default-window removal, nret 6, the 2M page size. */
  private run61(): void {
    const ctx = this.ctx;
    this.readTokens();
    this.ext = ctx.tree.getCells(this.pe.node, 'ibm,ddw-extensions');
    let query = this.query();
    if (query.windowsAvailable === 0) {
      this.removeDefaultWindow();
      query = this.query();
      if (query.windowsAvailable === 0)
        throw new Failure('still no window available after removing the default one');
    }
    const pageShift = this.largestPageShift(query.pageMask);
    const maxRamLen = orderBase2(ctx.ram.maxAddress);
    const ddwSize = orderBase2(BigInt.asUintN(64, query.largestBlock << BigInt(pageShift)));
    let len = maxRamLen;
    const dynamic = ddwSize < len;
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
        throw new Failure('populate failed');
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
    if (query.windowsAvailable === 0) throw new Failure('no free dynamic windows');
    const pageShift =
      query.pageMask & 0x4 ? 24 : query.pageMask & 0x2 ? 16 : query.pageMask & 0x1 ? 12 : undefined;
    if (pageShift === undefined) {
      throw new Failure(`no page size this kernel knows in mask 0x${query.pageMask.toString(16)}`);
    }
    this.reason(
      `page size 2^${pageShift}: the first of 16M, 64K, 4K in mask 0x${query.pageMask.toString(16)}`,
    );
    const maxAddr = ctx.ram.maxAddress;
    if (query.largestBlock < maxAddr >> BigInt(pageShift)) {
      throw new Failure(
        `largest block 0x${query.largestBlock.toString(16)} is smaller than the 0x${(maxAddr >> BigInt(pageShift)).toString(16)} TCEs RAM needs`,
      );
    }
    const len = orderBase2(maxAddr);
    this.reason(`RAM up to 0x${maxAddr.toString(16)}: direct window of 2^${len}`);
    const info = this.create(pageShift, len);
    const rc = this.populate(info);
    if (rc !== 0n) {
      // These kernels look for the window's property to undo it, and it is not there yet: the
      // window stays mapped and created.
      this.reason(`populating the window failed with ${rc}; the window is left in place (not removed)`);
      this.log(`failed to map DMA window 0x${info.liobn.toString(16)}: ${rc}`);
      throw new Failure('populate failed');
    }
    ctx.tree.setProp(this.pe.node, DIRECT64_PROP, windowInfoProperty(info));
    this.succeed({ info, direct: true, table: undefined, propName: DIRECT64_PROP, owner: undefined });
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
      throw new Failure('no ibm,ddw-applicable on the PE: the hypervisor offers no DDW');
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
    if (q.status !== 0) throw new Failure(`query returned ${q.status}`);
    this.reason(
      `query (nret ${nret}): ${q.windowsAvailable} window(s) available, largest block 0x${q.largestBlock.toString(16)} TCEs, page mask 0x${hex(q.pageMask)}`,
    );
    return q;
  }

  /** 6.1's choice: the largest page size the mask offers. */
  private largestPageShift(mask: number): number {
    let best = 0;
    for (const [bit, shift] of PAGE_BITS_61) if (mask & bit && shift > best) best = shift;
    if (best === 0) throw new Failure(`no page size this kernel knows in mask 0x${hex(mask)}`);
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
    if (status !== 0) throw new Failure(`create returned ${status}`);
    const busOffset = (BigInt(ahi) << 32n) | BigInt(alo);
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
    if (pe.defaultTable?.inUse())
      throw new Failure('no window available and the default window has live mappings');
    const prop = ctx.tree.getProp(pe.node, 'ibm,dma-window');
    if (!prop) throw new Failure('no window available and no ibm,dma-window to remove');
    if (!this.ext || (this.ext[0] ?? 0) < 1) {
      throw new Failure('no window available and no reset extension to restore the default window');
    }
    this.reason('no window available: removing the default window');
    // The kernel reads ibm,dma-window through the 24-byte window-info layout, so the liobn is
    // right and the rest is whatever those bytes hold (see cleanDefaultWindow).
    const liobn = cell(prop, 0);
    this.cleanDefaultWindow(prop);
    const r = this.rtas('remove', this.tokens[2]!, [liobn], 1);
    this.log(`${ROLE.remove}(${hex(this.tokens[2]!)}) 0x${hex(liobn)} returned ${r.status}`);
    if (r.status !== 0) this.reason(`removing the default window returned ${r.status} (ignored)`);
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
