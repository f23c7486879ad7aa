import { TraceBus, TraceSelection } from '@ddw/machine';
import type { QemuArgs } from '@ddw/pseries';
import { type AtomicFile, openAtomicFile, readInputFile } from './files.js';
import type { CommandIO } from './io.js';

/** Warnings printed for patterns that select nothing (an events file of garbage is one per line). */
const MAX_PATTERN_WARNINGS = 5;

/** Where a command's trace lines go, as QEMU's -trace, -D and -msg say. */
export interface TraceOutput {
  /** The bus to build the machine on: selection and sinks already set, so boot is traced. */
  readonly bus: TraceBus;
  /** The run is over: a -D file is put in place (atomically). */
  close(): Promise<void>;
  /** The run failed: a -D file is left as it was. Safe after close() (then it does nothing). */
  abort(): void;
}

/**
 * QEMU's trace selection: every `-trace PATTERN` and `-d trace:PATTERN` in order, then the patterns
 * of each `-trace events=FILE` (one a line; blank lines and `#` comments skipped).
 * Lines go to stderr, or to the `-D` file, with `-msg timestamp=on` prefixes.
 */
/**
 * Runs `work` with the trace output the QEMU options ask for: a -D file is put in place when the
 * work succeeds and left as it was when it fails.
 */
export async function withTraceOutput<T>(
  qemu: QemuArgs,
  io: CommandIO,
  work: (bus: TraceBus) => Promise<T>,
): Promise<T> {
  const trace = openTraceOutput(qemu, io);
  try {
    const result = await work(trace.bus);
    // The machine has declared its events by now: a pattern that selects none is likely a typo.
    const events = trace.bus.events().map((e) => e.name);
    const unmatched = new TraceSelection(trace.bus.patterns()).matchingNone(events);
    for (const pattern of unmatched.slice(0, MAX_PATTERN_WARNINGS)) {
      const shown = JSON.stringify(pattern.length > 80 ? `${pattern.slice(0, 80)}…` : pattern);
      io.err(`ddw: warning: -trace pattern ${shown} matches no trace event (-trace help lists them)\n`);
    }
    if (unmatched.length > MAX_PATTERN_WARNINGS) {
      io.err(
        `ddw: warning: ... and ${unmatched.length - MAX_PATTERN_WARNINGS} more patterns that match no trace event\n`,
      );
    }
    await trace.close();
    return result;
  } finally {
    trace.abort();
  }
}

export function openTraceOutput(qemu: QemuArgs, io: CommandIO): TraceOutput {
  const patterns = [...qemu.trace.patterns];
  for (const file of qemu.trace.eventFiles) {
    const text = readInputFile(file, 'trace events file', 'utf8');
    for (const raw of text.split(/\r?\n/)) {
      const line = raw.trim();
      if (line !== '' && !line.startsWith('#')) patterns.push(line);
    }
  }
  const bus = new TraceBus({ timestamps: qemu.trace.timestamps });
  bus.setPatterns(patterns);
  let log: AtomicFile | undefined;
  if (qemu.trace.logFile !== undefined) {
    const file = openAtomicFile(qemu.trace.logFile, { what: 'trace log (-D)' });
    log = file;
    bus.addSink({ write: (line) => file.write(`${line}\n`) });
  } else {
    bus.addSink({ write: (line) => io.err(`${line}\n`) });
  }
  return {
    bus,
    close: async () => log?.commit(),
    abort: () => log?.abort(),
  };
}
