export { createProgram } from './program.js';
export { defaultReplayPatterns, type ReplayResult, replayTrace, sameEvent } from './replay.js';
export { formatReport } from './report.js';
export {
  type DeviceReport,
  type RunOptions,
  type RunReport,
  runMachine,
  type TransferReport,
  type WindowReport,
} from './run.js';
export { describeSnapshot, describeWindows, loadMachineSnapshot, saveMachineSnapshot } from './snapshot.js';
export { compareTraces, type TraceComparison } from './trace-diff.js';
