import { H_PUT_TCE_INDIRECT } from '@ddw/spapr-iommu';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import type { Benchmark } from './harness.js';
import { indirect8g4k, LIST_BASE, machineWithDdw, PER_CALL } from './tce-workload.js';

/** Linux mapping 8 GiB of RAM into a 4 KiB-page DDW: 2M TCEs in 4096 H_PUT_TCE_INDIRECT calls. */
const indirect8g: Benchmark = {
  name: 'tce-indirect-8g-4k',
  unit: 'M TCE/s',
  baselineLabel: 'plain loop: same list reads and table stores',
  target: { ratio: 0.5 },
  async setup() {
    const w = await indirect8g4k();
    return { measure: w.model, baseline: w.plain };
  },
};

/**
 * A 64 KiB-page DDW over a 1 TiB guest with all 16M entries populated, as Linux populates a direct
 * window: the guest writes each 512-entry list into its RAM, then H_PUT_TCE_INDIRECT. Each round
 * starts from a fresh window (remove + create), so table chunks are allocated in every round.
 */
const ddw1t: Benchmark = {
  name: 'ddw-1t-64k',
  unit: 'M TCE/s',
  baselineLabel: 'plain loop: same list reads into a preallocated 16M-entry array',
  rounds: 3,
  async setup() {
    const pageShift = 16;
    const entries = 1 << 24;
    const calls = entries / PER_CALL;
    const rssBefore = process.resourceUsage().maxRSS;
    const ddw = await machineWithDdw('1T', pageShift, 40);
    const list = new Uint8Array(PER_CALL * 8);
    const listView = new DataView(list.buffer);
    let liobn = ddw.liobn;
    let busOffset = ddw.busOffset;
    const times: number[] = [];
    const plainTable = new Uint32Array(entries * 2);
    /** List `c`: TCEs (page << 16) | 3 for its 512 pages, as two 32-bit halves (pages reach 2^40). */
    const fillList = (c: number) => {
      for (let k = 0; k < PER_CALL; k++) {
        const page = c * PER_CALL + k;
        listView.setUint32(k * 8, Math.floor(page / 0x10000));
        listView.setUint32(k * 8 + 4, ((page & 0xffff) << 16) | 3);
      }
    };
    return {
      measure: () => {
        const m = ddw.m;
        m.guest.rtasCall('ibm,remove-pe-dma-window', [liobn], 1);
        const r = m.guest.rtasCall('ibm,create-pe-dma-window', [0, 0x08000000, 0x20000000, pageShift, 40], 4);
        if (r.status !== 0) throw new Error(`create failed: ${r.status}`);
        liobn = r.rets[1]!;
        busOffset = (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!);
        const start = performance.now();
        for (let c = 0; c < calls; c++) {
          fillList(c);
          m.memory.write(LIST_BASE, list);
          m.guest.hcall(
            H_PUT_TCE_INDIRECT,
            liobn,
            busOffset + (BigInt(c * PER_CALL) << 16n),
            LIST_BASE,
            PER_CALL,
          );
        }
        const seconds = (performance.now() - start) / 1000;
        times.push(seconds);
        return entries / seconds / 1e6;
      },
      baseline: () => {
        const start = performance.now();
        for (let c = 0; c < calls; c++) {
          fillList(c);
          for (let k = 0; k < PER_CALL; k++) {
            plainTable[(c * PER_CALL + k) * 2] = listView.getUint32(k * 8);
            plainTable[(c * PER_CALL + k) * 2 + 1] = listView.getUint32(k * 8 + 4);
          }
        }
        return entries / ((performance.now() - start) / 1000) / 1e6;
      },
      details: () => {
        const table = ddw.m.get(SpaprPciTokens.Phbs).list[0]!.tableFor(liobn)!;
        // The last entry maps the guest's last 64K page: the run really populated everything.
        const probe = table.entry(entries - 1);
        if (probe !== ((BigInt(entries - 1) << 16n) | 3n))
          throw new Error(`last entry holds 0x${probe.toString(16)}`);
        return {
          'full population s': [...times].sort((a, b) => a - b)[times.length >> 1]!,
          'peak RSS MiB': process.resourceUsage().maxRSS / 1024,
          'RSS growth MiB': (process.resourceUsage().maxRSS - rssBefore) / 1024,
        };
      },
    };
  },
};

export const benchmarks: Benchmark[] = [ddw1t, indirect8g];
