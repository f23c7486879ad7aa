import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildRunMachine } from '../packages/cli/src/run.js';
import { describeSnapshot, loadMachineSnapshot, saveMachineSnapshot } from '../packages/cli/src/snapshot.js';

/**
 * A `ddw snapshot save` (test/support/save-snapshot-child.ts: the CLI's signal handlers and
 * saveMachineSnapshot) interrupted while it writes over an existing snapshot: whatever happens,
 * the file is the old snapshot or the complete new one, never a truncated mix.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
/** 256 GiB of RAM and a DDW of 64 KiB pages: the guest model maps 4M TCEs, a 32 MiB snapshot. */
const BIG = '-M pseries -m 256G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e';
const BIG_RAM = '0x4000000000';
/** The snapshot already there: a small machine. */
const SMALL = '-M pseries -m 4G -device e1000e';
const TEMP = /^\.m\.snap\.ddw-\d+-[0-9a-f]{8}\.tmp$/;

/** Scratch directories: they hold 32 MiB snapshots, so they go once the tests are done. */
const dirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddw-atomic-'));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Save {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }>;
}

function startSave(file: string, qemuArgs: string): Save {
  // node itself with tsx's loader, not the tsx command: that is a wrapper process, and a SIGKILL
  // to it would leave the save running.
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'test/support/save-snapshot-child.ts', file, qemuArgs],
    {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    out: string;
    err: string;
  }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out, err })));
  return { child, exited };
}

/** Polls (every turn of the event loop) until the save's temporary file appears. */
async function temporaryFile(dir: string, save: Save): Promise<string> {
  for (;;) {
    const temp = readdirSync(dir).find((n) => TEMP.test(n));
    if (temp !== undefined) return temp;
    if (save.child.exitCode !== null || save.child.signalCode !== null) {
      const { err } = await save.exited;
      throw new Error(`the save ended before its temporary file appeared: ${err}`);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function existingSnapshot(dir: string): Promise<{ file: string; bytes: Buffer }> {
  const file = join(dir, 'm.snap');
  const machine = await buildRunMachine({ qemuArgs: SMALL });
  try {
    await saveMachineSnapshot(file, machine);
  } finally {
    machine.dispose();
  }
  return { file, bytes: readFileSync(file) };
}

/** The file is the old snapshot, or the complete new one (every checksum right); which? */
function oldOrComplete(file: string, old: Buffer): 'old' | 'new' {
  const now = readFileSync(file);
  if (Buffer.compare(now, old) === 0) return 'old';
  const report = describeSnapshot(file);
  expect(report.machine.ram).toBe(BIG_RAM);
  return 'new';
}

describe('an interrupted snapshot save', () => {
  it('killed (SIGKILL) mid-write leaves the old snapshot, and a recognisable stray temporary file', async () => {
    const dir = scratch();
    const { file, bytes: old } = await existingSnapshot(dir);
    const save = startSave(file, BIG);
    const temp = await temporaryFile(dir, save);
    save.child.kill('SIGKILL');
    const { signal, out } = await save.exited;
    expect(signal).toBe('SIGKILL');
    expect(out).not.toContain('saved');
    expect(oldOrComplete(file, old)).toBe('old');
    // Nothing can run on SIGKILL: the partial temporary file stays, named so it can be recognised.
    expect(readdirSync(dir).sort()).toEqual([temp, 'm.snap'].sort());
    expect(statSync(join(dir, temp)).size).toBeLessThan(32 << 20);
  });

  it('interrupted (SIGINT) mid-write exits 130, leaves the old snapshot and no temporary file', async () => {
    const dir = scratch();
    const { file, bytes: old } = await existingSnapshot(dir);
    const save = startSave(file, BIG);
    await temporaryFile(dir, save);
    save.child.kill('SIGINT');
    const { code, signal, out, err } = await save.exited;
    expect({ code, signal, err }).toEqual({ code: 130, signal: null, err: '' });
    // What it printed before the signal was flushed.
    expect(out).toBe('saving\n');
    expect(oldOrComplete(file, old)).toBe('old');
    expect(readdirSync(dir)).toEqual(['m.snap']);
  });

  it('two concurrent saves to one path leave one complete snapshot that loads', async () => {
    const dir = scratch();
    const { file, bytes: old } = await existingSnapshot(dir);
    const other = BIG.replace('-m 256G', '-m 128G');
    const [a, b] = await Promise.all([startSave(file, BIG).exited, startSave(file, other).exited]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(readdirSync(dir)).toEqual(['m.snap']);
    const report = describeSnapshot(file);
    expect(Buffer.compare(readFileSync(file), old)).not.toBe(0);
    const winner = report.machine.ram === BIG_RAM ? { args: BIG, run: a } : { args: other, run: b };
    expect(winner.run.out).toBe(`saving\nsaved ${report.bytes}\n`);
    const loaded = await loadMachineSnapshot(file, () => buildRunMachine({ qemuArgs: winner.args }));
    expect(loaded.windows.join('\n')).toMatch(/64K pages, \d+ entries, \d+ in use/);
  });
});
