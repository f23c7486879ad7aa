import { parseSize } from '@ddw/machine';
import { Command, InvalidArgumentError } from 'commander';
import { buildDemoMachine } from './demo.js';

/** The `ddw` command line. `out` receives what a command prints (stdout in the real CLI). */
export function createProgram(out: (text: string) => void = (t) => process.stdout.write(t)): Command {
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
    .option('-m, --ram <size>', 'guest RAM size, e.g. 2G', checkSize, '2G')
    .action(async (opts: { flat?: boolean; disabled?: boolean; ram: string }) => {
      const machine = await buildDemoMachine(opts.ram);
      try {
        out(machine.mtree({ flat: opts.flat ?? false, disabled: opts.disabled ?? false }));
      } finally {
        machine.dispose();
      }
    });

  // With no command: the demo machine's memory tree and flat views.
  program.action(async () => {
    const machine = await buildDemoMachine();
    try {
      out(machine.mtree());
      out(machine.mtree({ flat: true }));
    } finally {
      machine.dispose();
    }
  });
  return program;
}

/** Refuses a size the machine description would refuse, with the same message. */
function checkSize(value: string): string {
  try {
    parseSize(value, 'ram');
  } catch (error) {
    throw new InvalidArgumentError(error instanceof Error ? error.message : String(error));
  }
  return value;
}
