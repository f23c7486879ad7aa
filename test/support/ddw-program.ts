import { createProgram } from '@ddw/cli';

/** Runs the `ddw` program in-process; `code` is the exit code bin.ts would exit with. */
export async function runDdw(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  let out = '';
  let err = '';
  const program = createProgram(
    (t) => {
      out += t;
    },
    (t) => {
      err += t;
    },
  );
  program.configureOutput({ writeErr: (t) => (err += t), writeOut: (t) => (out += t) });
  try {
    await program.parseAsync(['node', 'ddw', ...args]);
    return { out, err, code: 0 };
  } catch (error) {
    // Commander's own errors (and the ones --check and run throw) carry the exit code.
    const exitCode = (error as { exitCode?: unknown }).exitCode;
    if (typeof exitCode === 'number') return { out, err, code: exitCode };
    throw error;
  }
}
