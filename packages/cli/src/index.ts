export { type MachineCommandLine, type MachineConfiguration, UsageError } from './configuration.js';
export { configureMachine, readDescriptionFile } from './configure.js';
export { FileError } from './files.js';
export type { CommandIO } from './io.js';
export { type MtreeReport, mtreeReport, mtreeReportSchema } from './mtree-report.js';
export { createProgram, EXIT, runCli } from './program.js';
export { defaultReplayPatterns } from './replay-events.js';
export { type ReplayResult, replayTrace } from './replayer.js';
export { formatReport } from './report.js';
export {
  buildConfigured,
  configureSource,
  type DeviceReport,
  type MachineSource,
  type RunOptions,
  type RunReport,
  runMachine,
  runReportSchema,
  runResolved,
  type TransferReport,
  type WindowReport,
} from './run.js';
export { schemaNames, schemaOf } from './schemas.js';
export {
  describeSnapshot,
  describeWindows,
  formatSnapshotInfo,
  loadMachineSnapshot,
  type SnapshotInfoReport,
  saveMachineSnapshot,
  snapshotInfoReportSchema,
} from './snapshot.js';
export {
  createTimelineRecorder,
  DEFAULT_TIMELINE_MAX_EVENTS,
  type TimelineMachine,
  type TimelineOptions,
  type TimelineRecorder,
  timelineJson,
  writeTimeline,
} from './timeline.js';
export { compareTraces, sameEvent, type TraceComparison } from './trace-diff.js';
export { DDW_VERSION } from './version.js';
