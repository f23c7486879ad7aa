import { formatHex } from '@ddw/memory';
import { injectable } from './di.js';
import { PluginError } from './errors.js';
import { RTAS_OUT_HW_ERROR, RTAS_OUT_PARAM_ERROR, RTAS_TOKEN_BASE } from './papr.js';

/**
 * One RTAS call as a handler sees it.
 *
 * Cells are 32-bit and carry no sign, so `args` and `rets` are Uint32Arrays. Handlers think in
 * signed status codes (-3 for PARAM_ERROR), so they write through `setRet`, which stores the
 * two's-complement cell, and read a status back with `status`.
 */
export interface RtasCall {
  readonly token: number;
  readonly name: string;
  /** The argument count the guest wrote, which handlers must check (it may differ from args.length). */
  readonly nargs: number;
  /** The return count the guest asked for, which handlers must check. */
  readonly nret: number;
  /** Argument cells as unsigned 32-bit values. */
  readonly args: Uint32Array;
  /** Return cells as unsigned 32-bit values; min(nret, RTAS_DISPATCH_MAX_RETS) of them. */
  readonly rets: Uint32Array;
  /** Stores `value` (signed or unsigned) in return cell `index`; ignored past the end of `rets`. */
  setRet(index: number, value: number): void;
  /** rets[0] read as a signed 32-bit status; 0 when the guest asked for no return cells. */
  readonly status: number;
}

export type RtasHandler = (call: RtasCall) => void;

export interface RtasCallInfo {
  readonly token: number;
  readonly name: string;
  readonly owner: string;
}

interface RtasEntry extends RtasCallInfo {
  readonly handler: RtasHandler;
}

/**
 * The most return cells a dispatch fills. nret comes from guest memory and can be anything up to
 * 2^32-1; no RTAS call returns more than a handful, so this only bounds what a hostile guest can
 * make the machine allocate.
 */
export const RTAS_DISPATCH_MAX_RETS = 64;

/**
 * Sees every dispatch begin and end (a timeline recorder): the call's `name` is "" for an unknown
 * token, and its `rets` are filled by `leave`. It only observes; it must not change the call.
 */
export interface RtasObserver {
  enter(call: RtasCall): void;
  leave(call: RtasCall): void;
}

export interface RtasRegistryOptions {
  onUnknown?: RtasRegistry['onUnknown'];
  onHandlerError?: RtasRegistry['onHandlerError'];
  observer?: RtasObserver;
}

class RtasCallFrame implements RtasCall {
  readonly rets: Uint32Array;

  constructor(
    readonly token: number,
    readonly name: string,
    readonly nargs: number,
    readonly nret: number,
    readonly args: Uint32Array,
  ) {
    // The status cell always exists: QEMU's handlers store rets[0] even when the caller asked for
    // no return cells, and that store lands in guest memory.
    this.rets = new Uint32Array(Math.max(1, Math.min(nret, RTAS_DISPATCH_MAX_RETS)));
  }

  setRet(index: number, value: number): void {
    if (index >= 0 && index < this.rets.length) this.rets[index] = value >>> 0;
  }

  get status(): number {
    return this.rets.length > 0 ? this.rets[0]! | 0 : 0;
  }
}

/**
 * RTAS calls by name and token (QEMU's spapr_rtas_register / spapr_rtas_call). The machine
 * publishes each token under /rtas in the device tree; the guest calls by token.
 */
@injectable()
export class RtasRegistry {
  private readonly byToken = new Map<number, RtasEntry>();
  private readonly byName = new Map<string, RtasEntry>();

  /** Called for a token nobody registered (the guest gets PARAM_ERROR); wire it to guest-error. */
  onUnknown: ((token: number) => void) | undefined;

  /**
   * Called when a handler throws: a model bug, not a guest error. The guest gets HW_ERROR and the
   * machine keeps running.
   */
  onHandlerError: ((token: number, name: string, error: unknown) => void) | undefined;

  /** Sees each dispatch begin and end; undefined when nothing records. */
  observer: RtasObserver | undefined;

  constructor(options: RtasRegistryOptions = {}) {
    this.onUnknown = options.onUnknown;
    this.onHandlerError = options.onHandlerError;
    this.observer = options.observer;
  }

  /**
   * Registers `name`. Without a token, takes the lowest free one from RTAS_TOKEN_BASE up, as
   * QEMU numbered its calls; calls whose token the guest must know in advance (the DDW calls,
   * 0x2026..0x2029) pass it. Returns the token.
   */
  register(name: string, handler: RtasHandler, options: { token?: number; owner?: string } = {}): number {
    const owner = options.owner ?? 'machine';
    if (typeof name !== 'string' || name === '') {
      throw new PluginError(owner, 'invalid', `plugin "${owner}" registers an RTAS call without a name`);
    }
    if (typeof handler !== 'function') {
      throw new PluginError(
        owner,
        'invalid',
        `plugin "${owner}" registers RTAS call "${name}" without a handler function`,
      );
    }
    const existing = this.byName.get(name);
    if (existing) {
      throw new PluginError(
        owner,
        'conflict',
        `plugin "${owner}" registers RTAS call "${name}", which plugin "${existing.owner}" already registered`,
      );
    }
    const token = options.token ?? this.nextFreeToken();
    if (!Number.isInteger(token) || token < 0 || token > 0xffffffff) {
      throw new PluginError(
        owner,
        'invalid',
        `plugin "${owner}" gives RTAS call "${name}" token ${token}, which is not a 32-bit cell`,
      );
    }
    const holder = this.byToken.get(token);
    if (holder) {
      throw new PluginError(
        owner,
        'conflict',
        `plugin "${owner}" gives RTAS call "${name}" token ${formatHex(token)}, which "${holder.name}" ` +
          `(plugin "${holder.owner}") already has; pick another token or leave it out to get a free one`,
      );
    }
    const entry: RtasEntry = { token, name, owner, handler };
    this.byToken.set(token, entry);
    this.byName.set(name, entry);
    return token;
  }

  tokenOf(name: string): number | undefined {
    return this.byName.get(name)?.token;
  }

  nameOf(token: number): string | undefined {
    return this.byToken.get(token)?.name;
  }

  /** Registered calls by token. */
  list(): RtasCallInfo[] {
    return [...this.byToken.values()]
      .map(({ token, name, owner }) => ({ token, name, owner }))
      .sort((a, b) => a.token - b.token);
  }

  /**
   * Runs the call for `token` and returns its return cells (min(nret, RTAS_DISPATCH_MAX_RETS), and
   * at least the status cell; unsigned). `nargs` is the count the guest wrote when `args` holds fewer cells than that.
   * Never throws: an unknown token gives PARAM_ERROR, a throwing handler HW_ERROR, in rets[0]
   * when there is one.
   */
  dispatch(token: number, args: Uint32Array, nret: number, nargs: number = args.length): Uint32Array {
    const entry = this.byToken.get(token);
    const frame = new RtasCallFrame(token, entry?.name ?? '', nargs >>> 0, nret >>> 0, args);
    const observer = this.observer;
    observer?.enter(frame);
    if (entry === undefined) {
      this.onUnknown?.(token);
      frame.setRet(0, RTAS_OUT_PARAM_ERROR);
    } else {
      try {
        entry.handler(frame);
      } catch (error) {
        this.onHandlerError?.(token, entry.name, error);
        frame.setRet(0, RTAS_OUT_HW_ERROR);
      }
    }
    observer?.leave(frame);
    return frame.rets;
  }

  private nextFreeToken(): number {
    let token = RTAS_TOKEN_BASE;
    while (this.byToken.has(token)) token++;
    return token;
  }
}
