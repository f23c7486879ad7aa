import {
  DeviceTree,
  H_PUT_TCE_INDIRECT,
  type HypercallResult,
  RTAS_IBM_CREATE_PE_DMA_WINDOW,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
  RTAS_IBM_REMOVE_PE_DMA_WINDOW,
  RTAS_IBM_RESET_PE_DMA_WINDOW,
  type RtasCallResult,
} from '@ddw/machine';
import type { LinuxGuestPort } from '../src/index.js';

export const PHB = '/pci@800000020000000';

export interface StubCall {
  opcode: number;
  args: bigint[];
  /** For H_PUT_TCE_INDIRECT: the TCEs the list held when the call was made. */
  list?: bigint[];
}

export interface StubOptions {
  /** RAM ranges [start, size] for /memory nodes (one node each). */
  memory: [bigint, bigint][];
  /** ibm,lrdr-capacity's first value (0 = no hotplug). */
  hotplugMax?: bigint;
  /** The query's answer after the status: as many cells as the guest asks for. */
  query: number[];
  /** The create's answer after the status. */
  create?: [number, number, number];
  multiTce?: boolean;
}

/**
 * A guest port over a hand-made device tree and a hypervisor that answers every hypercall with
 * H_SUCCESS and every DDW RTAS call as told, recording what the guest sent. For layouts QEMU's
 * pseries never produces (several memory nodes, ranges not aligned to a TCE).
 */
export function stubPort(options: StubOptions) {
  const dt = new DeviceTree();
  dt.setPropU32Cells('/', '#address-cells', [2]);
  dt.setPropU32Cells('/', '#size-cells', [2]);
  dt.ensureNode('/rtas');
  dt.setPropStrings(
    '/rtas',
    'ibm,hypertas-functions',
    options.multiTce === false ? ['hcall-tce'] : ['hcall-tce', 'hcall-multi-tce'],
  );
  const max = options.hotplugMax ?? 0n;
  dt.setPropU32Cells('/rtas', 'ibm,lrdr-capacity', [
    Number(max >> 32n),
    Number(max & 0xffffffffn),
    0,
    0x10000000,
    1,
  ]);
  for (const [start, size] of options.memory) {
    const node = `/memory@${start.toString(16)}`;
    dt.ensureNode(node);
    dt.setPropU32Cells(node, 'reg', [hi(start), lo(start), hi(size), lo(size)]);
  }
  dt.ensureNode(PHB);
  dt.setPropU32Cells(PHB, 'reg', [0x08000000, 0x20000000, 0, 0]);
  dt.setPropU32Cells(PHB, 'ibm,#dma-address-cells', [2]);
  dt.setPropU32Cells(PHB, 'ibm,#dma-size-cells', [2]);
  dt.setPropU32Cells(PHB, 'ibm,ddw-applicable', [
    RTAS_IBM_QUERY_PE_DMA_WINDOW,
    RTAS_IBM_CREATE_PE_DMA_WINDOW,
    RTAS_IBM_REMOVE_PE_DMA_WINDOW,
  ]);
  dt.setPropU32Cells(PHB, 'ibm,ddw-extensions', [2, RTAS_IBM_RESET_PE_DMA_WINDOW, 1]);
  dt.setPropU32Cells(PHB, 'ibm,dma-window', [0x80000000, 0, 0, 0, 0x40000000]);
  dt.ensureNode(`${PHB}/ethernet@0`);
  dt.setPropU32Cells(`${PHB}/ethernet@0`, 'reg', [0, 0, 0, 0, 0]);
  dt.setPropU32Cells(`${PHB}/ethernet@0`, 'vendor-id', [0x8086]);
  dt.setPropU32Cells(`${PHB}/ethernet@0`, 'device-id', [0x10d3]);

  const ram = new Map<bigint, Uint8Array>();
  const calls: StubCall[] = [];
  const rtas: { token: number; args: number[]; nret: number }[] = [];
  const port: LinuxGuestPort = {
    deviceTree: dt,
    memory: {
      write: (addr: bigint, data: Uint8Array) => {
        ram.set(addr, data.slice());
        return 0;
      },
    } as unknown as LinuxGuestPort['memory'],
    hcall: (opcode, ...args): HypercallResult => {
      const call: StubCall = { opcode: Number(opcode), args: args.map((a) => BigInt(a)) };
      if (call.opcode === H_PUT_TCE_INDIRECT) {
        const bytes = ram.get(call.args[2]!) ?? new Uint8Array(0);
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        call.list = Array.from({ length: Number(call.args[3]) }, (_, i) => view.getBigUint64(i * 8));
      }
      calls.push(call);
      return { ret: 0n };
    },
    rtasCall: (call, args, nret): RtasCallResult => {
      const token = Number(call);
      rtas.push({ token, args: [...args], nret });
      const answer =
        token === RTAS_IBM_QUERY_PE_DMA_WINDOW
          ? options.query
          : token === RTAS_IBM_CREATE_PE_DMA_WINDOW
            ? (options.create ?? [0x80000001, 0x08000000, 0])
            : [];
      const rets = [0, ...answer].slice(0, nret);
      while (rets.length < nret) rets.push(0);
      return { status: 0, rets, hcallRet: 0n };
    },
  };
  return { port, calls, rtas, dt };
}

function hi(v: bigint): number {
  return Number(v >> 32n);
}

function lo(v: bigint): number {
  return Number(v & 0xffffffffn);
}
