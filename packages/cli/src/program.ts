import { readFileSync } from 'node:fs';
import { type LinuxGeneration, LinuxGuest } from '@ddw/guest-linux';
import { ConfigError, type Machine, TraceBus } from '@ddw/machine';
import { buildPseries, parseQemuSize } from '@ddw/pseries';
import { Presets, SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { replayCommand } from './replay.js';
import { formatReport } from './report.js';
import { buildRunMachine, type MachineSource, type RunReport, runMachine } from './run.js';
import { describeSnapshot, loadMachineSnapshot, saveMachineSnapshot } from './snapshot.js';

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
    .argument('[description]', 'a machine description (JSON), merged over the default machine')
    .option('-f, --flat', 'print the rendered flat views')
    .option('-D, --disabled', 'also print disabled regions')
    .option('--qemu-args <options>', 'QEMU options describing the whole machine, instead of the default one')
    .option('-m, --ram <size>', 'guest RAM size, as QEMU -m (a bare number is MiB)', checkSize)
    .option('--host <options>', 'host IOMMU capabilities for vfio-pci devices')
    .action(
      async (
        file: string | undefined,
        opts: MachineOptions & { flat?: boolean; disabled?: boolean; ram?: string },
      ) => {
        const machine = await buildMachine(file, opts);
        try {
          out(machine.mtree({ flat: opts.flat ?? false, disabled: opts.disabled ?? false }));
        } finally {
          machine.dispose();
        }
      },
    );

  program
    .command('run', { isDefault: true })
    .description('build a machine, let a Linux guest negotiate DMA windows, move data both ways, and report')
    .argument(
      '[description]',
      'a machine description (JSON), merged over the default machine (or over --qemu-args)',
    )
    .option('--qemu-args <options>', 'QEMU options describing the whole machine, instead of the default one')
    .option(
      '--host <options>',
      'host IOMMU for vfio-pci devices, e.g. "type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5"',
    )
    .option('--guest <generation>', 'the guest model: linux-6.1, linux-4.x or none', checkGuest, 'linux-6.1')
    .option('--trace <pattern>', 'trace events to print on stderr, as QEMU -trace (repeatable)', collect, [])
    .option('--json', 'print the report as one JSON object')
    .action(
      async (
        file: string | undefined,
        opts: MachineOptions & { guest: LinuxGeneration | 'none'; trace: string[]; json?: boolean },
      ) => {
        const trace = new TraceBus();
        trace.setPatterns(opts.trace);
        trace.addSink({ write: (line) => err(`${line}\n`) });
        const progress = progressBar();
        let report: RunReport;
        try {
          report = await runMachine({
            ...(file !== undefined ? { description: readDescription(file) } : {}),
            ...(opts.qemuArgs !== undefined ? { qemuArgs: opts.qemuArgs } : {}),
            ...(opts.host !== undefined ? { host: opts.host } : {}),
            guest: opts.guest,
            trace,
            onProgress: progress.update,
          });
        } finally {
          progress.stop();
        }
        out(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
        if (!report.ok) throw new CommanderError(1, 'ddw.run.failed', 'DMA verification failed');
      },
    );

  const snapshot = program
    .command('snapshot')
    .description('save a machine to a file, load it back, or describe a file');
  snapshot
    .command('save')
    .description('build the machine, let the guest model negotiate its DMA windows, and save everything')
    .argument('<file>', 'the snapshot file to write')
    .argument('[description]', 'a machine description (JSON), merged over the default machine')
    .option('--qemu-args <options>', 'QEMU options describing the whole machine, instead of the default one')
    .option('--host <options>', 'host IOMMU capabilities for vfio-pci devices')
    .option(
      '--guest <generation>',
      'the guest model run before saving: linux-6.1, linux-4.x or none',
      checkGuest,
      'linux-6.1',
    )
    .action(
      async (
        file: string,
        description: string | undefined,
        opts: MachineOptions & { guest: LinuxGeneration | 'none' },
      ) => {
        const machine = await buildRunMachine(machineSource(description, opts));
        let saved: { bytes: number; windows: string[] };
        try {
          if (opts.guest !== 'none') {
            const guest = new LinuxGuest(machine.guest, { generation: opts.guest });
            guest.boot();
            guest.probeAll();
          }
          saved = await saveMachineSnapshot(file, machine);
        } finally {
          machine.dispose();
        }
        out(`saved ${saved.bytes} bytes to ${file}\n${saved.windows.map((w) => `  ${w}\n`).join('')}`);
      },
    );
  snapshot
    .command('load')
    .description(
      'build a fresh machine of the same description and restore it from the file (all or nothing)',
    )
    .argument('<file>', 'the snapshot file to read')
    .argument('[description]', 'the machine description it was saved from')
    .option('--qemu-args <options>', 'the QEMU options it was saved with')
    .option('--host <options>', 'host IOMMU capabilities for vfio-pci devices')
    .action(async (file: string, description: string | undefined, opts: MachineOptions) => {
      const loaded = await loadMachineSnapshot(file, () => buildRunMachine(machineSource(description, opts)));
      out(`loaded ${file}\n${loaded.windows.map((w) => `  ${w}\n`).join('')}`);
    });
  snapshot
    .command('info')
    .description('list the sections of a snapshot file, their versions and sizes')
    .argument('<file>', 'the snapshot file')
    .action((file: string) => {
      out(`${describeSnapshot(file)}\n`);
    });

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
        const host = opts.host !== undefined ? { host: opts.host } : {};
        const code = await replayCommand(
          {
            file,
            patterns: opts.trace,
            check: opts.check ?? false,
            json: false,
            build: (trace) => buildPseries(opts.qemuArgs, { trace, ...host }),
          },
          { out, err },
        );
        if (code !== 0) throw new CommanderError(code, 'ddw.replay.differ', 'the model differs from QEMU');
      },
    );

  return program;
}

interface MachineOptions {
  qemuArgs?: string;
  host?: string;
  ram?: string;
}

function machineSource(file: string | undefined, opts: MachineOptions): MachineSource {
  return {
    ...(file !== undefined ? { description: readDescription(file) } : {}),
    ...(opts.qemuArgs !== undefined ? { qemuArgs: opts.qemuArgs } : {}),
    ...(opts.host !== undefined ? { host: opts.host } : {}),
    ...(opts.ram !== undefined ? { ram: opts.ram } : {}),
  };
}

function buildMachine(file: string | undefined, opts: MachineOptions): Promise<Machine> {
  return buildRunMachine(machineSource(file, opts));
}

function readDescription(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      'description',
      `cannot read ${file}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ConfigError(
      'description',
      `${file} is not JSON: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}

function checkGuest(value: string): LinuxGeneration | 'none' {
  if (value === 'linux-6.1' || value === 'linux-4.x' || value === 'none') return value;
  throw new InvalidArgumentError(`"${value}" is not a guest model; use linux-6.1, linux-4.x or none`);
}

/** A progress bar on stderr, only on a terminal and only once the work has lasted a moment. */
function progressBar(): { update: (step: string, done: number, total: number) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const started = performance.now();
  let bar: SingleBar | undefined;
  return {
    update: (step, done, total) => {
      if (!bar && performance.now() - started < 300) return;
      if (!bar) {
        bar = new SingleBar(
          {
            format: 'ddw run [{bar}] {step}',
            stream: process.stderr,
            clearOnComplete: true,
            hideCursor: true,
          },
          Presets.shades_classic,
        );
        bar.start(total, done, { step });
      }
      bar.update(done, { step });
    },
    stop: () => bar?.stop(),
  };
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
