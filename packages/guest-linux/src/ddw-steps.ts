/**
 * The steps enable_ddw takes for a PE: its RTAS calls (query, create, remove, reset), each logged
 * as dmesg logs it and recorded in the PE's decision, and what the run learnt on the way.
 */
import { formatHex } from '@ddw/machine';
import type { DmaWindowInfo, LinuxGeneration, LinuxGuestPort, PciFunction } from './api.js';
import { DdwFailure, EINVAL, EOVERFLOW, EPROTO, isRtasBusy } from './ddw-failure.js';
import { cellHex, type GuestTreeView, propertyCell } from './device-tree.js';
import type { NegotiationRecord, QueryRecord } from './negotiation-record.js';
import type { PeState } from './pe.js';
import type { RamLayout } from './ram.js';
import type { TceCalls } from './tce.js';
import { clearDefaultWindow } from './window-tces.js';

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

/** A hypervisor that answers busy for ever would hang Linux; the model gives up after this many. */
const MAX_BUSY_RETRIES = 1000;

const ROLE = {
  query: 'ibm,query-pe-dma-windows',
  create: 'ibm,create-pe-dma-window',
  remove: 'ibm,remove-pe-dma-window',
  reset: 'ibm,reset-pe-dma-windows',
} as const;

/**
 * One enable_ddw run's steps for a PE, on behalf of the function whose driver set the mask. A
 * step that makes the kernel give up throws a DdwFailure naming it.
 */
export class DdwSteps {
  /** What this run learnt and did; the PE keeps it only for enable_ddw runs (see DdwNegotiation). */
  readonly record: NegotiationRecord;
  /** This run removed the PE's default window. */
  defaultRemoved = false;
  /** 6.12: the mask is under 64 bits, so the window needs limited-address mode. */
  lsaRequired = false;
  /** 6.12: the PHB was placed in limited-address mode. */
  lsaEnabled = false;
  /** 6.12: enable_ddw's direct_mapping, which it returns even when it fails after deciding it. */
  directMapping = false;
  private readonly hi: number;
  private readonly lo: number;
  private tokens: number[] = [];
  private ext: number[] | undefined;

  constructor(
    readonly ctx: DdwContext,
    readonly pe: PeState,
    readonly fn: PciFunction,
    /** The DMA mask the driver set, in bits. */
    readonly maskBits: number,
  ) {
    this.hi = Number(pe.buid >> 32n);
    this.lo = Number(pe.buid & 0xffffffffn);
    this.record = { fn: ctx.name?.(fn) ?? fn.node, maskBits, queries: [] };
  }

  /** Reads the PE's ibm,ddw-applicable tokens; false when it has fewer than 3 (no DDW). */
  readTokens(): boolean {
    const cells = this.ctx.tree.getCells(this.pe.node, 'ibm,ddw-applicable');
    if (!cells || cells.length < 3) return false;
    this.tokens = cells.slice(0, 3);
    return true;
  }

  /** readTokens, where a PE without them ends the run. */
  requireTokens(): void {
    if (!this.readTokens())
      throw new DdwFailure('no ibm,ddw-applicable on the PE: the hypervisor offers no DDW', {
        kind: 'no-ddw',
      });
  }

  /** Reads ibm,ddw-extensions (6.x): the 6-output query, the reset call, limited-address mode. */
  readExtensions(): void {
    this.ext = this.ctx.tree.getCells(this.pe.node, 'ibm,ddw-extensions');
  }

  /** ddw_read_ext: the extension's value, or a negative errno as the kernel gets it. */
  private readExt(index: number): number {
    const ext = this.ext;
    if (!ext) return EINVAL;
    if (ext.length < 1) return EOVERFLOW;
    if ((ext[0] ?? 0) < index || ext.length <= index) return EOVERFLOW;
    return ext[index]!;
  }

