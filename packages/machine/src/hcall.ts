import { formatHex, UINT64_MAX } from '@ddw/memory';
import { injectable } from './di.js';
import { PluginError } from './errors.js';
import { H_FUNCTION, H_HARDWARE, KVMPPC_HCALL_BASE } from './papr.js';

/** What a hypercall leaves in the guest's registers: r3 and the return registers from r4 on. */
export interface HypercallResult {
  /** A PAPR return code (H_SUCCESS, H_PARAMETER, ...), signed 64-bit. */
  ret: bigint;
  /** Values for r4, r5, ...; unsigned 64-bit. */
  outputs?: readonly bigint[];
}

/** Receives the argument registers from r4 on, each already wrapped to unsigned 64 bits. */
export type HypercallHandler = (args: readonly bigint[]) => HypercallResult;

export interface HypercallInfo {
  readonly opcode: number;
  readonly name: string;
  readonly owner: string;
}

interface HypercallEntry extends HypercallInfo {
  readonly handler: HypercallHandler;
}

/**
 * Sees every dispatch begin and end (a timeline recorder): `name` is undefined for an opcode
 * nobody registered. It only observes; what it does never reaches the guest.
 */
export interface HypercallObserver {
  enter(opcode: number, name: string | undefined, args: readonly bigint[]): void;
  leave(opcode: number, name: string | undefined, result: HypercallResult): void;
}

export interface HypercallRegistryOptions {
  onUnknown?: HypercallRegistry['onUnknown'];
  onHandlerError?: HypercallRegistry['onHandlerError'];
  observer?: HypercallObserver;
}

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const NO_OUTPUTS: readonly bigint[] = Object.freeze([]);
const UNKNOWN_OPCODE: HypercallResult = Object.freeze({ ret: H_FUNCTION, outputs: NO_OUTPUTS });
const MODEL_BUG: HypercallResult = Object.freeze({ ret: H_HARDWARE, outputs: NO_OUTPUTS });

function outOfU64(values: readonly bigint[]): boolean {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < 0n || v > UINT64_MAX) return true;
  }
  return false;
}

/**
 * The hypercall table (QEMU's spapr_register_hypercall / spapr_hypercall). Plugins register
 * handlers by opcode; the guest port dispatches. Dispatch is on the TCE hot path, so it does a map
 * lookup and range checks, and allocates only when it must rewrite an out-of-range value.
 */
@injectable()
export class HypercallRegistry {
  private readonly entries = new Map<number, HypercallEntry>();

  /** Called for an opcode nobody registered (the guest gets H_FUNCTION); wire it to guest-error. */
  onUnknown: ((opcode: number, args: readonly bigint[]) => void) | undefined;

  /**
   * Called when a handler throws. That is a bug in the model, not something the guest did: the
   * guest gets H_HARDWARE and the machine keeps running, and this callback is where it surfaces.
   */
  onHandlerError: ((opcode: number, name: string, error: unknown) => void) | undefined;

  /** Sees each dispatch begin and end; undefined (the hot path's case) when nothing records. */
  observer: HypercallObserver | undefined;

  constructor(options: HypercallRegistryOptions = {}) {
    this.onUnknown = options.onUnknown;
    this.onHandlerError = options.onHandlerError;
    this.observer = options.observer;
  }

  register(opcode: number, name: string, handler: HypercallHandler, owner = 'machine'): void {
    if (!Number.isSafeInteger(opcode) || opcode < 0 || (opcode < KVMPPC_HCALL_BASE && opcode % 4 !== 0)) {
      throw new PluginError(
        owner,
        'invalid',
        `plugin "${owner}" registers hypercall ${name} with opcode ${opcode}; PAPR opcodes are non-negative ` +
          `multiples of 4 (or ${formatHex(KVMPPC_HCALL_BASE)} and up for QEMU's private calls)`,
      );
    }
    if (typeof handler !== 'function') {
      throw new PluginError(
        owner,
        'invalid',
        `plugin "${owner}" registers hypercall ${name} without a handler function`,
      );
    }
    const existing = this.entries.get(opcode);
    if (existing) {
      throw new PluginError(
        owner,
        'conflict',
        `plugin "${owner}" registers hypercall ${name} (${formatHex(opcode)}), which plugin "${existing.owner}" ` +
          `already registered as ${existing.name}; only one plugin may serve an opcode`,
      );
    }
    this.entries.set(opcode, { opcode, name, owner, handler });
  }

  has(opcode: number): boolean {
    return this.entries.has(opcode);
  }

  nameOf(opcode: number): string | undefined {
    return this.entries.get(opcode)?.name;
  }

  /** Registered hypercalls by opcode. */
  list(): HypercallInfo[] {
    return [...this.entries.values()]
      .map(({ opcode, name, owner }) => ({ opcode, name, owner }))
      .sort((a, b) => a.opcode - b.opcode);
  }

  /**
   * Runs the handler for `opcode`. Never throws: an unknown opcode gives H_FUNCTION, a throwing
   * handler H_HARDWARE. Arguments reach the handler as unsigned 64-bit values and the return code
   * leaves as a signed 64-bit one, whatever the caller or handler passed.
   */
  dispatch(opcode: number, args: readonly bigint[]): HypercallResult {
    const observer = this.observer;
    if (observer === undefined) return this.run(opcode, args);
    const name = this.entries.get(opcode)?.name;
    observer.enter(opcode, name, args);
    const result = this.run(opcode, args);
    observer.leave(opcode, name, result);
    return result;
  }

  private run(opcode: number, args: readonly bigint[]): HypercallResult {
    const entry = this.entries.get(opcode);
    if (entry === undefined) {
      this.onUnknown?.(opcode, args);
      return UNKNOWN_OPCODE;
    }
    const handlerArgs = outOfU64(args) ? args.map((a) => BigInt.asUintN(64, a)) : args;
    try {
      const result = entry.handler(handlerArgs);
      const { ret, outputs } = result;
      if (typeof ret !== 'bigint')
        throw new TypeError(`${entry.name} returned ret=${String(ret)}, not a bigint`);
      const retOutOfRange = ret < I64_MIN || ret > I64_MAX;
      const outputsOutOfRange = outputs !== undefined && outOfU64(outputs);
      if (!retOutOfRange && !outputsOutOfRange) return result;
      return {
        ret: retOutOfRange ? BigInt.asIntN(64, ret) : ret,
        outputs: outputsOutOfRange ? outputs.map((o) => BigInt.asUintN(64, o)) : outputs,
      };
    } catch (error) {
      // Also reached when a handler returns something that is not a HypercallResult.
      this.onHandlerError?.(opcode, entry.name, error);
      return MODEL_BUG;
    }
  }
}
