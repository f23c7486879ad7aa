import { loadSnapshot, type Machine, saveSnapshot } from '@ddw/machine';
import { buildPseries } from '@ddw/pseries';
import { VfioTokens } from '@ddw/vfio-common';
import { type Benchmark, median } from './harness.js';
import { createDdw, type Ddw, populateLinear } from './tce-workload.js';

const ENTRIES = 1 << 24; // 1 TiB in 64 KiB pages
const PAGE_SHIFT = 16;
/** A 1 TiB guest with a vfio-pci device on a simulated SPAPR TCE v2 host (the default host). */
const ARGS = '-M pseries -m 1T -device vfio-pci,host=0000:01:00.0';

/** The host IOMMU container the device's group is attached to. */
function hostContainer(m: Machine) {
  const c = m.get(VfioTokens.Vfio).containers.find((x) => x.groups.size > 0);
  if (!c) throw new Error('no VFIO container with a group attached');
  return c.fd;
}

/** Throws unless the host maps the window's first and last pages to the guest's first and last 64K pages. */
function checkHostMappings(m: Machine, ddw: Ddw): void {
  const fd = hostContainer(m);
  const first = fd.translate(ddw.busOffset);
  const last = fd.translate(ddw.busOffset + (BigInt(ENTRIES - 1) << BigInt(PAGE_SHIFT)));
  if (!first || !last)
    throw new Error(`host IOMMU: ${first ? 'last' : 'first'} page of the window not mapped`);
  if (last.vaddr - first.vaddr !== BigInt(ENTRIES - 1) << BigInt(PAGE_SHIFT) || !last.read || !last.write) {
    throw new Error(
      `host IOMMU: last page maps vaddr 0x${last.vaddr.toString(16)} (first 0x${first.vaddr.toString(16)})`,
    );
  }
}

/**
 * A 1 TiB guest with a vfio-pci device (simulated v2 host) and a 64K-page DDW over all of RAM,
 * populated through H_PUT_TCE_INDIRECT, so every one of its 16M TCEs is also a host IOMMU mapping.
 * Figure: TCEs per second loading its snapshot (saved once in setup) into a fresh machine of the
 * same options, which rebuilds the host mappings; the host's translation of the window's first and
 * last pages is checked after each load. Baseline: TCEs per second populating the window through
 * VFIO on a fresh machine. Ratio = population time / load time. Machines are built outside the
 * timing.
 */
const snapshotVfio: Benchmark = {
  name: 'snapshot-1t-64k-vfio',
  unit: 'M TCE/s',
  baselineLabel: 'populating the window through VFIO (H_PUT_TCE_INDIRECT)',
  target: { ratio: 1 },
  rounds: 3,
  async setup() {
    const source = await buildPseries(ARGS);
    const ddw = createDdw(source, PAGE_SHIFT, 40);
    populateLinear(source, ddw, ENTRIES, PAGE_SHIFT);
    checkHostMappings(source, ddw);
    const bytes = saveSnapshot(source);
    source.dispose();
    const loads: number[] = [];
    const populations: number[] = [];
    return {
      measure: async () => {
        const m = await buildPseries(ARGS);
        try {
          const t0 = performance.now();
          loadSnapshot(m, bytes);
          const seconds = (performance.now() - t0) / 1000;
          checkHostMappings(m, ddw);
          loads.push(seconds);
          return ENTRIES / seconds / 1e6;
        } finally {
          m.dispose();
        }
      },
      baseline: async () => {
        const m = await buildPseries(ARGS);
        try {
          const window = createDdw(m, PAGE_SHIFT, 40);
          const t0 = performance.now();
          populateLinear(m, window, ENTRIES, PAGE_SHIFT);
          const seconds = (performance.now() - t0) / 1000;
          populations.push(seconds);
          return ENTRIES / seconds / 1e6;
        } finally {
          m.dispose();
        }
      },
      details: () => ({
        'load s': median(loads),
        'population s': median(populations),
        'snapshot MiB': bytes.length / 2 ** 20,
      }),
    };
  },
};

export const benchmarks: Benchmark[] = [snapshotVfio];
