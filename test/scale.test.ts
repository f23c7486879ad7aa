/**
 * Cost follows information: a multi-terabyte guest whose direct window maps all of its RAM through
 * a vfio-pci device is modelled entirely, every TCE and every host mapping, and a snapshot of it
 * is small because the window is one progression. Runs the built CLI (packages/cli/dist/bin.js,
 * built by `npm test`'s pretest). Timings are bench/'s business; this checks what is computed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'packages/cli/dist/bin.js');
const work = mkdtempSync(join(tmpdir(), 'ddw-scale-'));

function ddw(args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: work, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** 4 TiB of RAM, 64K IOMMU pages offered, maxmem so that Linux 6.12 sizes a direct window. */
const MACHINE = [
  '-m',
  '4T,maxmem=8T,slots=2',
  '-global',
  'spapr-pci-host-bridge.pgsz=0x11000',
  '-device',
  'vfio-pci,host=0000:01:00.0,id=hostnic',
];
const RAM_PAGES_64K = 2 ** 26;

interface RunJson {
  ok: boolean;
  phbs: { windows: { liobn: string; pageShift: number; entries: number; mapped: number }[] }[];
  host: { mappings: number; errors: string[] } | null;
  dma: { verifiedBytes: number; failedBytes: number };
}

describe('a 4 TiB guest with a vfio-pci device', () => {
  it('maps all of RAM through its direct window, every TCE a host mapping, DMA verified', () => {
    const r = ddw(['run', ...MACHINE, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as RunJson;
    const ddwWindow = report.phbs[0]!.windows.find((w) => w.pageShift === 16)!;
    // Linux 6.12 sizes the window from ibm,lrdr-capacity (maxmem): 2^43 bytes, RAM populated.
    expect(ddwWindow.entries).toBe(2 ** 27);
    expect(ddwWindow.mapped).toBe(RAM_PAGES_64K);
    // 64K host pages: one host mapping per TCE (plus whatever the default window holds).
    expect(report.host!.mappings).toBeGreaterThanOrEqual(RAM_PAGES_64K);
    expect(report.host!.errors).toEqual([]);
    expect(report.dma.verifiedBytes).toBeGreaterThan(0);
    expect(report.dma.failedBytes).toBe(0);
    expect(report.ok).toBe(true);
  }, 120_000);

  it('saves a snapshot of a few KiB and loads it back', () => {
    const file = join(work, 'big.ddws');
    const saved = ddw(['snapshot', 'save', file, ...MACHINE]);
    expect(saved.code, saved.stderr).toBe(0);
    expect(statSync(file).size).toBeLessThan(64 * 1024);
    const loaded = ddw(['snapshot', 'load', file, ...MACHINE]);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toContain(`64K pages, ${2 ** 27} entries, ${RAM_PAGES_64K} in use`);
  }, 120_000);
});
