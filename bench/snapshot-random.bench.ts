import { crc32 } from 'node:zlib';
import { createMachine, loadSnapshot, type Machine, saveSnapshot } from '@ddw/machine';
import { rtasDdw } from '@ddw/rtas-ddw';
import { spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import { type Benchmark, median } from './harness.js';
import { createDdw, populateFrom, tableOf } from './tce-workload.js';

const ENTRIES = 1 << 24; // 1 TiB in 64 KiB pages
const PAGE_SHIFT = 16;

const build = () => createMachine([spaprIommu(), spaprPci(), rtasDdw()], { ram: '1T' });

/**
 * 16M random TCEs as (high, low) halves: entry i maps a random 64K page of the 1 TiB of RAM with
 * random permissions 1..3 (read, write or both). xorshift32 from a fixed seed, so every run
 * saves the same table.
 */
function randomTces(): Uint32Array {
  const halves = new Uint32Array(ENTRIES * 2);
  let x = 0x2545f491;
  for (let i = 0; i < ENTRIES; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const page = (x >>> 0) % ENTRIES;
    const perm = 1 + (((x >>> 24) & 0xff) % 3);
    halves[i * 2] = page >>> (32 - PAGE_SHIFT);
    halves[i * 2 + 1] = ((page << PAGE_SHIFT) | perm) >>> 0;
  }
  return halves;
}

/**
 * The snapshot-1t-64k window with every entry random (random page numbers, permissions 1..3,
 * written through H_PUT_TCE_INDIRECT lists): nothing for run-length or sparse encodings to take.
 * Figure: TCEs per second through ddw's save + load in memory (saveSnapshot's bytes, then
 * loadSnapshot into a fresh machine of the same description built outside the timing). Baseline:
 * a lean encoder + decoder of the same entries in this file: an exact-size buffer, big-endian
 * DataView stores of the 16M u64, zlib.crc32 of it; decoding reads them back into a Uint32Array
 * and checks the crc32.
 */
const snapshotRandom: Benchmark = {
  name: 'snapshot-1t-64k-random',
  unit: 'M TCE/s',
  baselineLabel: 'lean codec: 16M BE u64 + crc32 into an exact buffer, and back',
  target: { ratio: 0.5 },
  rounds: 3,
  async setup() {
    const halves = randomTces();
    const source = await build();
    const ddw = createDdw(source, PAGE_SHIFT, 40);
    populateFrom(source, ddw, halves, PAGE_SHIFT);
    const expected = (i: number) => (BigInt(halves[i * 2]!) << 32n) | BigInt(halves[i * 2 + 1]!);
    let size = 0;
    const saves: number[] = [];
    const loads: number[] = [];
    return {
      measure: async () => {
        const target: Machine = await build();
        try {
          const t0 = performance.now();
          const bytes = saveSnapshot(source);
          const t1 = performance.now();
          loadSnapshot(target, bytes);
          const t2 = performance.now();
          size = bytes.length;
          const table = tableOf(target, ddw.liobn);
          for (const i of [0, 1, ENTRIES >> 1, ENTRIES - 1]) {
            if (table.entry(i) !== expected(i))
              throw new Error(`loaded entry ${i} holds 0x${table.entry(i).toString(16)}`);
          }
          saves.push((t1 - t0) / 1000);
          loads.push((t2 - t1) / 1000);
          return ENTRIES / ((t2 - t0) / 1000) / 1e6;
        } finally {
          target.dispose();
        }
      },
      baseline: () => {
        const t0 = performance.now();
        const bytes = new Uint8Array(ENTRIES * 8);
        const out = new DataView(bytes.buffer);
        for (let i = 0; i < ENTRIES; i++) {
          out.setUint32(i * 8, halves[i * 2]!);
          out.setUint32(i * 8 + 4, halves[i * 2 + 1]!);
        }
        const crc = crc32(bytes);
        const decoded = new Uint32Array(ENTRIES * 2);
        const view = new DataView(bytes.buffer);
        for (let i = 0; i < ENTRIES; i++) {
          decoded[i * 2] = view.getUint32(i * 8);
          decoded[i * 2 + 1] = view.getUint32(i * 8 + 4);
        }
        if (crc32(bytes) !== crc) throw new Error('lean codec: crc32 mismatch');
        const seconds = (performance.now() - t0) / 1000;
        if (decoded[ENTRIES * 2 - 1] !== halves[ENTRIES * 2 - 1]) throw new Error('lean codec decoded wrong');
        return ENTRIES / seconds / 1e6;
      },
      details: () => ({
        'save s': median(saves),
        'load s': median(loads),
        'snapshot MiB': size / 2 ** 20,
        'entries MiB': (ENTRIES * 8) / 2 ** 20,
      }),
    };
  },
};

export const benchmarks: Benchmark[] = [snapshotRandom];
