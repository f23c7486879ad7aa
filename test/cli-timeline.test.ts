/**
 * `--trace-json FILE` as a user meets it: the built `ddw` in a child process writes a
 * Chrome/Perfetto trace that parses, with the hypercall and RTAS spans and their arguments, without
 * changing what is printed; a path that cannot be written is one line and exit 2.
 *
 * It runs packages/cli/dist/bin.js: run `npm run build` first.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'packages/cli/dist/bin.js');
const work = mkdtempSync(join(tmpdir(), 'ddw-cli-timeline-'));
/** A small DDW machine with a passthrough device (a 16 MiB default window keeps the trace short). */
const MACHINE = [
  '-M',
  'pseries',
  '-m',
  '2G,maxmem=4G,slots=2',
  '-global',
  'spapr-pci-host-bridge.dma_win_size=0x1000000',
  '-device',
  'vfio-pci,host=0000:01:00.0',
];

function ddw(args: readonly string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: work,
    encoding: 'utf8',
    env: { ...process.env, DDW_DEBUG: '' },
    maxBuffer: 64 << 20,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface TraceEvent {
  name: string;
  ph: string;
  ts?: number;
  dur?: number;
  tid: number;
  args?: Record<string, unknown>;
}

function readTimeline(path: string): { traceEvents: TraceEvent[]; displayTimeUnit: string } {
  return JSON.parse(readFileSync(path, 'utf8'));
}

describe('ddw --trace-json', { timeout: 120_000 }, () => {
  it('run writes a trace with hypercall and RTAS spans and their arguments', () => {
    const file = join(work, 'run.json');
    const r = ddw(['run', ...MACHINE, '--trace-json', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const trace = readTimeline(file);
    expect(trace.displayTimeUnit).toBe('ns');
    const indirect = trace.traceEvents.filter((e) => e.ph === 'X' && e.name === 'H_PUT_TCE_INDIRECT');
    expect(indirect.length).toBeGreaterThan(0);
    expect(indirect[0]!.args).toMatchObject({ liobn: '0x80000001', ret: 0, ret_name: 'H_SUCCESS' });
    const create = trace.traceEvents.find((e) => e.ph === 'X' && e.name === 'ibm,create-pe-dma-window');
    expect(create?.args).toMatchObject({
      config_addr: expect.stringMatching(/^0x/),
      page_shift: 24,
      window_shift: expect.any(Number),
      status: 0,
      liobn: '0x80000001',
    });
    // Every trace event, though none was selected with -trace.
    const names = new Set(trace.traceEvents.map((e) => e.name));
    for (const name of ['vfio_iommu_map_notify', 'spapr_iommu_ddw_create', 'spapr_iommu_pci_indirect'])
      expect(names).toContain(name);
    for (const stage of ['build', 'boot', 'probe', 'dma']) expect(names).toContain(stage);
    // No temporary file is left next to it.
    expect(readdirSync(work).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('changes nothing that is printed or computed', () => {
    const args = ['run', ...MACHINE, '-trace', 'spapr_iommu_pci_*', '--json'];
    const plain = ddw(args);
    const recorded = ddw([...args, '--trace-json', join(work, 'same.json')]);
    expect(recorded.code).toBe(plain.code);
    expect(recorded.stderr).toBe(plain.stderr);
    expect(plain.stderr).toMatch(/spapr_iommu_pci_indirect/);
    const strip = (text: string) => ({ ...JSON.parse(text), timeMs: 0 });
    expect(strip(recorded.stdout)).toEqual(strip(plain.stdout));
  });

  it('snapshot save and load and replay write one too', () => {
    const snap = join(work, 'vm.snap');
    const save = ddw(['snapshot', 'save', snap, ...MACHINE, '--trace-json', join(work, 'save.json')]);
    expect(save.code, save.stderr).toBe(0);
    expect(readTimeline(join(work, 'save.json')).traceEvents.map((e) => e.name)).toContain(
      'ibm,create-pe-dma-window',
    );
    const load = ddw(['snapshot', 'load', snap, ...MACHINE, '--trace-json', join(work, 'load.json')]);
    expect(load.code, load.stderr).toBe(0);
    expect(readTimeline(join(work, 'load.json')).traceEvents.map((e) => e.name)).toContain('restore');

    const fixture = join(root, 'test/fixtures/qemu-7.2/v2-64k.trace');
    const plain = ddw(['replay', fixture, '--check']);
    const replay = ddw(['replay', fixture, '--check', '--trace-json', join(work, 'replay.json')]);
    expect(replay.code).toBe(plain.code);
    expect(replay.stdout).toBe(plain.stdout);
    const events = readTimeline(join(work, 'replay.json')).traceEvents;
    expect(events.some((e) => e.ph === 'X' && e.name === 'H_PUT_TCE_INDIRECT')).toBe(true);
    expect(events.some((e) => e.ph === 'X' && e.name === 'ibm,create-pe-dma-window')).toBe(true);
  });

  it('a path that cannot be written: one line, exit 2, nothing run', () => {
    const r = ddw(['run', ...MACHINE, '--trace-json', '/nonexistent/dir/x.json']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      'ddw: timeline (--trace-json) /nonexistent/dir/x.json: cannot write: no such directory; create the directory first, or write the file somewhere else',
    ]);
    const replay = ddw(['replay', 'x.trace', '--trace-json', '/nonexistent/dir/x.json']);
    expect(replay.code).toBe(2);
    expect(replay.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(existsSync('/nonexistent/dir/x.json')).toBe(false);
  });

  it('info mtree has no --trace-json', () => {
    const r = ddw(['info', 'mtree', '--trace-json', join(work, 'm.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});
