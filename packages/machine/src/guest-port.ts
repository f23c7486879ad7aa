import { type AddressSpace, MemTxResult } from '@ddw/memory';
import type { DeviceTree } from './devicetree.js';
import { inject, injectable } from './di.js';
import { DdwError, InvalidArgumentError } from './errors.js';
import type { HypercallRegistry, HypercallResult } from './hcall.js';
import { H_PARAMETER, H_RTAS, H_SUCCESS } from './papr.js';
import type { RtasRegistry } from './rtas.js';
import { MachineTokens } from './tokens.js';

/** Where rtasCall() builds the PAPR argument buffer unless told otherwise (guest RAM, 64 KiB). */
export const DEFAULT_RTAS_ARGS_ADDRESS = 0x10000n;

/** The guest reads at most this many argument or return cells; a handler still sees the real counts. */
export const RTAS_MAX_CELLS = 64;

export interface RtasCallResult {
  /** rets[0] read back as a signed 32-bit status. */
  status: number;
  /** Every return cell read back from guest memory, unsigned. */
  rets: number[];
  /** What H_RTAS itself returned (H_PARAMETER for an unknown token, as QEMU). */
  hcallRet: bigint;
}

export interface RtasCallOptions {
  /** Guest physical address of the argument buffer. */
  bufferAddress?: bigint;
}

/** Device-tree access as the guest has it: read only. */
export type GuestDeviceTree = Pick<
  DeviceTree,
  'getProp' | 'getPropU32Cells' | 'getPropStrings' | 'nodes' | 'props'
>;

/**
 * The only way a guest reaches the machine: its RAM, hypercalls, RTAS calls through a real argument
 * buffer in guest memory, and the device tree. Guest models and trace replay drive machines only
 * through this.
 */
@injectable()
export class GuestPort {
  constructor(
    @inject(MachineTokens.SystemAddressSpace) readonly memory: AddressSpace,
    @inject(MachineTokens.Hypercalls) private readonly hypercalls: HypercallRegistry,
    @inject(MachineTokens.DeviceTree) readonly deviceTree: GuestDeviceTree,
  ) {}

  /** A hypercall: opcode and up to the PAPR register arguments, each wrapped to 64 bits. */
  hcall(opcode: number | bigint, ...args: (bigint | number)[]): HypercallResult {
    if (!isInteger(opcode)) {
      throw new InvalidArgumentError(
        'GuestPort.hcall(opcode)',
        `opcode ${describe(opcode)} is not an integer`,
      );
    }
    for (const [i, a] of args.entries()) {
      if (!isInteger(a)) {
        throw new InvalidArgumentError(
          'GuestPort.hcall(opcode, ...args)',
          `argument ${i} (${describe(a)}) is not an integer; pass register values as bigint`,
        );
      }
    }
    return this.hypercalls.dispatch(
      Number(opcode),
      args.map((a) => BigInt.asUintN(64, BigInt(a))),
    );
  }

  /**
   * An RTAS call as a guest makes it: writes token, nargs, nret, the argument cells and empty
   * return cells as big-endian words into guest RAM, calls H_RTAS with the buffer's address, and
   * reads the return cells back. `call` is a token or the name the device tree publishes under /rtas.
   */
  rtasCall(
    call: number | string,
    args: readonly number[],
    nret: number,
    options: RtasCallOptions = {},
  ): RtasCallResult {
    const where = 'GuestPort.rtasCall(call, args, nret)';
    if (typeof call === 'number' ? !isU32(call) : typeof call !== 'string') {
      throw new InvalidArgumentError(
        where,
        `call ${describe(call)} is neither a 32-bit token nor an RTAS call name`,
      );
    }
    if (!Array.isArray(args) || args.length > RTAS_MAX_CELLS || !args.every((a) => isU32(a) || isI32(a))) {
      throw new InvalidArgumentError(
        where,
        `args must be a list of at most ${RTAS_MAX_CELLS} 32-bit cells (integers from -2^31 to 2^32-1)`,
      );
    }
    if (!Number.isInteger(nret) || nret < 0 || nret > RTAS_MAX_CELLS) {
      throw new InvalidArgumentError(
        where,
        `nret ${describe(nret)} is not a cell count from 0 to ${RTAS_MAX_CELLS}`,
      );
    }
    const token = typeof call === 'number' ? call : this.rtasToken(call);
    const buffer = options.bufferAddress ?? DEFAULT_RTAS_ARGS_ADDRESS;
    if (typeof buffer !== 'bigint' || buffer < 0n) {
      throw new InvalidArgumentError(
        where,
        `options.bufferAddress ${describe(buffer)} is not a guest address (a bigint)`,
      );
    }
    const cells = [token, args.length, nret, ...args, ...new Array<number>(nret).fill(0)];
    const bytes = new Uint8Array(cells.length * 4);
    const view = new DataView(bytes.buffer);
    for (const [i, cell] of cells.entries()) view.setUint32(i * 4, cell >>> 0);
    this.memory.write(buffer, bytes);
    const { ret } = this.hcall(H_RTAS, buffer);
    const rets: number[] = [];
    for (let i = 0; i < nret; i++) {
      rets.push(Number(this.memory.load(buffer + BigInt(12 + 4 * (args.length + i)), 4).value));
    }
    return { status: (rets[0] ?? 0) | 0, rets, hcallRet: ret };
  }

  /** The token the machine publishes for an RTAS call (a /rtas property holding one cell). */
  rtasToken(name: string): number {
    const cells = this.deviceTree.getPropU32Cells('/rtas', name);
    if (cells?.length !== 1) {
      throw new DdwError(
        'RTAS_UNKNOWN_CALL',
        `the device tree has no RTAS token "${name}" under /rtas; the machine does not offer it`,
      );
    }
    return cells[0]!;
  }

  /**
   * The H_RTAS hypercall (KVMPPC_H_RTAS) as the machine serves it: reads the argument buffer at
   * `r3` from guest memory, dispatches, and writes the return cells back (spapr_rtas_call).
   */
  static serveRtas(memory: AddressSpace, rtas: RtasRegistry, r3: bigint): bigint {
    const cell = (index: number) => memory.load(r3 + BigInt(4 * index), 4).value;
    const token = Number(cell(0));
    const nargs = Number(cell(1));
    const nret = Number(cell(2));
    const argsBase = 3;
    const retsBase = argsBase + nargs;
    const known = rtas.nameOf(token) !== undefined;
    const args = new Uint32Array(Math.min(nargs, RTAS_MAX_CELLS));
    for (let i = 0; i < args.length; i++) args[i] = Number(cell(argsBase + i));
    // Unknown tokens get PARAM_ERROR in rets[0] from the registry, which reports them.
    const rets = rtas.dispatch(token, args, nret, nargs);
    for (let i = 0; i < rets.length; i++) {
      if (memory.store(r3 + BigInt(4 * (retsBase + i)), 4, BigInt(rets[i]!)) !== MemTxResult.OK) break;
    }
    return known ? H_SUCCESS : H_PARAMETER;
  }
}

function isInteger(value: unknown): value is number | bigint {
  return typeof value === 'bigint' || Number.isSafeInteger(value);
}

function isU32(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffffffff;
}

function isI32(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= -0x80000000 && (value as number) < 0;
}

function describe(value: unknown): string {
  return typeof value === 'bigint'
    ? `${value}n`
    : typeof value === 'string'
      ? JSON.stringify(value)
      : String(value);
}
