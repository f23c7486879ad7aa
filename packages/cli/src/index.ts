export { buildDemoMachine, demoBus } from './demo.js';
export { createProgram } from './program.js';
export { type ReplayResult, replayTrace, sameEvent } from './replay.js';
export { compareTraces, type TraceComparison } from './trace-diff.js';
