/**
 * `ddw replay` on any source of trace lines, without files: browser-safe (replay.ts reads a file
 * in Node, the page a File).
 */
import { ConfigError, type Machine, MachineTokens, type TraceBus } from '@ddw/machine';
import type { CommandIO } from './io.js';
import { eventName, MODELLED_EVENT } from './replay-events.js';
import type { ReplayReport } from './replay-report.js';
import { describeSkip, MAX_SKIPS_KEPT, Replayer, type ReplaySkip } from './replayer.js';
import { comparisonSummary, normalizeText, TraceComparer } from './trace-diff.js';
import type { InputLine } from './trace-lines.js';

/** Skip messages printed on stderr before the rest are only counted. */
const MAX_SKIP_MESSAGES = 20;

/** What a first read of the file found. */
interface TraceScan {
  lines: number;
  /** Modelled lines. */
  modelled: number;
  /** The modelled events it has, in order of first appearance. */
  events: Set<string>;
}

async function scanTrace(source: TraceSource): Promise<TraceScan> {
  const scan: TraceScan = { lines: 0, modelled: 0, events: new Set() };
  for await (const line of source.lines()) {
    scan.lines++;
    const name = line.length === undefined ? eventName(line.text) : undefined;
    if (name === undefined || !MODELLED_EVENT.test(name)) continue;
    scan.modelled++;
    scan.events.add(name);
  }
  return scan;
}

/** A QEMU trace log to replay: read twice (a scan, then the replay), so each call starts over. */
export interface TraceSource {
  /** How messages and the JSON report name it (the path as given). */
  readonly name: string;
  lines(): AsyncIterable<InputLine>;
}

/** What `ddw replay` was asked to do. */
export interface ReplayCommandOptions {
  /** The QEMU trace log to replay. */
  file: string;
  /** Events to print and compare, as QEMU -trace (empty: the default selection). */
  patterns: readonly string[];
  /** Compare with the input and print a diff and "N compared, M differ". */
  check: boolean;
  /** Print one JSON object instead of text. */
  json: boolean;
  /** Builds the traced run's machine (from its QEMU options) on the given trace bus. */
  build: (trace: TraceBus) => Promise<Machine>;
}

/** Collects output into chunks: one write per 64 KiB, not one per line. */
class Output {
  private buffer = '';
  constructor(private readonly write: (text: string) => void) {}
  add(text: string): void {
    this.buffer += text;
    if (this.buffer.length >= 1 << 16) this.flush();
  }
  flush(): void {
    if (this.buffer !== '') this.write(this.buffer);
    this.buffer = '';
  }
}

/**
 * `ddw replay` on any source of lines (replay.ts reads a file; a browser a File): replays it and
 * prints the model's lines, or with `check` the comparison.
 * Returns the exit code: 0, or 1 when the model differs from QEMU. Input errors throw DdwErrors
 * (ConfigError for an unreadable file, a file with no trace line, a --check that compared nothing).
 */
export async function replaySource(
  source: TraceSource,
  options: Omit<ReplayCommandOptions, 'file'>,
  io: CommandIO,
): Promise<number> {
  const { check, json } = options;
  const file = source.name;
  const scan = await scanTrace(source);
  if (scan.modelled === 0) {
    const what =
      scan.lines === 0
        ? 'the file is empty'
        : `none of its ${scan.lines} lines is a trace line of an event ddw models (spapr_iommu_*, vfio_*)`;
    throw new ConfigError('content', what, "record one with qemu ... -trace 'spapr_iommu_*' -D FILE", {
      subject: `trace ${file}`,
    });
  }
  const patterns =
    options.patterns.length > 0
      ? [...options.patterns]
      : ['spapr_iommu_*', ...[...scan.events].filter((e) => e.startsWith('vfio_'))];

  const out = new Output(io.out);
  const comparer = check ? new TraceComparer() : undefined;
  const skips: ReplaySkip[] = [];
  let skippedTotal = 0;
  let firstLine = true;
  if (json && !check) {
    const head = JSON.stringify({ schemaVersion: 1, kind: 'replay', trace: file, patterns, check }, null, 2);
    out.add(`${head.slice(0, -2)},\n  "lines": [`);
  }
  const replayer = await Replayer.start(
    async (trace) => {
      const machine = await options.build(trace);
      // QEMU's error_report goes to stderr; so do the model's host-side errors.
      machine.get(MachineTokens.Events).on('host-error', (e) => io.err(`ddw: ${e.source}: ${e.message}\n`));
      return machine;
    },
    {
      patterns,
      inputEvents: scan.events,
      line: comparer
        ? (l) => comparer.addActual(normalizeText(l))
        : json
          ? (l) => {
              out.add(`${firstLine ? '' : ','}\n    ${JSON.stringify(l)}`);
              firstLine = false;
            }
          : (l) => out.add(`${l}\n`),
      expected: comparer ? (l) => comparer.addExpected(normalizeText(l)) : undefined,
      skip: (s) => {
        skippedTotal++;
        if (skips.length < MAX_SKIPS_KEPT) skips.push(s);
        if (!json && skippedTotal <= MAX_SKIP_MESSAGES) {
          io.err(`ddw replay: skipped ${describeSkip(s)}\n    ${s.echo}\n`);
        }
      },
    },
  );
  try {
    if (options.patterns.length > 0) {
      for (const pattern of replayer.patternsMatchingNothing()) {
        io.err(`ddw replay: warning: pattern "${pattern}" matches no trace event\n`);
      }
    }
    for await (const line of source.lines()) replayer.push(line);
    replayer.finish();
  } finally {
    replayer.machine.dispose();
  }
  if (!json && skippedTotal > MAX_SKIP_MESSAGES) {
    io.err(`ddw replay: ... and ${skippedTotal - MAX_SKIP_MESSAGES} more skipped lines\n`);
  }
  const skipped = skips.map((s) => ({
    line: s.line,
    event: s.event,
    reason: s.field !== undefined ? `${s.field}: ${s.reason}` : s.reason,
  }));

  if (!comparer) {
    if (json) {
      const tail = JSON.stringify({ skipped, skippedTotal }, null, 2);
      out.add(`${firstLine ? '' : '\n  '}],\n${tail.slice(2)}\n`);
    }
    out.flush();
    return 0;
  }
  const cmp = comparer.finish();
  if (cmp.compared === 0) {
    throw new ConfigError(
      '--trace',
      `${patterns.map((p) => JSON.stringify(p)).join(' ')} selects none of the ${scan.modelled} modelled lines of ${file}: nothing was compared`,
      `select events the trace has (it has ${[...scan.events].slice(0, 5).join(', ')}${scan.events.size > 5 ? ', ...' : ''})`,
      { subject: 'replay --check' },
    );
  }
  if (json) {
    const report: ReplayReport = {
      schemaVersion: 1,
      kind: 'replay',
      trace: file,
      patterns,
      check,
      compared: cmp.compared,
      differ: cmp.differ,
      exact: cmp.exact,
      diff: cmp.diff.length > 0 ? `${cmp.diff.join('\n')}\n` : '',
      ...(cmp.message !== undefined ? { message: cmp.message } : {}),
      skipped,
      skippedTotal,
    };
    out.add(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    if (cmp.message !== undefined) io.err(`ddw replay: ${cmp.message}\n`);
    for (const l of cmp.diff) out.add(`${l}\n`);
    out.add(`${comparisonSummary(cmp)}\n`);
  }
  out.flush();
  return cmp.differ > 0 ? 1 : 0;
}
