import { describe, expect, it } from 'vitest';
import { runCli } from '../src/index.js';

async function run(...args: string[]): Promise<string> {
  let text = '';
  let err = '';
  const code = await runCli(args, {
    out: (t) => {
      text += t;
    },
    err: (t) => {
      err += t;
    },
  });
  if (code !== 0) throw new Error(`exit ${code}: ${err}`);
  return text;
}

describe('ddw info mtree', () => {
  it('prints the memory tree of the pseries machine with the RAM size asked for', async () => {
    const out = await run('info', 'mtree', '-m', '4G');
    expect(out).toMatch(
      /^address-space: memory\n {2}0000000000000000-ffffffffffffffff \(prio 0, i\/o\): system\n/,
    );
    expect(out).toContain('    0000000000000000-00000000ffffffff (prio 0, ram): ppc_spapr.ram\n');
    expect(out).toContain('address-space: pci@800000020000000\n');
    expect(out).toContain('      0000000000000000-000000003fffffff (prio 0, i/o): tce-iommu-80000000\n');
  });

  it('builds the machine QEMU options describe', async () => {
    const out = await run(
      'info',
      'mtree',
      '--qemu-args',
      '-M pseries-2.7 -m 2G,maxmem=8G,slots=4 -device spapr-pci-host-bridge,index=1',
    );
    expect(out).toContain('    0000000080000000-00000001ffffffff (prio 0, i/o): device-memory\n');
    expect(out).toContain('address-space: pci@800000020000001\n');
  });

  it('prints the flat views with --flat', async () => {
    const out = await run('info', 'mtree', '-f', '-m', '512M');
    expect(out).toContain('FlatView #0\n AS "memory", root: system\n Root memory region: system\n');
    expect(out).toContain('  0000000000000000-000000001fffffff (prio 0, ram): ppc_spapr.ram\n');
  });

  it('refuses a malformed size with the description message', async () => {
    await expect(run('info', 'mtree', '-m', '2X')).rejects.toThrow(
      /exit 2: ddw: QEMU options: -m size: "2X" is not a size/,
    );
  });

  it('runs `ddw run` with no command: the default machine, negotiated and verified', async () => {
    const out = await run();
    expect(out).toContain('Machine: pseries-10.0, 4 GiB RAM (up to 8 GiB), accel tcg, guest linux-6.12');
    expect(out).toMatch(/\nOK in \d+ ms\n$/);
  });
});
