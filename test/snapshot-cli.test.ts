import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runDdw } from './support/ddw-program.js';

const dir = () => mkdtempSync(join(tmpdir(), 'ddw-snapshot-'));

describe('ddw snapshot', () => {
  it('saves the negotiated default machine, describes the file, and loads it into a fresh machine', async () => {
    const file = join(dir(), 'm.snap');
    const saved = await runDdw('snapshot', 'save', file);
    expect(saved.code).toBe(0);
    expect(saved.out).toContain(
      'PHB 0 LIOBN 0x80000001: bus 0x800000000000000, 16M pages, 512 entries, 256 in use',
    );
    const info = await runDdw('snapshot', 'info', file);
    expect(info.out).toContain('machine: pseries-10.0, 4 GiB RAM');
    expect(info.out).toMatch(/spapr_iommu +instance 0x80000001 +version 3 +\d+ bytes/);
    const loaded = await runDdw('snapshot', 'load', file);
    // Everything the save printed about the windows, the load restored.
    expect(loaded.out.split('\n').slice(1)).toEqual(saved.out.split('\n').slice(1));
  });

  it('refuses a snapshot of another machine, and a damaged one, naming why', async () => {
    const file = join(dir(), 'm.snap');
    await runDdw('snapshot', 'save', file, '--qemu-args', '-M pseries -m 2G -device e1000e');
    const other = await runDdw('snapshot', 'load', file);
    expect(other.code).toBe(2);
    expect(other.err).toMatch(/^ddw: .*RAM.*\n$/);
    const bytes = readFileSync(file);
    bytes[bytes.length - 10] ^= 0xff;
    const damaged = join(dir(), 'damaged.snap');
    writeFileSync(damaged, bytes);
    const bad = await runDdw('snapshot', 'load', damaged, '--qemu-args', '-M pseries -m 2G -device e1000e');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^ddw: .*damaged\.snap: snapshot .*checksum mismatch/);
  });
});
