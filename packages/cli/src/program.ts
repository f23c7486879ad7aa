import { GUEST_CHOICES, type GuestChoice } from '@ddw/guest-linux';
import { DdwError, type Machine, MachineTokens } from '@ddw/machine';
import {
  buildPseries,
  DEFAULT_QEMU_VERSION,
  deprecationWarning,
  machineType,
  QEMU_VERSIONS,
  qemuVersionOf,
} from '@ddw/pseries';
import { Presets, SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  type MachineCommandLine,
  type MachineConfiguration,
  refuseDdwFlags,
  UsageError,
} from './configuration.js';
import { configureMachine, qemuOptionsOf, readCommandLine, versionOf } from './configure.js';
import { readInputFile } from './files.js';
import { answerRequests, versionText } from './help.js';
import type { CommandIO } from './io.js';
import { parseHmpScript } from './monitor.js';
import { mtreeReport } from './mtree-report.js';
import { replayCommand } from './replay.js';
import { formatReport } from './report.js';
import { buildConfigured, negotiate, type RunReport, runResolved } from './run.js';
import { schemaNames, schemaOf } from './schemas.js';
import {
  describeSnapshot,
  formatSnapshotInfo,
  loadMachineSnapshot,
  saveMachineSnapshot,
} from './snapshot.js';
import type { TimelineRecorder } from './timeline.js';
import { openTimelineOutput, withTraceOutput } from './trace-output.js';

/**
 * Exit codes: 0 done, 1 the answer is no (replay differs, a DMA byte failed, a fatal host error),
 * 2 usage, configuration or input error, 70 an internal error (a bug), 130 interrupted (SIGINT).
 */
export const EXIT = { ok: 0, no: 1, usage: 2, internal: 70, interrupted: 130 } as const;

const QEMU_OPTIONS_HELP = `
QEMU options (as qemu-system-ppc64 takes them; also inside --qemu-args "..."):
  -M, -machine TYPE[,accel=tcg|kvm]  machine type (-M help lists them)
  -m SIZE[,maxmem=SIZE][,slots=N]     guest RAM (a bare number is MiB)
  -device DRIVER[,PROP=VALUE...]      a PCI device or PHB (-device help, -device DRIVER,help)
  -global spapr-pci-host-bridge.PROP=VALUE
  -accel tcg|kvm, -enable-kvm
  -trace [enable=]PATTERN[,events=FILE][,file=FILE]   trace events (-trace help lists them)
  -d trace:PATTERN, -D FILE, -msg timestamp=on
  -version
Options that change nothing ddw models (-nographic, -cpu, -smp, -kernel, ...) are accepted.

Configuration layers, later wins: ddw's defaults < preset < DESCRIPTION.json < QEMU options
< --host < --guest. The preset is ddw's default machine unless the QEMU options describe hardware
(-M, -m, -device, -global); then they describe the whole machine, as with QEMU.`;

const stdio: CommandIO = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};

/**
 * Runs `ddw` with these arguments (without node and the script) and returns its exit code; every
 * error is printed here as one line. bin.ts sets it as the process's exit code, never calling
 * process.exit(), so whatever was printed reaches a pipe before the process ends.
 */
