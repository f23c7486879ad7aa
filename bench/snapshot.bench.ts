import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMachine, type Machine } from '@ddw/machine';
import { rtasDdw } from '@ddw/rtas-ddw';
import { spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import { type Benchmark, median } from './harness.js';
import { loadFromFile, saveToFile, snapshotApi } from './snapshot-io.js';
import { createDdw, type Ddw, populateLinear, tableOf } from './tce-workload.js';

const ENTRIES = 1 << 24; // 1 TiB in 64 KiB pages
const PAGE_SHIFT = 16;

const build = () => createMachine([spaprIommu(), spaprPci(), rtasDdw()], { ram: '1T' });

/**
 * Save of a 1 TiB guest whose 64 KiB-page DDW maps all of RAM (16M entries, entry i =
 * (i << 16) | 3), populated as Linux does, to a temp file, and load of that file into a fresh
 * machine of the same description (built outside the timing), through the public API (snapshot-io.ts:
 * the streaming API when @ddw/machine has it, else the bytes API and fs). Figure: TCEs per second
 * through save + load; baseline: QEMU's flat table, 16M big-endian u64, encoded, written to a temp
 * file, read back and decoded, with fs. Ratio = flat time / ddw time. Also reports
 * snapshot-1t-64k-size, the snapshot file's size.
 */
const snapshot1t: Benchmark = {
  name: 'snapshot-1t-64k',
  unit: 'M TCE/s',
  baselineLabel: 'flat 128 MiB table file: 16M BE u64 encoded, written, read back, decoded (fs)',
  target: { ratio: 10 },
  rounds: 3,
  extra: [
    {
      name: 'snapshot-1t-64k-size',
      unit: 'KiB',
      baselineLabel: 'the flat table file',
      target: { max: 64 },
    },
  ],
  async setup() {
    const dir = mkdtempSync(join(tmpdir(), 'ddw-bench-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    const snapFile = join(dir, 'vm.snap');
    const flatFile = join(dir, 'tces.bin');
    const source = await build();
    const ddw: Ddw = createDdw(source, PAGE_SHIFT, 40);
    populateLinear(source, ddw, ENTRIES, PAGE_SHIFT);
    const expectedLast = (BigInt(ENTRIES - 1) << BigInt(PAGE_SHIFT)) | 3n;
    // The table as (high, low) halves, what the flat encoder stores.
    const flat = new Uint32Array(ENTRIES * 2);
    for (let i = 0; i < ENTRIES; i++) {
      flat[i * 2] = Math.floor(i / 2 ** (32 - PAGE_SHIFT));
      flat[i * 2 + 1] = (((i % 2 ** (32 - PAGE_SHIFT)) << PAGE_SHIFT) | 3) >>> 0;
    }
    const decoded = new Uint32Array(ENTRIES * 2);
    let size = 0;
    const saves: number[] = [];
    const loads: number[] = [];
    return {
      measure: async () => {
        const target: Machine = await build();
        try {
          const t0 = performance.now();
          await saveToFile(source, snapFile);
          const t1 = performance.now();
          await loadFromFile(target, snapFile);
          const t2 = performance.now();
          size = statSync(snapFile).size;
          const last = tableOf(target, ddw.liobn).entry(ENTRIES - 1);
          if (last !== expectedLast)
            throw new Error(`loaded entry ${ENTRIES - 1} holds 0x${last.toString(16)}`);
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
          out.setUint32(i * 8, flat[i * 2]!);
          out.setUint32(i * 8 + 4, flat[i * 2 + 1]!);
        }
        writeFileSync(flatFile, bytes);
        const back = readFileSync(flatFile);
        const view = new DataView(back.buffer, back.byteOffset, back.byteLength);
        for (let i = 0; i < ENTRIES; i++) {
          decoded[i * 2] = view.getUint32(i * 8);
          decoded[i * 2 + 1] = view.getUint32(i * 8 + 4);
        }
        const seconds = (performance.now() - t0) / 1000;
        if (decoded[ENTRIES * 2 - 1] !== flat[ENTRIES * 2 - 1]) throw new Error('flat table read back wrong');
        return ENTRIES / seconds / 1e6;
      },
      details: () => ({
        api: snapshotApi,
        'save s': median(saves),
        'load s': median(loads),
        'file MiB': size / 2 ** 20,
        'entries MiB': (ENTRIES * 8) / 2 ** 20,
      }),
      extra: () => ({
        'snapshot-1t-64k-size': { value: size / 1024, baseline: (ENTRIES * 8) / 1024 },
      }),
    };
  },
};

export const benchmarks: Benchmark[] = [snapshot1t];
