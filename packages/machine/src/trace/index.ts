/**
 * Trace events in QEMU's own terms: declared with trace-events syntax, printed as QEMU's `log`
 * backend prints them, selected with `-trace`-style glob patterns. Lines therefore compare
 * one-for-one with a real `qemu -trace ... -D file` log.
 *
 * Formatting follows C: every argument is first converted to its declared parameter type (so a
 * 64-bit mask passed as `unsigned` is truncated), then read by its conversion the way printf's
 * va_arg would read it (so `uint64_t ret` printed with PRId64 shows -4).
 *
 * The code: declaration (the trace-events syntax and its parser), printf (the format engine),
 * event (TraceEvent: argument conversion and rendering), selection (glob patterns), sinks (lines
 * and value listeners), recorder (what sees everything, whatever the selection), bus (TraceBus)
 * and log-line (reading a QEMU log line back).
 */

export { TraceBus, type TraceBusOptions } from './bus.js';
export { TRACE_MAX_ARGS, type TraceArg, type TraceParam, type TraceValue } from './declaration.js';
export { TraceEvent } from './event.js';
export { type ParsedTraceLine, parseTraceLine } from './log-line.js';
export type { TraceRecorder } from './recorder.js';
export { globToRegExp, TraceSelection } from './selection.js';
export {
  callbackSink,
  streamSink,
  type TraceCollector,
  type TraceListener,
  type TraceRecord,
  type TraceSink,
} from './sinks.js';
