/**
 * A worked example of a ddw plugin: a PAPR virtual terminal (QEMU's spapr-vty) reached through
 * the H_PUT_TERM_CHAR and H_GET_TERM_CHAR hypercalls. It shows the parts of the plugin contract:
 * a factory with one options object, a description section, a service provided against a token
 * (built by the machine once every plugin has registered) that adds devices with a lifecycle,
 * hypercalls, device-tree nodes and a trace event.
 */
import {
  type Device,
  definePlugin,
  H_PARAMETER,
  H_SUCCESS,
  type HypercallResult,
  MachineTokens,
  type TraceEvent,
  token,
} from '@ddw/machine';
import * as z from 'zod';

export const H_GET_TERM_CHAR = 0x54;
export const H_PUT_TERM_CHAR = 0x58;

/** One terminal: what the guest wrote, and input waiting for it. */
export class VtyDevice implements Device {
  output = '';
  readonly #input: number[] = [];

  constructor(
    readonly id: string,
    readonly reg: number,
    private readonly traceWrite: TraceEvent,
  ) {}

  /** Host side: characters the guest will read with H_GET_TERM_CHAR. */
  type(text: string): void {
    for (const byte of new TextEncoder().encode(text)) this.#input.push(byte);
  }

  /** The guest's 16 bytes arrive packed big-endian in two 64-bit registers. */
  put(len: bigint, high: bigint, low: bigint): HypercallResult {
    if (len > 16n) return { ret: H_PARAMETER };
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setBigUint64(0, high);
    view.setBigUint64(8, low);
    const text = new TextDecoder().decode(bytes.subarray(0, Number(len)));
    this.output += text;
    if (this.traceWrite.enabled) this.traceWrite.emit(this.reg, Number(len));
    return { ret: H_SUCCESS };
  }

  get(): HypercallResult {
    const bytes = new Uint8Array(16);
    const n = Math.min(16, this.#input.length);
    for (let i = 0; i < n; i++) bytes[i] = this.#input.shift()!;
    const view = new DataView(bytes.buffer);
    return { ret: H_SUCCESS, outputs: [BigInt(n), view.getBigUint64(0), view.getBigUint64(8)] };
  }

  reset(): void {
    this.#input.length = 0;
  }
}

const vtySection = z
  .array(z.object({ id: z.string().min(1), reg: z.number().int().min(0).max(0xffffffff) }))
  .default([{ id: 'vty0', reg: 0x71000000 }]);

/** The plugin's one service: the terminals by their `reg`, which the two hypercalls serve. */
export const VtyTokens = {
  Terminals: token<ReadonlyMap<bigint, VtyDevice>>('vty-console', 'Terminals'),
} as const;

export const vtyConsole = definePlugin((options: { onOutput?: (id: string, text: string) => void } = {}) => ({
  name: 'vty-console',
  sections: { vty: vtySection },
  register(ctx) {
    const described = ctx.description.vty as z.infer<typeof vtySection>;
    ctx.provide(VtyTokens.Terminals, {
      useFactory: (get) => {
        const deviceTree = get(MachineTokens.DeviceTree);
        const devices = get(MachineTokens.Devices);
        const hypercalls = get(MachineTokens.Hypercalls);
        const traceWrite = get(MachineTokens.Trace).define(
          'spapr_vty_put(uint32_t reg, uint32_t len) "reg=0x%"PRIx32" len=%"PRIu32',
        );
        const byReg = new Map<bigint, VtyDevice>();
        deviceTree.ensureNode('/vdevice');
        for (const { id, reg } of described) {
          const vty = new VtyDevice(id, reg, traceWrite);
          devices.add(vty);
          byReg.set(BigInt(reg), vty);
          const node = `/vdevice/vty@${reg.toString(16)}`;
          deviceTree.addNode(node);
          deviceTree.setPropString(node, 'compatible', 'hvterm1');
          deviceTree.setPropU32Cells(node, 'reg', [reg]);
        }
        // An unknown terminal number is the guest's mistake: H_PARAMETER, as QEMU.
        hypercalls.register(
          H_PUT_TERM_CHAR,
          'H_PUT_TERM_CHAR',
          ([reg = 0n, len = 0n, high = 0n, low = 0n]) => {
            const vty = byReg.get(reg);
            if (!vty) return { ret: H_PARAMETER };
            const r = vty.put(len, high, low);
            if (r.ret === H_SUCCESS) options.onOutput?.(vty.id, vty.output);
            return r;
          },
        );
        hypercalls.register(
          H_GET_TERM_CHAR,
          'H_GET_TERM_CHAR',
          ([reg = 0n]) => byReg.get(reg)?.get() ?? { ret: H_PARAMETER },
        );
        return byReg;
      },
    });
  },
}));
