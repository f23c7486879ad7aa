import { createMachine, loadSnapshot, type Machine, saveSnapshot } from '@ddw/machine';
import { rtasDdw } from '@ddw/rtas-ddw';
import { H_PUT_TCE_INDIRECT, spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import type { Benchmark } from './harness.js';

const LIST_BASE = 0x1000_0000n;
const PER_CALL = 512;
const ENTRIES = 1 << 24; // 1 TiB in 64 KiB pages

const build = () => createMachine([spaprIommu(), spaprPci(), rtasDdw()], { ram: '1T' });

/** A 1 TiB guest whose 64 KiB-page DDW maps all of RAM, populated as Linux does. */
async function populated(): Promise<Machine> {
  const m = await build();
  const r = m.guest.rtasCall('ibm,create-pe-dma-window', [0, 0x08000000, 0x20000000, 16, 40], 4);
  if (r.status !== 0) throw new Error(`create failed: ${r.status}`);
  const liobn = r.rets[1]!;
  const busOffset = (BigInt(r.rets[2]!) << 32n) | BigInt(r.rets[3]!);
  const list = new Uint8Array(PER_CALL * 8);
  const view = new DataView(list.buffer);
  for (let c = 0; c < ENTRIES / PER_CALL; c++) {
    for (let k = 0; k < PER_CALL; k++) {
      const page = c * PER_CALL + k;
      view.setUint32(k * 8, Math.floor(page / 0x10000));
      view.setUint32(k * 8 + 4, ((page & 0xffff) << 16) | 3);
    }
    m.memory.write(LIST_BASE, list);
    m.guest.hcall(H_PUT_TCE_INDIRECT, liobn, busOffset + (BigInt(c * PER_CALL) << 16n), LIST_BASE, PER_CALL);
  }
  return m;
}

/**
 * Save and load of that machine (a fresh machine of the same description each round). Figure: TCEs
 * per second through save+load; baseline: copying the same 128 MiB of entries out and back in.
 */
const snapshot1t: Benchmark = {
  name: 'snapshot-1t-64k',
  unit: 'M TCE/s',
  baselineLabel: 'plain copy of the same entries out and back',
  rounds: 3,
  async setup() {
    const source = await populated();
    const targets = [await build(), await build(), await build(), await build()];
    let size = 0;
    const saves: number[] = [];
    const loads: number[] = [];
    const plain = new Uint32Array(ENTRIES * 2);
    const copy = new Uint32Array(ENTRIES * 2);
    return {
      measure: () => {
        const t0 = performance.now();
        const bytes = saveSnapshot(source);
        const t1 = performance.now();
        loadSnapshot(targets.pop()!, bytes);
        const t2 = performance.now();
        size = bytes.length;
        saves.push((t1 - t0) / 1000);
        loads.push((t2 - t1) / 1000);
        return ENTRIES / ((t2 - t0) / 1000) / 1e6;
      },
      baseline: () => {
        const t0 = performance.now();
        copy.set(plain);
        plain.set(copy);
        return ENTRIES / ((performance.now() - t0) / 1000) / 1e6;
      },
      details: () => {
        const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
        return {
          'save s': median(saves),
          'load s': median(loads),
          'file MiB': size / 2 ** 20,
          'entries MiB': (ENTRIES * 8) / 2 ** 20,
        };
      },
    };
  },
};

export const benchmarks: Benchmark[] = [snapshot1t];