  query(): QueryRecord {
    const ext = this.ext;
    const nret = this.ctx.generation !== 'linux-4.x' && ext && (ext[0] ?? 0) >= 2 && ext[2] === 1 ? 6 : 5;
    const r = this.rtas('query', this.tokens[0]!, [this.fn.cfgAddr, this.hi, this.lo], nret);
    const q: QueryRecord =
      nret === 6
        ? {
            nret,
            status: r.status,
            windowsAvailable: r.rets[1]!,
            largestBlock: (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!),
            pageMask: r.rets[4]!,
          }
        : {
            nret,
            status: r.status,
            windowsAvailable: r.rets[1]!,
            largestBlock: BigInt(r.rets[2]!),
            pageMask: r.rets[3]!,
          };
    this.log(
      `${ROLE.query}(${cellHex(this.tokens[0]!)}) ${cellHex(this.fn.cfgAddr)} ${cellHex(this.hi)} ${cellHex(this.lo)} returned ${q.status}, ` +
        `lb=${q.largestBlock.toString(16)} ps=${cellHex(q.pageMask)} wn=${q.windowsAvailable}`,
    );
    this.record.queries.push(q);
    if (q.status !== 0)
      throw new DdwFailure(`query returned ${q.status}`, { kind: 'query', status: q.status, nret });
    this.reason(
      `query (nret ${nret}): ${q.windowsAvailable} window(s) available, largest block ${formatHex(q.largestBlock)} TCEs, page mask 0x${cellHex(q.pageMask)}`,
    );
    return q;
  }

  /** Creates the window, asking again while the hypervisor answers busy. */
  create(pageShift: number, windowShift: number): DmaWindowInfo {
    const args = [this.fn.cfgAddr, this.hi, this.lo, pageShift, windowShift];
    let r = this.rtas('create', this.tokens[1]!, args, 4);
    for (let tries = 0; isRtasBusy(r.status) && tries < MAX_BUSY_RETRIES; tries++) {
      r = this.rtas('create', this.tokens[1]!, args, 4);
    }
    const [status, liobn = 0, ahi = 0, alo = 0] = [r.status, r.rets[1], r.rets[2], r.rets[3]];
    this.log(
      `${ROLE.create}(${cellHex(this.tokens[1]!)}) ${args.map(cellHex).join(' ')} returned ${status} ` +
        `(liobn = 0x${cellHex(liobn)} starting addr = ${cellHex(ahi)} ${cellHex(alo)})`,
    );
    const busOffset = (BigInt(ahi) << 32n) | BigInt(alo);
    this.record.create = {
      pageShift,
      windowShift,
      status,
      ...(status === 0 ? { liobn, busOffset } : {}),
    };
    if (status !== 0) throw new DdwFailure(`create returned ${status}`, { kind: 'create', status });
    this.reason(
      `created LIOBN 0x${cellHex(liobn)} at ${formatHex(busOffset)}, page size 2^${pageShift}, 2^${windowShift} bytes`,
    );
    return { liobn, busOffset, pageShift, windowShift };
  }

  /** Removes a window this run created (its status is not looked at). */
  removeWindow(liobn: number): void {
    this.rtas('remove', this.tokens[2]!, [liobn], 1);
  }

