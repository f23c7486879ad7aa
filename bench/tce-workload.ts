/**
 * Workloads more than one benchmark file runs: DDWs created as Linux creates them and populated
 * through H_PUT_TCE_INDIRECT, and the tce-indirect-8g-4k workload (tce-indirect-8g-4k reports it;
 * ddw-64t-64k uses it as its baseline).
 */
import { createMachine, H_SUCCESS, type Machine } from '@ddw/machine';
import { rtasDdw } from '@ddw/rtas-ddw';
import { H_PUT_TCE_INDIRECT, spaprIommu } from '@ddw/spapr-iommu';
import { SpaprPciTokens, spaprPci } from '@ddw/spapr-pci';
import { throughput } from './harness.js';

export const LIST_BASE = 0x1000_0000n; // where the guest keeps its TCE lists
export const PER_CALL = 512;

export interface Ddw {
  liobn: number;
  busOffset: bigint;
}

/** ibm,create-pe-dma-window on the first PHB (BUID 0x800000020000000): 2^windowShift bytes in 2^pageShift pages. */
export function createDdw(m: Machine, pageShift: number, windowShift: number): Ddw {
  const r = m.guest.rtasCall(
    'ibm,create-pe-dma-window',
    [0, 0x08000000, 0x20000000, pageShift, windowShift],
    4,
  );
  if (r.status !== 0) throw new Error(`ibm,create-pe-dma-window failed: ${r.status}`);
  return { liobn: r.rets[1]!, busOffset: (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!) };
}

/** The TCE table behind a LIOBN, on whichever PHB holds it. */
export function tableOf(m: Machine, liobn: number) {
  for (const phb of m.get(SpaprPciTokens.Phbs).list) {
    const t = phb.tableFor(liobn);
    if (t) return t;
  }
  throw new Error(`no TCE table for LIOBN 0x${liobn.toString(16)}`);
}

/** A pseries machine with a DDW of 2^windowShift bytes in 2^pageShift pages, as Linux creates it. */
export async function machineWithDdw(ram: string, pageShift: number, windowShift: number) {
  const m = await createMachine([spaprIommu(), spaprPci(), rtasDdw()], { ram });
  const ddw = createDdw(m, pageShift, windowShift);
  return { m, ...ddw, table: tableOf(m, ddw.liobn) };
}

/** Writes `lists` TCE lists into guest RAM: list k maps pages k*512.. to RAM, read/write. */
export function writeLists(m: Machine, lists: number, pageShift: number): Uint8Array {
  const bytes = new Uint8Array(lists * PER_CALL * 8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < lists * PER_CALL; i++) {
    view.setBigUint64(i * 8, (BigInt(i) << BigInt(pageShift)) | 3n);
  }
  m.memory.write(LIST_BASE, bytes);
  return bytes;
}

/** The same reads and stores without the model: big-endian words out of the lists into a table. */
export function plainLoop(lists: Uint8Array, table: Uint32Array): number {
  const view = new DataView(lists.buffer, lists.byteOffset, lists.byteLength);
  const n = lists.byteLength / 8;
  for (let i = 0; i < n; i++) {
    table[i * 2] = view.getUint32(i * 8);
    table[i * 2 + 1] = view.getUint32(i * 8 + 4);
  }
  return n;
}

/**
 * Linux mapping 8 GiB of RAM into a 4 KiB-page DDW: 2M TCEs in 4096 H_PUT_TCE_INDIRECT calls of
 * lists already in guest RAM. `model` and `plain` each run it for ~150 ms and return M TCE/s.
 */
export async function indirect8g4k(): Promise<{ model(): number; plain(): number; dispose(): void }> {
  const calls = 4096;
  const { m, liobn, busOffset } = await machineWithDdw('8G', 12, 33);
  const lists = writeLists(m, calls, 12);
  const plainTable = new Uint32Array(calls * PER_CALL * 2);
  return {
    model: () =>
      throughput(() => {
        for (let c = 0; c < calls; c++) {
          const ioba = busOffset + (BigInt(c * PER_CALL) << 12n);
          m.guest.hcall(H_PUT_TCE_INDIRECT, liobn, ioba, LIST_BASE + BigInt(c * PER_CALL * 8), PER_CALL);
        }
        return calls * PER_CALL;
      }) / 1e6,
    plain: () => throughput(() => plainLoop(lists, plainTable)) / 1e6,
    dispose: () => m.dispose(),
  };
}

/**
 * Populates `entries` TCEs from the window's start as Linux populates a direct window: entry i
 * maps page i of RAM read/write ((i << pageShift) | 3), one 512-entry list written to guest RAM
 * per H_PUT_TCE_INDIRECT. Throws on the first call that fails.
 */
export function populateLinear(m: Machine, ddw: Ddw, entries: number, pageShift: number): void {
  // Pages reach 2^40 and more: the TCE is written as two 32-bit halves.
  const split = 2 ** (32 - pageShift);
  populateLists(m, ddw, entries, pageShift, (view, first, n) => {
    for (let k = 0; k < n; k++) {
      const page = first + k;
      view.setUint32(k * 8, Math.floor(page / split));
      view.setUint32(k * 8 + 4, (((page % split) << pageShift) | 3) >>> 0);
    }
  });
}

/**
 * Populates the window from its start with the TCEs in `halves` (entry i: high word halves[2i],
 * low word halves[2i + 1]), one 512-entry list written to guest RAM per H_PUT_TCE_INDIRECT.
 */
export function populateFrom(m: Machine, ddw: Ddw, halves: Uint32Array, pageShift: number): void {
  populateLists(m, ddw, halves.length / 2, pageShift, (view, first, n) => {
    for (let k = 0; k < n; k++) {
      view.setUint32(k * 8, halves[(first + k) * 2]!);
      view.setUint32(k * 8 + 4, halves[(first + k) * 2 + 1]!);
    }
  });
}

/**
 * The guest's side of a population: `fill` writes the n TCEs from entry `first` into a list, which
 * goes to guest RAM and through H_PUT_TCE_INDIRECT, 512 at a time. Throws on the first call that fails.
 */
function populateLists(
  m: Machine,
  ddw: Ddw,
  entries: number,
  pageShift: number,
  fill: (view: DataView, first: number, n: number) => void,
): void {
  const list = new Uint8Array(PER_CALL * 8);
  const view = new DataView(list.buffer);
  for (let c = 0; c * PER_CALL < entries; c++) {
    const n = Math.min(PER_CALL, entries - c * PER_CALL);
    fill(view, c * PER_CALL, n);
    m.memory.write(LIST_BASE, n === PER_CALL ? list : list.subarray(0, n * 8));
    const { ret } = m.guest.hcall(
      H_PUT_TCE_INDIRECT,
      ddw.liobn,
      ddw.busOffset + (BigInt(c * PER_CALL) << BigInt(pageShift)),
      LIST_BASE,
      n,
    );
    if (ret !== H_SUCCESS) throw new Error(`H_PUT_TCE_INDIRECT of list ${c} returned ${ret}`);
  }
}
