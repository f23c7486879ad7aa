import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));

function ddw(...args: string[]) {
  return spawnSync(tsx, ['packages/cli/src/bin.ts', ...args], { cwd: root, encoding: 'utf8' });
}

describe('the ddw command, end to end', () => {
  it('runs `ddw info mtree` and exits 0', () => {
    const r = ddw('info', 'mtree', '-m', '1G');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('(prio 0, ram): ppc_spapr.ram');
  });

  it('reports a bad option on stderr, without a stack, and exits non-zero', () => {
    const r = ddw('info', 'mtree', '-m', 'lots');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('"lots" is not a size');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe('');
  });

  it('runs `ddw replay --check`: exit 0 when the model agrees with QEMU, 1 when it does not', () => {
    const trace = 'test/fixtures/qemu-7.2/v2-64k.trace';
    const same = ddw(
      'replay',
      trace,
      '--qemu-args',
      '-m 4G -global spapr-pci-host-bridge.pgsz=0x11000',
      '--check',
    );
    expect(same.status).toBe(0);
    expect(same.stdout).toMatch(/^\d+ compared, 0 differ\n$/);
    const other = ddw('replay', trace, '--qemu-args', '-m 4G', '--check');
    expect(other.status).toBe(1);
    expect(other.stdout).toMatch(/ compared, 2 differ\n$/);
  });

  it('runs `ddw run --json`: one JSON object on stdout, exit 0', () => {
    const r = ddw('run', '--json');
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ ok: true, dma: { failedBytes: 0 } });
    expect(report.guest.devices.map((d: { mode: string }) => d.mode)).toEqual(['direct', 'direct']);
  });

  it('exits 1 when DMA verification fails: a DDW a v1 host cannot map', () => {
    const r = ddw(
      'run',
      '--qemu-args',
      '-M pseries -m 2G,maxmem=4G,slots=2 -device vfio-pci,host=0000:01:00.0',
      '--host',
      'type=v1',
    );
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('error: Container 0x');
    expect(r.stdout).toContain('fatal: vfio: DMA mapping failed, unable to continue');
    expect(r.stdout).toMatch(/\nFAILED in \d+ ms\n$/);
  });
});
