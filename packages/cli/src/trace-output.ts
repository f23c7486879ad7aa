import { TraceBus } from '@ddw/machine';
import type { QemuArgs } from '@ddw/pseries';
import { type AtomicFile, openAtomicFile, readInputFile } from './files.js';
import type { CommandIO } from './io.js';

/** Where a command's trace lines go, as QEMU's -trace, -D and -msg say. */
export interface TraceOutput {
  /** The bus to build the machine on: selection and sinks already set, so boot is traced. */
  readonly bus: TraceBus;
  /** The run is over: a -D file is put in place (atomically). */
  close(): Promise<void>;
  /** The run failed: a -D file is left as it was. Safe after close(). */
  abort(): void;
}

/**
 * QEMU's trace selection: every `-trace PATTERN` and `-d trace:PATTERN` in order, and the patterns
 * of each `-trace events=FILE` (one a line; blank lines and `#` comments skipped) where it stood.
 * Lines go to stderr, or to the `-D` file, with `-msg timestamp=on` prefixes.
 */
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
