import type { Machine } from '@ddw/machine';
import { buildPseries } from '@ddw/pseries';
import { H_PUT_TCE_INDIRECT } from '@ddw/spapr-iommu';
import { type Benchmark, throughput } from './harness.js';
import { plainLoop } from './tce-workload.js';

const LIST_BASE = 0x1000_0000n;
const PER_CALL = 512;
const CALLS = 4096; // 2M TCEs: 8 GiB in 4 KiB pages

const PAGES = 2 ** 21; // 4 KiB pages of 8 GiB of RAM

/**
 * An 8 GiB pseries guest with a 4 KiB-page DDW over all of it, its TCE lists written to RAM: TCE i
 * maps page `page(i)` read/write (page i, a direct window, unless told otherwise).
 */
async function guest(
  qemuArgs: string,
  page: (i: number) => number = (i) => i,
): Promise<{ m: Machine; liobn: number; busOffset: bigint; lists: Uint8Array }> {
  const m = await buildPseries(qemuArgs);
  const r = m.guest.rtasCall('ibm,create-pe-dma-window', [0, 0x08000000, 0x20000000, 12, 33], 4);
  if (r.status !== 0) throw new Error(`create failed: ${r.status}`);
  const bytes = new Uint8Array(CALLS * PER_CALL * 8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < CALLS * PER_CALL; i++) view.setBigUint64(i * 8, (BigInt(page(i)) << 12n) | 3n);
  m.memory.write(LIST_BASE, bytes);
  return { m, liobn: r.rets[1]!, busOffset: (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!), lists: bytes };
}

function populate(g: { m: Machine; liobn: number; busOffset: bigint }): number {
  for (let c = 0; c < CALLS; c++) {
    const ioba = g.busOffset + (BigInt(c * PER_CALL) << 12n);
    g.m.guest.hcall(H_PUT_TCE_INDIRECT, g.liobn, ioba, LIST_BASE + BigInt(c * PER_CALL * 8), PER_CALL);
  }
  return CALLS * PER_CALL;
}

/**
 * The tce-indirect-8g-4k workload with a vfio-pci device on the PHB (simulated v2 host, 64K host
 * pages): every TCE also becomes a host IOMMU mapping. Baseline: the same machine and workload
 * without the device, in the same run.
 */
const indirectVfio: Benchmark = {
  name: 'tce-indirect-8g-4k-vfio',
  unit: 'M TCE/s',
  baselineLabel: 'same workload without VFIO',
  target: { ratio: 0.5 },
  rounds: 5,
  async setup() {
    const withVfio = await guest('-M pseries -m 8G -device vfio-pci,host=0000:01:00.0');
    const without = await guest('-M pseries -m 8G');
    return {
      measure: () => throughput(() => populate(withVfio)) / 1e6,
      baseline: () => throughput(() => populate(without)) / 1e6,
    };
  },
};

/** Page i of a fixed pseudo-random sequence over guest RAM (same in every run). */
function randomPages(): (i: number) => number {
  const pages = new Uint32Array(CALLS * PER_CALL);
  let seed = 0x2545f491;
  for (let i = 0; i < pages.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    pages[i] = seed % PAGES;
  }
  return (i) => pages[i]!;
}

/**
 * An irregular table: the same calls, every TCE a random page of RAM, so no list is a progression
 * and each entry is stored, notified and host-mapped on its own. Baseline: the plain loop of
 * tce-indirect-8g-4k (the lists' words copied into a table without the model) over the same lists,
 * a measure of the machine's speed that does not move with the model. Before the run-based path
 * (bc4a402) this bench gave ratio 0.053-0.062 (7-13 M TCE/s), run back to back with today's code on
 * the same machine: the target keeps an irregular table from costing more than it did.
 */
const indirectVfioRandom: Benchmark = {
  name: 'tce-indirect-8g-4k-vfio-random',
  unit: 'M TCE/s',
  baselineLabel: 'plain loop over the same lists',
  target: { ratio: 0.05 },
  rounds: 5,
  async setup() {
    const withVfio = await guest('-M pseries -m 8G -device vfio-pci,host=0000:01:00.0', randomPages());
    const plainTable = new Uint32Array(CALLS * PER_CALL * 2);
    return {
      measure: () => throughput(() => populate(withVfio)) / 1e6,
      baseline: () => throughput(() => plainLoop(withVfio.lists, plainTable)) / 1e6,
    };
  },
};

export const benchmarks: Benchmark[] = [indirectVfio, indirectVfioRandom];
