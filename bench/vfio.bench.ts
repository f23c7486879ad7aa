import type { Machine } from '@ddw/machine';
import { buildPseries } from '@ddw/pseries';
import { H_PUT_TCE_INDIRECT } from '@ddw/spapr-iommu';
import { type Benchmark, throughput } from './harness.js';

const LIST_BASE = 0x1000_0000n;
const PER_CALL = 512;
const CALLS = 4096; // 2M TCEs: 8 GiB in 4 KiB pages

/** An 8 GiB pseries guest with a 4 KiB-page DDW over all of it, its TCE lists written to RAM. */
async function guest(qemuArgs: string): Promise<{ m: Machine; liobn: number; busOffset: bigint }> {
  const m = await buildPseries(qemuArgs);
  const r = m.guest.rtasCall('ibm,create-pe-dma-window', [0, 0x08000000, 0x20000000, 12, 33], 4);
  if (r.status !== 0) throw new Error(`create failed: ${r.status}`);
  const bytes = new Uint8Array(CALLS * PER_CALL * 8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < CALLS * PER_CALL; i++) view.setBigUint64(i * 8, (BigInt(i) << 12n) | 3n);
  m.memory.write(LIST_BASE, bytes);
  return { m, liobn: r.rets[1]!, busOffset: (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!) };
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

export const benchmarks: Benchmark[] = [indirectVfio];
