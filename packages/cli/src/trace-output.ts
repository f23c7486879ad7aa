import { TraceBus, TraceSelection } from '@ddw/machine';
import type { QemuArgs } from '@ddw/pseries';
import { type AtomicFile, openAtomicFile, readInputFile } from './files.js';
import type { CommandIO } from './io.js';
import { createTimelineRecorder, type TimelineRecorder, writeTimeline } from './timeline.js';

/** Warnings printed for patterns that select nothing (an events file of garbage is one per line). */
const MAX_PATTERN_WARNINGS = 5;

/** Where a command's trace lines go, as QEMU's -trace, -D and -msg say. */
export interface TraceOutput {
  /** The bus to build the machine on: selection and sinks already set, so boot is traced. */
  readonly bus: TraceBus;
  /** The `--trace-json` recorder, attached to `bus`; undefined without the flag. */
  readonly timeline: TimelineRecorder | undefined;
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
  work: (bus: TraceBus, output: TraceOutput) => Promise<T>,
  options: TraceOutputOptions = {},
): Promise<T> {
  const trace = openTraceOutput(qemu, io, options);
  try {
    const result = await work(trace.bus, trace);
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

/** What a command adds to QEMU's trace options. */
export interface TraceOutputOptions {
  /** `--trace-json FILE`: the run's timeline as Chrome/Perfetto trace-event JSON. */
  traceJson?: string;
  /** The process name the timeline shows, e.g. "ddw run". */
  command?: string;
}

export function openTraceOutput(
  qemu: QemuArgs,
  io: CommandIO,
  options: TraceOutputOptions = {},
): TraceOutput {
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
  // Opened first: a path that cannot be written is refused before anything else is created.
  const timeline =
    options.traceJson !== undefined ? openTimelineOutput(options.traceJson, io, options.command) : undefined;
  let log: AtomicFile | undefined;
  if (qemu.trace.logFile !== undefined) {
    let file: AtomicFile;
    try {
      file = openAtomicFile(qemu.trace.logFile, { what: 'trace log (-D)' });
    } catch (error) {
      timeline?.abort();
      throw error;
    }
    log = file;
    bus.addSink({ write: (line) => file.write(`${line}\n`) });
  } else {
    bus.addSink({ write: (line) => io.err(`${line}\n`) });
  }
  timeline?.recorder.attach(bus);
  return {
    bus,
    timeline: timeline?.recorder,
    close: async () => {
      timeline?.close();
      log?.commit();
    },
    abort: () => {
      timeline?.abort();
      log?.abort();
    },
  };
}

/** A `--trace-json` file being recorded: written (atomically) when the command is done. */
export interface TimelineOutput {
  readonly recorder: TimelineRecorder;
  /** Stops the recorder, streams the JSON into the file and puts it in place; warns about a cap. */
  close(): void;
  /** Leaves the file as it was. Safe after close(). */
  abort(): void;
}

/**
 * Opens `--trace-json FILE` for writing (atomically, as every file ddw writes): a path that
 * cannot be written is a FileError now, before the run.
 */
export function openTimelineOutput(path: string, io: CommandIO, command = 'ddw'): TimelineOutput {
  const file = openAtomicFile(path, { what: 'timeline (--trace-json)' });
  const recorder = createTimelineRecorder(undefined, { processName: command });
  let done = false;
  return {
    recorder,
    close: () => {
      if (done) return;
      recorder.stop();
      writeTimeline(recorder, (chunk) => file.write(chunk));
      file.commit();
      done = true;
      if (recorder.dropped > 0) {
        io.err(
          `ddw: warning: --trace-json ${path}: the timeline holds its first ${recorder.recorded} events (the most it keeps); ${recorder.dropped} later hypercalls, RTAS calls and stages were dropped, and trace events were not recorded after that point\n`,
        );
      }
    },
    abort: () => {
      recorder.stop();
      file.abort();
    },
  };
}
