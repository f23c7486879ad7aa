import { readFileSync } from 'node:fs';
import type { Machine } from '@ddw/machine';
import { buildPseries, parseQemuSize } from '@ddw/pseries';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { defaultReplayPatterns, replayTrace } from './replay.js';
import { compareTraces } from './trace-diff.js';

/** The machine `ddw` shows when told nothing: QEMU's default pseries with 2 GiB and one NIC. */
export const DEFAULT_QEMU_ARGS = '-M pseries -m 2G -device e1000e';

/** The `ddw` command line. `out` receives what a command prints (stdout in the real CLI). */
export function createProgram(
  out: (text: string) => void = (t) => process.stdout.write(t),
  err: (text: string) => void = (t) => process.stderr.write(t),
): Command {
  const program = new Command('ddw')
    .description('ddw: how a pseries guest gets DMA windows from its hypervisor, modelled')
    .showHelpAfterError()
    // Throw instead of exiting, so the program can run inside tests and other tools; bin.ts exits.
    .exitOverride();

  const info = program.command('info').description('inspect a machine, as QEMU monitor `info` commands');
  info
    .command('mtree')
    .description('print the memory tree (`info mtree`), or the flat views with --flat (`info mtree -f`)')
    .option('-f, --flat', 'print the rendered flat views')
    .option('-D, --disabled', 'also print disabled regions')
    .option('--qemu-args <options>', 'the QEMU options of the machine', DEFAULT_QEMU_ARGS)
    .option('-m, --ram <size>', 'guest RAM size, as QEMU -m (a bare number is MiB)', checkSize)
    .option('--host <options>', 'host IOMMU capabilities for vfio-pci devices')
    .action(
      async (opts: { flat?: boolean; disabled?: boolean; qemuArgs: string; ram?: string; host?: string }) => {
        const args = opts.ram === undefined ? opts.qemuArgs : `${opts.qemuArgs} -m ${opts.ram}`;
        const host = opts.host !== undefined ? { host: opts.host } : {};
        await withMachine(await buildPseries(args, host), (machine) =>
          out(machine.mtree({ flat: opts.flat ?? false, disabled: opts.disabled ?? false })),
        );
      },
    );

  program
    .command('replay')
    .description("replay a QEMU trace (log format) against the model and print the model's own trace lines")
    .argument('<trace>', 'a QEMU -trace log (with or without -msg timestamp=on)')
    .option('--qemu-args <options>', 'the QEMU options of the traced run', '-M pseries')
    .option(
      '--host <options>',
      'host IOMMU for vfio-pci devices, e.g. "type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5"',
    )
    .option(
      '--trace <pattern>',
      'events to print, as QEMU -trace (repeatable; -PATTERN disables; default: spapr_iommu_* and the vfio_ events the trace has)',
      collect,
      [],
    )
    .option(
      '--check',
      'compare with the input: print a diff and "N compared, M differ"; exit 1 on a difference',
    )
    .action(
      async (file: string, opts: { qemuArgs: string; host?: string; trace: string[]; check?: boolean }) => {
        const input = readFileSync(file, 'utf8').split('\n');
        const patterns = opts.trace.length > 0 ? opts.trace : defaultReplayPatterns(input);
        const host = opts.host !== undefined ? { host: opts.host } : {};
        const result = await replayTrace(
          async (trace) => {
            const machine = await buildPseries(opts.qemuArgs, { trace, ...host });
            // QEMU's error_report goes to stderr; so do the model's host-side errors.
            machine.events.on('host-error', (e) => err(`ddw: ${e.source}: ${e.message}\n`));
            return machine;
          },
          input,
          patterns,
        );
        result.machine.dispose();
        for (const why of result.skipped) err(`ddw replay: skipped ${why}\n`);
        if (!opts.check) {
          out(result.lines.map((l) => `${l}\n`).join(''));
          return;
        }
        const cmp = compareTraces(result.expected, result.lines);
        if (cmp.diff.length > 0) out(`${cmp.diff.join('\n')}\n`);
        const summary = `${cmp.compared} compared, ${cmp.differ} differ`;
        out(`${summary}\n`);
        if (cmp.differ > 0) throw new CommanderError(1, 'ddw.replay.differ', summary);
      },
    );

  // With no command: the default machine's memory tree and flat views.
  program.action(async () => {
    await withMachine(await buildPseries(DEFAULT_QEMU_ARGS), (machine) => {
      out(machine.mtree());
      out(machine.mtree({ flat: true }));
    });
  });
  return program;
}

async function withMachine(machine: Machine, use: (machine: Machine) => void): Promise<void> {
  try {
    use(machine);
  } finally {
    machine.dispose();
  }
}

/** Refuses a size QEMU's -m would refuse, with the same message. */
function checkSize(value: string): string {
  try {
    parseQemuSize(value, '-m size', 20n);
  } catch (error) {
    throw new InvalidArgumentError(error instanceof Error ? error.message : String(error));
  }
  return value;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
