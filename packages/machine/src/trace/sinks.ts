// Where a bus's selected events go: sinks get their log lines, listeners their values.

import type { TraceArg, TraceValue } from './declaration.js';
import type { TraceEvent } from './event.js';

export interface TraceSink {
  write(line: string): void;
}

/** A structured record for listeners that want values, not text (conformance tools). */
export interface TraceRecord {
  readonly event: TraceEvent;
  /** The arguments as emitted. */
  readonly args: readonly TraceArg[];
  /** The arguments converted to their declared C types. */
  readonly values: readonly TraceValue[];
}

export type TraceListener = (record: TraceRecord) => void;

export interface TraceCollector {
  /** Every line written since the collector was made, without newlines. */
  readonly lines: string[];
  clear(): void;
  /** Detaches the collector from the bus; `lines` keeps what it has. */
  stop(): void;
}

/** A sink that hands each line to `fn`. */
export function callbackSink(fn: (line: string) => void): TraceSink {
  return { write: fn };
}

/** A sink that writes each line and a newline to a stream (process.stderr, a file stream). */
export function streamSink(stream: { write(chunk: string): unknown }): TraceSink {
  return { write: (line) => void stream.write(`${line}\n`) };
}
