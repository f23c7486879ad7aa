import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs test/support/atomic-file-child.ts; `onOut` sees its stdout as it comes. */
function run(
  mode: 'wait' | 'exit',
  file: string,
  onOut: (out: string, kill: (signal: NodeJS.Signals) => void) => void = () => undefined,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'test/support/atomic-file-child.ts', mode, file],
    {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
    onOut(out, (signal) => child.kill(signal));
  });
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out, err })));
}

function scratch(): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ddw-files-signals-'));
  const file = join(dir, 'trace.log');
  writeFileSync(file, 'the previous log\n');
  return { dir, file };
}

describe('a file being written when the command ends early', () => {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${signal}: exits ${code}, stdout flushed, the temporary file removed, the previous file kept`, async () => {
      const { dir, file } = scratch();
      let sent = false;
      const result = await run('wait', file, (out, kill) => {
        if (!sent && out.includes('open\n')) {
          // The temporary file holds what was written so far.
          expect(readdirSync(dir).some((n) => /^\.trace\.log\.ddw-\d+-[0-9a-f]{8}\.tmp$/.test(n))).toBe(true);
          sent = true;
          kill(signal);
        }
      });
      expect(result).toEqual({ code, signal: null, out: 'open\n', err: '' });
      expect(readdirSync(dir)).toEqual(['trace.log']);
      expect(readFileSync(file, 'utf8')).toBe('the previous log\n');
    });
  }

  it('exiting without a commit removes the temporary file and keeps the previous file', async () => {
    const { dir, file } = scratch();
    expect((await run('exit', file)).code).toBe(3);
    expect(readdirSync(dir)).toEqual(['trace.log']);
    expect(readFileSync(file, 'utf8')).toBe('the previous log\n');
  });
});
