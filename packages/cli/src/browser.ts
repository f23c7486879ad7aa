/**
 * What a browser page (packages/web) uses of ddw: the CLI's configuration, run, report, replay and
 * snapshot functions, without any Node built-in (no node:*, commander, cli-progress or
 * write-file-atomic is reachable from here). The CLI itself is program.ts.
 */
import type { QemuArgs } from '@ddw/pseries';
import { UsageError } from './configuration.js';

export { GUEST_CHOICES, type GuestChoice } from '@ddw/guest-linux';
export {
  DdwError,
  formatHex,
  formatPageShift,
  formatSize,
  loadSnapshot,
  type Machine,
  SnapshotError,
  saveSnapshot,
  snapshotInfo,
  TraceBus,
  TraceSelection,
  writeSnapshot,
} from '@ddw/machine';
export { buildPseries, DEFAULT_QEMU_VERSION, QEMU_VERSIONS, type QemuArgs } from '@ddw/pseries';
export { SpaprPciTokens } from '@ddw/spapr-pci';
export {
  configureMachine,
  type MachineCommandLine,
  type MachineConfiguration,
  qemuOptionsOf,
  UsageError,
  versionOf,
} from './configuration.js';
export { answerRequests } from './help.js';
export type { CommandIO } from './io.js';
export { type MtreeRegion, type MtreeReport, mtreeReport } from './mtree-report.js';
export { type ReplayCommandOptions, replaySource, type TraceSource } from './replay-source.js';
export { formatReport, pageName } from './report.js';
export { buildConfigured, mappedEntries, negotiate, type RunReport, runResolved } from './run.js';
export { createTimelineRecorder, type TimelineRecorder, timelineJson } from './timeline.js';
export { comparisonSummary } from './trace-diff.js';
export { type InputLine, linesOf } from './trace-lines.js';
export { describeWindows } from './windows.js';

/** An error as the CLI prints it after `ddw: `: a multi-line message (several problems) as one line. */
export function errorLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .join('; ');
}

/**
 * The check `ddw replay` makes of its --qemu-args: tracing options do not apply to a replay (the
 * same message as the CLI).
 */
export function checkReplayQemuArgs(qemu: QemuArgs): void {
  const t = qemu.trace;
  if (t.patterns.length > 0 || t.eventFiles.length > 0 || t.logFile !== undefined || t.timestamps) {
    throw new UsageError(
      'replay --qemu-args: -trace, -d trace:, -D and -msg do not apply to a replay; select events with --trace, and redirect stdout for a file',
    );
  }
}