export async function runCli(args: readonly string[], io: CommandIO = stdio): Promise<number> {
  const program = createProgram(io.out, io.err);
  try {
    // QEMU spells it -version; ddw's own flag is --version.
    const words = args[0] === '-version' ? ['--version', ...args.slice(1)] : [...args];
    await program.parseAsync(words, { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    return exitCodeFor(error, io);
  }
}

function exitCodeFor(error: unknown, io: CommandIO): number {
  if (error instanceof CommanderError) {
    // Commander has printed its usage error, or the help or version text.
    if (
      error.code === 'commander.helpDisplayed' ||
      error.code === 'commander.version' ||
      error.code === 'commander.help'
    )
      return EXIT.ok;
    if (error.code.startsWith('ddw.')) return error.exitCode;
    return EXIT.usage;
  }
  if (error instanceof DdwError) {
    io.err(`ddw: ${oneLine(error.message)}\n`);
    return EXIT.usage;
  }
  // A bug in ddw, not in what the user gave: say so, and keep the stack for whoever debugs it.
  const message = error instanceof Error ? error.message : String(error);
  if (process.env.DDW_DEBUG === '1' && error instanceof Error && error.stack) {
    io.err(`ddw: internal error: ${error.stack}\n`);
  } else {
    io.err(
      `ddw: internal error: ${oneLine(message)} (run with DDW_DEBUG=1 to see where; please report it)\n`,
    );
  }
  return EXIT.internal;
}

/** A multi-line message (several configuration problems) as one line. */
function oneLine(message: string): string {
  return message
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .join('; ');
}

/** The `ddw` command line. `out` and `err` receive what it prints (stdout and stderr in the real CLI). */
export function createProgram(
  out: (text: string) => void = (t) => process.stdout.write(t),
  err: (text: string) => void = (t) => process.stderr.write(t),
): Command {
  const io: CommandIO = { out, err };
  const program = new Command('ddw')
    .description('ddw: how a pseries guest gets DMA windows from its hypervisor, modelled')
    .version(versionText().trimEnd(), '-V, --version', 'print the version and the machine types')
    .helpOption('-h, --help', 'show help')
    .configureOutput({
      writeOut: out,
      writeErr: err,
      // One line: commander's "error: ..." becomes "ddw: ...", with where to look.
      outputError: (text, write) => write(`ddw: ${text.replace(/^error: /, '').trimEnd()}\n`),
    })
    // Throw instead of exiting, so the program can run inside tests and other tools; bin.ts exits.
    .exitOverride();

  const info = program
    .command('info')
    .description('inspect a machine, as QEMU monitor `info` commands')
    .argument('[subcommand]')
    .action((word?: string) => missingSubcommand('info', word, ['mtree']));
  machineCommand(
    info
      .command('mtree')
      .description('print the memory tree (`info mtree`), or the flat views with -f (`info mtree -f`)')
      .option('-f, --flat', 'print the rendered flat views')
      .option('--disabled', 'also print disabled regions (HMP: info mtree -D)')
      .option('--json', 'print one JSON object'),
    { guest: false },
  ).action(
    async (opts: MachineOpts & { flat?: boolean; disabled?: boolean; json?: boolean }, cmd: Command) => {
      const config = await prepare(cmd, opts, io);
      if (!config) return;
      const machine = await buildConfigured(config.resolved);
      try {
        const flat = opts.flat ?? false;
        const disabled = opts.disabled ?? false;
        out(
          opts.json
            ? `${JSON.stringify(mtreeReport(machine, { flat, disabled }), null, 2)}\n`
            : machine.mtree({ flat, disabled }),
        );
      } finally {
        machine.dispose();
      }
    },
  );

  machineCommand(
    program
      .command('run', { isDefault: true })
      .description(
        'build a machine, let a Linux guest negotiate DMA windows, move data both ways, and report',
      )
      .option('--json', 'print the report as one JSON object')
      .option(
        '--hmp <commands>',
        'QEMU monitor commands to run after boot, ";"-separated (repeatable): system_reset, object_add, device_add pc-dimm, device_del, info mtree, info pci',
        collect,
        [],
      )
      .option('--hmp-file <file>', 'the same, one command a line (# comments)'),
    { guest: true, timeline: true },
  ).action(async (opts: MachineOpts & { json?: boolean; hmp: string[]; hmpFile?: string }, cmd: Command) => {
    // Monitor scripts are checked before anything is built, as QEMU checks its options.
    const commands = [
      ...opts.hmp.flatMap((text) => parseHmpScript(text)),
      ...(opts.hmpFile !== undefined
        ? parseHmpScript(readInputFile(opts.hmpFile, 'monitor script', 'utf8'), {
            source: opts.hmpFile,
            file: true,
          })
        : []),
    ];
    const config = await prepare(cmd, opts, io);
    if (!config) return;
    const progress = progressBar();
    let report: RunReport;
    try {
      report = await withTraceOutput(
        config.qemu,
        io,
        (bus, output) => {
          const stages = runStages(output.timeline, commands.length > 0);
          return runResolved(config.resolved, {
            trace: bus,
            onProgress: (step, done, total) => {
              stages(step);
              progress.update(step, done, total);
            },
            // The monitor's output goes to stdout, or to stderr when stdout carries the JSON report.
            ...(commands.length > 0
              ? { hmp: { commands, io: opts.json ? { out: io.err, err: io.err } : io } }
              : {}),
          });
        },
        timelineOptions(opts, 'ddw run'),
      );
    } finally {
      progress.stop();
    }
    out(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    if (!report.ok) throw new CommanderError(EXIT.no, 'ddw.run.failed', 'DMA verification failed');
  });

  const snapshot = program
    .command('snapshot')
    .description('save a machine to a file, load it back, or describe a file')
    .argument('[subcommand]')
    .action((word?: string) => missingSubcommand('snapshot', word, ['save', 'load', 'info']));
  machineCommand(
    snapshot
      .command('save')
      .description('build the machine, let the guest model negotiate its DMA windows, and save everything'),
    { guest: true, operand: 'snapshot file', timeline: true },
  ).action(async (opts: MachineOpts, cmd: Command) => {
    const config = await prepare(cmd, opts, io, ['snapshot file']);
    if (!config) return;
    const file = config.operands[0]!;
    const host = hostErrors(io);
    const saved = await withTraceOutput(
      config.qemu,
      io,
      async (bus, { timeline }) => {
        timeline?.stage('build');
        const machine = host.watch(await buildConfigured(config.resolved, bus));
        timeline?.attach(machine);
        try {
          timeline?.stage('negotiate');
          negotiate(machine, () => timeline?.stage('probe'));
          timeline?.stage('save');
          return await saveMachineSnapshot(file, machine);
        } finally {
          machine.dispose();
        }
      },
      timelineOptions(opts, 'ddw snapshot save'),
    );
    out(`saved ${saved.bytes} bytes to ${file}\n${saved.windows.map((w) => `  ${w}\n`).join('')}`);
    host.check();
  });
  machineCommand(
    snapshot
      .command('load')
      .description(
        'build a fresh machine of the same description and restore it from the file (all or nothing)',
      ),
    { guest: false, operand: 'snapshot file', timeline: true },
  ).action(async (opts: MachineOpts, cmd: Command) => {
    const config = await prepare(cmd, opts, io, ['snapshot file']);
    if (!config) return;
    const file = config.operands[0]!;
    const host = hostErrors(io);
    const loaded = await withTraceOutput(
      config.qemu,
      io,
      (bus, { timeline }) => {
        timeline?.stage('verify');
        return loadMachineSnapshot(file, async () => {
          timeline?.stage('build');
          const machine = host.watch(await buildConfigured(config.resolved, bus));
          timeline?.attach(machine);
          timeline?.stage('restore');
          return machine;
        });
      },
      timelineOptions(opts, 'ddw snapshot load'),
    );
    out(`loaded ${file}\n${loaded.windows.map((w) => `  ${w}\n`).join('')}`);
    host.check();
  });
  snapshot
    .command('info')
    .description('list the sections of a snapshot file, their versions and sizes (checksums verified)')
    .argument('<file>', 'the snapshot file')
    .option('--json', 'print one JSON object')
    .action((file: string, opts: { json?: boolean }) => {
      const report = describeSnapshot(file);
      out(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatSnapshotInfo(report)}\n`);
    });

  program
    .command('replay')
    .description("replay a QEMU trace (log format) against the model and print the model's own trace lines")
    .argument('<trace>', 'a QEMU -trace log (with or without -msg timestamp=on)')
    .option('--qemu-args <options>', 'the QEMU options of the traced run', '-M pseries')
    .addOption(
      new Option(
        '--qemu <version>',
        `the QEMU version of the traced run (default ${DEFAULT_QEMU_VERSION})`,
      ).choices([...QEMU_VERSIONS]),
    )
    .option(
      '--host <options>',
      'host IOMMU for vfio-pci devices, e.g. "type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5"',
    )
    .option(
      '--trace <pattern>',
      'events to print and compare, as QEMU -trace (repeatable; -PATTERN disables; default: spapr_iommu_* and the vfio_ events the trace has)',
      collect,
      [],
    )
    .option(
      '--check',
      'compare with the input: print a unified diff and "N compared, M differ"; exit 1 on a difference',
    )
    .option('--json', 'print one JSON object')
    .option('--trace-json <file>', TRACE_JSON_HELP)
    .action(
      async (
        file: string,
        opts: {
          qemuArgs: string;
          qemu?: string;
          host?: string;
          trace: string[];
          check?: boolean;
          json?: boolean;
          traceJson?: string;
        },
      ) => {
        const line = {
          words: [],
          qemuArgs: [opts.qemuArgs],
          ...(opts.qemu !== undefined ? { qemu: opts.qemu } : {}),
        };
        const version = versionOf(line);
        const build = {
          ...(opts.host !== undefined ? { host: opts.host } : {}),
          ...(version !== undefined ? { qemu: version } : {}),
        };
        // The traced run's machine: its QEMU options, checked before the trace is read.
        const qemu = qemuOptionsOf(line);
        if (await answerRequests(qemu, io, () => program.helpInformation(), version)) return;
        const t = qemu.trace;
        if (t.patterns.length > 0 || t.eventFiles.length > 0 || t.logFile !== undefined || t.timestamps) {
          throw new UsageError(
            'replay --qemu-args: -trace, -d trace:, -D and -msg do not apply to a replay; select events with --trace, and redirect stdout for a file',
          );
        }
        const timeline =
          opts.traceJson !== undefined ? openTimelineOutput(opts.traceJson, io, 'ddw replay') : undefined;
        let code: number;
        try {
          code = await replayCommand(
            {
              file,
              patterns: opts.trace,
              check: opts.check ?? false,
              json: opts.json ?? false,
              build: async (trace) => {
                // The replay's own bus: every modelled event, whatever --trace prints.
                timeline?.recorder.attach(trace);
                timeline?.recorder.stage('build');
                const machine = await buildPseries(qemu, { trace, ...build });
                timeline?.recorder.attach(machine);
                timeline?.recorder.stage('replay');
                return machine;
              },
            },
            io,
          );
          timeline?.close();
        } finally {
          timeline?.abort();
        }
        if (code !== 0) throw new CommanderError(code, 'ddw.replay.differ', 'the model differs from QEMU');
      },
    );

  program
    .command('schema')
    .description('print the JSON Schema of a machine description or of a --json report')
    .argument('<name>', `one of: ${schemaNames().join(', ')}`)
    .action(async (name: string) => {
      out(`${JSON.stringify(await schemaOf(name), null, 2)}\n`);
    });

  return program;
}

interface MachineOpts {
  traceJson?: string;
  qemu?: string;
  qemuArgs?: string[];
  host?: string;
  guest?: GuestChoice;
  printDescription?: boolean;
}

/**
 * A command that takes a machine the way QEMU does: QEMU options directly (commander cannot parse
 * -device and friends, so it passes them through and configure.ts reads them), --qemu-args, the
 * ddw flags, and at most one DESCRIPTION.json.
 */
function machineCommand(
  command: Command,
  options: { guest: boolean; operand?: string; timeline?: boolean },
): Command {
  command
    .usage(`${options.operand ? 'FILE ' : ''}[options] [QEMU options] [DESCRIPTION.json]`)
    .allowUnknownOption()
    .allowExcessArguments()
    // `-h` is left to QEMU's options parser, so `-hda`-like words are never taken for help.
    .helpOption('--help', 'show help')
    .option(
      '--qemu-args <options>',
      'QEMU options as one string (repeatable), before the ones given directly',
      collect,
      [],
    )
    .option(
      '--host <options>',
      'host IOMMU for vfio-pci devices, e.g. "type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5"',
    )
    .option('--print-description', 'print the merged machine description (JSON) and exit')
    .addOption(
      new Option(
        '--qemu <version>',
        `the QEMU version the machine is (default ${DEFAULT_QEMU_VERSION})`,
      ).choices([...QEMU_VERSIONS]),
    );
  if (options.guest) {
    command.addOption(
      new Option(
        '--guest <generation[,page=4K|64K]>',
        `the guest model: ${GUEST_CHOICES.join(', ')}; page= sets the kernel page size (6.12: 4K, older: 64K)`,
      ).argParser(checkGuest),
    );
  }
  if (options.timeline) command.option('--trace-json <file>', TRACE_JSON_HELP);
  return command.addHelpText('after', QEMU_OPTIONS_HELP);
}

const TRACE_JSON_HELP =
  'write the run as a Chrome/Perfetto trace (ui.perfetto.dev): hypercalls and RTAS calls as spans, every trace event as an instant, whatever -trace selects';

function timelineOptions(
  opts: { traceJson?: string },
  command: string,
): { traceJson?: string; command: string } {
  return { ...(opts.traceJson !== undefined ? { traceJson: opts.traceJson } : {}), command };
}

/**
 * The stages of `ddw run` on the timeline, from its progress steps: the machine is built, the
 * guest boots, probes its PEs (and runs the monitor commands), then moves data through each device.
 */
function runStages(timeline: TimelineRecorder | undefined, monitor: boolean): (step: string) => void {
  if (timeline === undefined) return () => undefined;
  timeline.stage('build');
  let last = '';
  return (step) => {
    if (step === last) return;
    last = step;
    if (step === 'boot') timeline.stage('boot');
    else if (step === 'negotiate') timeline.stage(monitor ? 'probe + monitor' : 'probe');
    else if (step === 'dma') timeline.stage('dma');
    else timeline.stage(step);
  };
}

/**
 * Reads a machine command's configuration; answers help, version and --print-description itself
 * (and returns undefined: nothing more to do).
 */
async function prepare(
  cmd: Command,
  opts: MachineOpts,
  io: CommandIO,
  operands: readonly string[] = [],
): Promise<MachineConfiguration | undefined> {
  refuseUnknownCommand(cmd);
  const command = `'ddw ${cmd.parent?.parent ? `${cmd.parent.name()} ` : ''}${cmd.name()}'`;
  refuseDdwFlags(cmd.args, command);
  // Words sorted and the description file read once, here, for everything below.
  const line: MachineCommandLine = readCommandLine({
    words: cmd.args,
    operands,
    ...(opts.qemuArgs && opts.qemuArgs.length > 0 ? { qemuArgs: opts.qemuArgs } : {}),
    ...(opts.host !== undefined ? { host: opts.host } : {}),
    ...(opts.guest !== undefined ? { guest: opts.guest } : {}),
    ...(opts.qemu !== undefined ? { qemu: opts.qemu } : {}),
  });
  const qemu = qemuOptionsOf(line, command);
  const version = versionOf(line);
  if (await answerRequests(qemu, io, () => `${cmd.helpInformation()}${QEMU_OPTIONS_HELP}\n`, version)) {
    return undefined;
  }
  const config = configureMachine(line, qemu);
  const description = config.resolved.description;
  const type = machineType(description.type as string, 'type', qemuVersionOf(description));
  const deprecated = deprecationWarning(type);
  if (deprecated) io.err(`ddw: warning: ${deprecated}\n`);
  if (opts.printDescription) {
    // Built (and realized) so that what is printed is a description that builds.
    (await buildConfigured(config.resolved)).dispose();
    const printed = { preset: config.resolved.preset, ...config.resolved.description };
    io.out(`${JSON.stringify(printed, null, 2)}\n`);
    return undefined;
  }
  return config;
}

/** `ddw snapshot` alone, or `ddw snapshot bogus`. */
function missingSubcommand(command: string, word: string | undefined, known: readonly string[]): never {
  const list = known.join(', ');
  throw new UsageError(
    word === undefined
      ? `${command} needs a subcommand: ${list} (see ddw ${command} --help)`
      : `unknown command "${command} ${word}"; the ${command} commands are ${list}`,
  );
}

/**
 * QEMU prints host-side errors (error_report) on stderr; so does ddw, and a fatal one (QEMU's
 * hw_error) makes the command's answer "no" (exit 1).
 */
function hostErrors(io: CommandIO): { watch: (machine: Machine) => Machine; check: () => void } {
  let fatal = 0;
  return {
    watch: (machine) => {
      machine.get(MachineTokens.Events).on('host-error', (e) => {
        if (e.fatal) fatal++;
        io.err(`ddw: ${e.source}: ${e.fatal ? 'fatal: ' : ''}${e.message}\n`);
      });
      return machine;
    },
    check: () => {
      if (fatal > 0) throw new CommanderError(EXIT.no, 'ddw.host.fatal', 'a fatal host error');
    },
  };
}

/** `ddw bogus`: a word that is no command, no option and no file is refused as a command. */
function refuseUnknownCommand(cmd: Command): void {
  if (cmd.name() !== 'run' || cmd.parent?.args[0] === 'run') return;
  const first = cmd.args.find((w) => !w.startsWith('-'));
  if (first === undefined || cmd.args.indexOf(first) !== 0) return;
  if (/[./\\]/.test(first)) return; // a path: configure.ts reads it or says why it cannot
  const commands = cmd.parent?.commands.map((c) => c.name()).join(', ') ?? '';
  throw new UsageError(
    `unknown command "${first}"; the commands are ${commands} (a description file needs a path such as ./${first}.json)`,
  );
}

/** `--guest linux-6.12,page=64K`: the generation must be one ddw models (the rest the description checks). */
function checkGuest(value: string): string {
  const generation = value.split(',')[0] ?? '';
  if (!(GUEST_CHOICES as readonly string[]).includes(generation)) {
    throw new InvalidArgumentError(
      `use one of ${GUEST_CHOICES.join(', ')}, optionally with ,page=4K or ,page=64K`,
    );
  }
  return value;
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
    stop: () => {
      bar?.stop();
      bar = undefined;
    },
  };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
