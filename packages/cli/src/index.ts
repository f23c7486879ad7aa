export { createProgram, DEFAULT_QEMU_ARGS } from './program.js';
export { defaultReplayPatterns, type ReplayResult, replayTrace, sameEvent } from './replay.js';
export { compareTraces, type TraceComparison } from './trace-diff.js';
