import { LinuxGuest } from '@ddw/guest-linux';
import { type Machine, MachineTokens, parseQemuSize } from '@ddw/machine';
import { buildPseries } from '@ddw/pseries';
import { type Benchmark, collectGarbage, median } from './harness.js';
import { indirect8g4k, tableOf } from './tce-workload.js';

/**
 * The guest's RAM (QEMU's -m): 64T by default, the size; DDW_BENCH_64T_SIZE=1T (or 4T, ...)
 * tries the benchmark at a size that finishes while the TCE table is still materialised per entry
 * (a 64 TiB window of 64 KiB pages is 2^30 entries: 8 GiB).
 */
const SIZE = process.env.DDW_BENCH_64T_SIZE ?? '64T';
const PAGE_SHIFT = 16;
/**
 * QEMU options: the PHB offers 4K and 64K IOMMU pages (pgsz), so the guest's DDW uses 64K pages;
 * one device with a 64-bit DMA mask for the guest to probe.
 */
const ARGS = `-M pseries -m ${SIZE} -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e`;
/**
 * Linux 6.1 sizes its direct window from the top of RAM, so `-m 64T` alone gets a 2^46-byte window
 * (2^30 64K entries) mapping all RAM. (6.12, ddw run's default guest, sizes it from
 * ibm,lrdr-capacity, i.e. from maxmem, which must then exceed RAM: a window twice the size, half
 * populated.)
 */
const GENERATION = 'linux-6.1';

interface Round {
  buildS: number;
  populationS: number;
  /** RSS growth over the build and population, MiB (see rssGrowth). */
  growthMiB: number;
  calls: number;
}

/**
 * Builds the machine and boots the Linux guest model on it, which negotiates a 64K-page direct
 * window for the device's PE and populates it through the guest port (its TCE lists in guest RAM,
 * H_PUT_TCE_INDIRECT), as `ddw run` does. Checks the window maps all RAM, then disposes the machine.
 */
async function bootAndPopulate(args: string): Promise<Round & { entries: number }> {
  collectGarbage();
  const rss0 = process.memoryUsage.rss();
  const peak0 = process.resourceUsage().maxRSS * 1024;
  const t0 = performance.now();
  const m: Machine = await buildPseries(args);
  try {
    const t1 = performance.now();
    const guest = new LinuxGuest(m.guest, { generation: GENERATION });
    guest.boot();
    const states = guest.probeAll();
    const t2 = performance.now();
    const ram = m.get(MachineTokens.GuestRam).size;
    const entries = Number(ram >> BigInt(PAGE_SHIFT));
    const state = states[0];
    if (state?.mode !== 'direct' || state.window.pageShift !== PAGE_SHIFT) {
      const d = guest.decisions()[0];
      throw new Error(`no 64K direct window: ${state?.mode ?? 'no device'}; ${d?.summary ?? ''}`);
    }
    // The last entry maps the guest's last 64K page: the guest really populated all of RAM.
    const last = tableOf(m, state.window.liobn).entry(entries - 1);
    if (last !== ((BigInt(entries - 1) << BigInt(PAGE_SHIFT)) | 3n)) {
      throw new Error(`entry ${entries - 1} holds 0x${last.toString(16)}`);
    }
    const rss1 = process.memoryUsage.rss();
    const peak1 = process.resourceUsage().maxRSS * 1024;
    return {
      entries,
      buildS: (t1 - t0) / 1000,
      populationS: (t2 - t1) / 1000,
      growthMiB: rssGrowth(rss0, peak0, rss1, peak1),
      calls: guest.hypercallCounts().H_PUT_TCE_INDIRECT,
    };
  } finally {
    m.dispose();
  }
}

/**
 * RSS growth over a stretch of synchronous work, MiB: the peak (maxRSS) minus the RSS before, when
 * the stretch raised the process's peak (then that peak is the stretch's); otherwise the peak was
 * set earlier and the stretch's own is not known, and the RSS at its end minus the RSS before is
 * used.
 */
function rssGrowth(rss0: number, peak0: number, rss1: number, peak1: number): number {
  return (Math.max(rss1, peak1 > peak0 ? peak1 : 0) - rss0) / 2 ** 20;
}

/**
 * A 64 TiB guest (DDW_BENCH_64T_SIZE) whose Linux guest model negotiates a 64K-page direct window
 * (2^30 entries) and populates it, timed from boot to the end of probe. Baseline: the
 * tce-indirect-8g-4k workload (H_PUT_TCE_INDIRECT of lists already in RAM) in this process,
 * interleaved, so both run with the same compiled code. A fresh machine each round. Also reports
 * ddw-64t-64k-rss: the RSS growth over build + population; the first round runs before anything
 * large has been allocated and freed in this process, so nothing it allocates can reuse freed
 * memory and hide.
 */
const ddw64t: Benchmark = {
  name: 'ddw-64t-64k',
  unit: 'M TCE/s',
  baselineLabel: 'tce-indirect-8g-4k (H_PUT_TCE_INDIRECT of lists in RAM) in this process',
  target: { ratio: 0.5 },
  rounds: 3,
  warmup: false,
  extra: [
    {
      name: 'ddw-64t-64k-rss',
      unit: 'MiB',
      baselineLabel: 'the window as a flat table: 8 bytes per entry',
      target: { max: 256 },
    },
  ],
  async setup() {
    if ((parseQemuSize(SIZE, 'DDW_BENCH_64T_SIZE') & ((1n << 30n) - 1n)) !== 0n) {
      throw new Error(`DDW_BENCH_64T_SIZE=${SIZE}: give a whole number of GiB`);
    }
    const baseline = await indirect8g4k();
    baseline.model(); // warm; the guest's path warms within its first round's millions of entries
    const rounds: Round[] = [];
    let entries = 0;
    return {
      measure: async () => {
        const r = await bootAndPopulate(ARGS);
        entries = r.entries;
        rounds.push(r);
        return r.entries / r.populationS / 1e6;
      },
      baseline: baseline.model,
      details: () => ({
        guest: `-m ${SIZE}, ${GENERATION}`,
        entries,
        'population s': median(rounds.map((r) => r.populationS)),
        'build s': median(rounds.map((r) => r.buildS)),
        'H_PUT_TCE_INDIRECT calls': rounds[0]?.calls ?? 0,
      }),
      extra: () => ({
        'ddw-64t-64k-rss': {
          // The largest round's (the target is a ceiling): in practice the first, as later rounds
          // reuse memory the allocator kept from the rounds before.
          value: Math.max(...rounds.map((r) => r.growthMiB)),
          baseline: (entries * 8) / 2 ** 20,
          details: {
            'growth per round MiB': rounds.map((r) => r.growthMiB.toFixed(1)).join(' '),
            'peak RSS MiB': process.resourceUsage().maxRSS / 1024,
          },
        },
      }),
    };
  },
};

export const benchmarks: Benchmark[] = [ddw64t];
