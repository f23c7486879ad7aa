// The trace bus: a machine's declared events, their selection, and the sinks, listeners and
// recorders their lines and values go to.

import { injectable } from '../di.js';
import { DdwError } from '../errors.js';
import type { HypercallObserver } from '../hcall.js';
import type { RtasObserver } from '../rtas.js';
import { parseDeclaration, type TraceArg, type TraceValue } from './declaration.js';
import { TraceEvent } from './event.js';
import { compileFormat } from './printf.js';
import { type CallSite, fanOut, type TraceRecorder } from './recorder.js';
import { TraceSelection } from './selection.js';
import type { TraceCollector, TraceListener, TraceRecord, TraceSink } from './sinks.js';

export interface TraceBusOptions {
  /** Prefix each line with `pid@seconds.micros:` as `-msg timestamp=on` does. */
  timestamps?: boolean;
  /** Wall-clock time in microseconds since the Unix epoch (gettimeofday). */
  clock?: () => number;
  /** The id QEMU prints (its thread id; the process id for the main thread). */
  pid?: number;
}

function defaultClock(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** The machine's trace events, their selection, and where their lines go. */
@injectable()
export class TraceBus {
  timestamps: boolean;
  private readonly clock: () => number;
  private readonly pid: number;
  private readonly eventMap = new Map<string, TraceEvent>();
  private selection = new TraceSelection();
  private sinks: TraceSink[] = [];
  private listeners: TraceListener[] = [];
  private recorders: TraceRecorder[] = [];
  /** The recorders with `event`: while there is one, every event is enabled. */
  private eventRecorders: TraceRecorder[] = [];
  private readonly callSites = new Set<CallSite>();
  private hypercallObserver: HypercallObserver | undefined;
  private rtasObserver: RtasObserver | undefined;

  constructor(options: TraceBusOptions = {}) {
    this.timestamps = options.timestamps ?? false;
    this.clock = options.clock ?? defaultClock;
    // A browser has no process: QEMU's pid field is then 1.
    this.pid = options.pid ?? (globalThis as { process?: { pid?: number } }).process?.pid ?? 1;
  }

  /**
   * Declares an event from one trace-events line, e.g.
   * `spapr_iommu_put(uint64_t liobn, uint64_t ioba, uint64_t tce, uint64_t ret) "liobn=0x%"PRIx64" ..."`.
   * Declaring the same event again returns the existing one (several plugins, several machines);
   * a different declaration under the same name is a DdwError.
   */
  define<A extends readonly TraceArg[] = readonly TraceArg[]>(line: string, group?: string): TraceEvent<A> {
    const { name, properties, params, format } = parseDeclaration(line);
    const segments = compileFormat(format, params, line);
    const event = new TraceEvent<A>(this, { name, group, params, format, properties, segments });

    const existing = this.eventMap.get(name);
    if (existing) {
      if (existing.declaration !== event.declaration) {
        throw new DdwError(
          'TRACE',
          `trace event ${name} is already declared differently:\n  ${existing.declaration}\n  ${event.declaration}`,
        );
      }
      return existing as unknown as TraceEvent<A>;
    }
    event.selected = this.selection.selects(name);
    event.enabled = event.selected || this.eventRecorders.length > 0;
    this.eventMap.set(name, event as unknown as TraceEvent);
    return event;
  }

  /** Declares every event of a trace-events file's text; blank lines and `#` comments are skipped. */
  defineAll(source: string, group?: string): TraceEvent[] {
    return source
      .split('\n')
      .filter((line) => line.trim() !== '' && !line.trimStart().startsWith('#'))
      .map((line) => this.define(line, group));
  }

  event(name: string): TraceEvent | undefined {
    return this.eventMap.get(name);
  }

  /** Declared events in declaration order. */
  events(): TraceEvent[] {
    return [...this.eventMap.values()];
  }

  /** Enables the events matching a glob, now and when declared later (`-trace spapr_iommu_*`). */
  enable(pattern: string): void {
    this.select(pattern, true);
  }

  disable(pattern: string): void {
    this.select(pattern, false);
  }

  /**
   * Replaces the selection: all events off, then each pattern in order; a leading `-` disables.
   * `["spapr_iommu_*", "-spapr_iommu_xlate"]` traces the IOMMU except translations.
   */
  setPatterns(patterns: readonly string[]): void {
    this.selection = new TraceSelection(patterns);
    const recording = this.eventRecorders.length > 0;
    for (const event of this.eventMap.values()) {
      event.selected = this.selection.selects(event.name);
      event.enabled = event.selected || recording;
    }
  }

  /** The selection in `setPatterns` form. */
  patterns(): string[] {
    return this.selection.patterns();
  }

  addSink(sink: TraceSink): () => void {
    this.sinks = [...this.sinks, sink];
    return () => this.removeSink(sink);
  }

  removeSink(sink: TraceSink): boolean {
    const before = this.sinks.length;
    this.sinks = this.sinks.filter((s) => s !== sink);
    return this.sinks.length !== before;
  }

  /** A sink that keeps lines in memory, for tests and `ddw` comparisons. */
  collect(): TraceCollector {
    const lines: string[] = [];
    const sink: TraceSink = { write: (line) => void lines.push(line) };
    this.addSink(sink);
    return {
      lines,
      clear: () => {
        lines.length = 0;
      },
      stop: () => {
        this.removeSink(sink);
      },
    };
  }

  /** Receives every emitted event of the enabled ones as values. */
  onRecord(listener: TraceListener): () => void {
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  /**
   * Attaches a recorder (see TraceRecorder) until the returned function is called. Printing does
   * not change: sinks and listeners get what the selection selects, as before.
   */
  record(recorder: TraceRecorder): () => void {
    this.recorders = [...this.recorders, recorder];
    this.refreshRecorders();
    let attached = true;
    return () => {
      if (!attached) return;
      attached = false;
      this.recorders = this.recorders.filter((r) => r !== recorder);
      this.refreshRecorders();
    };
  }

  /**
   * @internal A machine built on this bus connects its hypercall and RTAS registries, so that
   * recorders see their dispatches; the returned function disconnects them (Machine.dispose).
   */
  connectCalls(hypercalls: CallSite['hypercalls'], rtas: CallSite['rtas']): () => void {
    const site: CallSite = { hypercalls, rtas };
    this.callSites.add(site);
    if (this.hypercallObserver !== undefined) hypercalls.observer = this.hypercallObserver;
    if (this.rtasObserver !== undefined) rtas.observer = this.rtasObserver;
    return () => {
      if (!this.callSites.delete(site)) return;
      if (hypercalls.observer === this.hypercallObserver) hypercalls.observer = undefined;
      if (rtas.observer === this.rtasObserver) rtas.observer = undefined;
    };
  }

  private refreshRecorders(): void {
    const wasRecording = this.eventRecorders.length > 0;
    this.eventRecorders = this.recorders.filter((r) => r.event !== undefined);
    const recording = this.eventRecorders.length > 0;
    if (recording && !wasRecording) {
      // An event enabled directly (not by a pattern) keeps printing while recording.
      for (const event of this.eventMap.values()) {
        event.selected = event.enabled;
        event.enabled = true;
      }
    } else if (!recording && wasRecording) {
      for (const event of this.eventMap.values()) event.enabled = event.selected;
    }
    const hypercall = fanOut(this.recorders.flatMap((r) => (r.hypercall ? [r.hypercall] : [])));
    const rtas = fanOut(this.recorders.flatMap((r) => (r.rtas ? [r.rtas] : [])));
    for (const site of this.callSites) {
      if (site.hypercalls.observer === this.hypercallObserver) site.hypercalls.observer = hypercall;
      if (site.rtas.observer === this.rtasObserver) site.rtas.observer = rtas;
    }
    this.hypercallObserver = hypercall;
    this.rtasObserver = rtas;
  }

  /** The full log line for an event and its arguments, with the timestamp prefix if on. */
  formatLine<A extends readonly TraceArg[]>(event: TraceEvent<A>, ...args: A): string {
    return this.lineOf(event as unknown as TraceEvent, event.toValues(args));
  }

  /** @internal Called by TraceEvent.emit() for enabled events. */
  deliver(event: TraceEvent, args: readonly TraceArg[]): void {
    const recorders = this.eventRecorders;
    if (recorders.length > 0) {
      for (const recorder of recorders) recorder.event!(event, args);
      // Enabled only for the recorders: printing stays the selection's.
      if (!event.selected) return;
    }
    const sinks = this.sinks;
    const listeners = this.listeners;
    if (sinks.length === 0 && listeners.length === 0) return;
    const values = event.toValues(args);
    if (listeners.length > 0) {
      const record: TraceRecord = { event, args, values };
      for (const listener of listeners) listener(record);
    }
    if (sinks.length > 0) {
      const line = this.lineOf(event, values);
      for (const sink of sinks) sink.write(line);
    }
  }

  private lineOf(event: TraceEvent, values: readonly TraceValue[]): string {
    // The log backend prints "name " and the format, so an empty format still leaves the space.
    const body = `${event.name} ${event.render(values)}`;
    if (!this.timestamps) return body;
    const micros = this.clock();
    const seconds = Math.floor(micros / 1e6);
    const fraction = String(micros - seconds * 1e6).padStart(6, '0');
    return `${this.pid}@${seconds}.${fraction}:${body}`;
  }

  private select(pattern: string, enable: boolean): void {
    const regexp = this.selection.add(pattern, enable);
    for (const event of this.eventMap.values()) {
      if (regexp.test(event.name)) {
        event.selected = enable;
        event.enabled = enable || this.eventRecorders.length > 0;
      }
    }
  }
}