  /**
   * windows_available was 0: give the default window back so the DDW can take its slot. Needs
   * an unused default table, ibm,dma-window and the reset extension (to undo it on failure).
   */
  removeDefaultWindow(): void {
    const ctx = this.ctx;
    const pe = this.pe;
    if (pe.defaultTable?.inUse()) {
      throw new DdwFailure('no window available and the default window has live mappings', {
        kind: 'no-window',
        why: 'live-mappings',
      });
    }
    const prop = ctx.tree.getProp(pe.node, 'ibm,dma-window');
    if (!prop) {
      throw new DdwFailure('no window available and no ibm,dma-window to remove', {
        kind: 'no-window',
        why: 'no-default-window',
      });
    }
    if (!this.ext || (this.ext[0] ?? 0) < 1) {
      throw new DdwFailure('no window available and no reset extension to restore the default window', {
        kind: 'no-window',
        why: 'no-reset-extension',
      });
    }
    this.reason('no window available: removing the default window');
    // The kernel reads ibm,dma-window through the 24-byte window-info layout, so the liobn is
    // right and the rest is whatever those bytes hold (see clearDefaultWindow).
    const liobn = propertyCell(prop, 0);
    const rc = clearDefaultWindow(ctx.tce, ctx.pageSize, prop);
    if (rc !== 0n) this.reason(`clearing the default window returned ${rc} (ignored)`);
    const r = this.rtas('remove', this.tokens[2]!, [liobn], 1);
    this.log(`${ROLE.remove}(${cellHex(this.tokens[2]!)}) 0x${cellHex(liobn)} returned ${r.status}`);
    if (r.status !== 0) this.reason(`removing the default window returned ${r.status} (ignored)`);
    this.record.removal = { status: r.status };
    this.defaultRemoved = true;
    pe.decision.defaultWindowRemoved = true;
  }

  /**
   * 6.12's limited_dma_window: a mask below 64 bits needs the reset extension and a non-zero
   * limited-address extension (ibm,ddw-extensions entry 3), then reset-pe-dma-windows with a 4th
   * argument of 1. QEMU advertises 2 extensions, so this fails there with -EOVERFLOW.
   */
  enterLimitedAddressMode(): void {
    const resetToken = this.readExt(1);
    const ext = this.ext;
    if (resetToken < 0 || !ext) {
      throw new DdwFailure(`limited-address mode needs the reset extension (${resetToken})`, {
        kind: 'limited-address',
        errno: resetToken < 0 ? resetToken : EINVAL,
      });
    }
    const las = (ext[0] ?? 0) < 3 || ext.length < 4 ? EOVERFLOW : ext[3] === 0 ? EPROTO : 0;
    if (las !== 0) {
      this.log(`Limited Address Space for DDW not Supported, err: ${las}`);
      throw new DdwFailure(
        `a ${this.maskBits}-bit mask needs limited-address mode, which the PE lacks (${las})`,
        { kind: 'limited-address', errno: las },
      );
    }
    const r = this.rtas('reset', ext[1]!, [this.fn.cfgAddr, this.hi, this.lo, 1], 1);
    if (r.status !== 0) {
      this.log(
        `${ROLE.reset}(${cellHex(ext[1]!)}) for Limited Addr Support: ${cellHex(this.fn.cfgAddr)} ${cellHex(this.hi)} ${cellHex(this.lo)} returned ${r.status}`,
      );
      throw new DdwFailure(`limited-address reset returned ${r.status}`, {
        kind: 'limited-address',
        status: r.status,
      });
    }
    this.lsaEnabled = true;
    this.reason('PHB placed in limited-address mode');
  }

  /** After a failure: reset-pe-dma-windows, which restores the default window (needs the extension). */
  resetWindows(): void {
    const token = this.ext?.[1];
    if (token === undefined) return;
    const r = this.rtas('reset', token, [this.fn.cfgAddr, this.hi, this.lo], 1);
    this.log(
      `${ROLE.reset}(${cellHex(token)}) ${cellHex(this.fn.cfgAddr)} ${cellHex(this.hi)} ${cellHex(this.lo)} returned ${r.status}`,
    );
    this.reason(`reset the PE's windows (default window restored), status ${r.status}`);
    this.record.resetStatus = r.status;
  }

  /** A step or reason for the PE's decision. */
  reason(text: string): void {
    this.pe.decision.reasons.push(text);
  }

  /** A dmesg line, prefixed with the function. */
  log(line: string): void {
    this.ctx.log(this.fn, line);
  }

  private rtas(role: keyof typeof ROLE, token: number, args: number[], nret: number) {
    const r = this.ctx.port.rtasCall(token, args, nret);
    this.pe.decision.rtas.push({ call: ROLE[role], args: [...args], rets: [...r.rets] });
    return r;
  }
}
