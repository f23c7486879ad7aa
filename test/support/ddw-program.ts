import { runCli } from '@ddw/cli';

/** Runs the `ddw` program in-process, as bin.ts does; `code` is the exit code it would exit with. */
export async function runDdw(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  let out = '';
  let err = '';
  const code = await runCli(args, {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
  });
  return { out, err, code };
}
