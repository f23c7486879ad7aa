import {
  formatHex,
  type HypercallResult,
  hcallReturnName,
  type MachineEventBus,
  MachineTokens,
  type RtasCall,
  type TraceArg,
  type TraceBus,
  type TraceEvent,
  type TraceValue,
} from '@ddw/machine';

/**
 * A run as a timeline: Chrome/Perfetto trace-event JSON (`{"traceEvents": [...]}`), which
 * ui.perfetto.dev and chrome://tracing open. Hypercalls and RTAS calls are spans ("X", with their
 * arguments and return code), every trace event the model emits is an instant ("i", with its
 * arguments by name), whatever the `-trace` selection, and the stages of a run are spans. Each
 * kind has its own track (a thread of process 1). Times are the model's own execution time
 * (performance.now()), in microseconds from the recorder's start.
 *
 * Recording never changes what is computed or printed: the bus enables every event for the
 * recorder (enabling an event never changes which code runs) and still prints only the selected
 * ones. At most `maxEvents` events are kept; what comes later is counted, not kept. After the cap
 * the recorder lets the trace events go back to the selection (so a run of billions of events
 * keeps its fast paths); hypercalls and RTAS calls are still counted.
 *
 * Browser-safe: no Node module. `createTimelineRecorder(machine or bus)`, run, `recorder.stop()`,
 * then `timelineJson(recorder)` (one string) or `writeTimeline(recorder, write)` (chunks).
 */

/** What `--trace-json` keeps by default: later events are counted and dropped. */
export const DEFAULT_TIMELINE_MAX_EVENTS = 1_000_000;

export interface TimelineOptions {
  /** The most spans and instants kept (track names are not counted). Default 1 000 000. */
  maxEvents?: number;
  /** A monotonic clock in milliseconds (default performance.now). */
  now?: () => number;
  /** The process name the viewer shows (default "ddw"). */
  processName?: string;
}

/** Anything with a trace bus and machine events: a Machine. */
export interface TimelineMachine {
  readonly trace: TraceBus;
  /** The machine's services: the timeline listens to its events (MachineTokens.Events). */
  get(key: typeof MachineTokens.Events): MachineEventBus;
}

export interface TimelineRecorder {
  /**
   * Records a bus (its events, and the hypercalls and RTAS calls of every machine built on it) or
   * a machine (its bus, and its lifecycle, guest-error and host-error events). Attaching the same
   * bus twice records it once. Returns a function that detaches it.
   */
  attach(target: TraceBus | TimelineMachine): () => void;
  /** Starts a stage span (`build`, `boot`, `negotiate`, `dma`, ...); the previous one ends here. */
  stage(name: string, args?: Record<string, string | number | boolean>): void;
  /** Ends the open stage and detaches everything. Idempotent; the recording stays readable. */
  stop(): void;
  /** Events kept so far. */
  readonly recorded: number;
  /** Events counted after the cap and not kept. */
  readonly dropped: number;
  readonly maxEvents: number;
}

/** One kept event, in the order it completed. */
type Entry =
  | { kind: 'trace'; ts: number; event: TraceEvent; args: readonly TraceArg[] }
  | {
      kind: 'hcall';
      ts: number;
      dur: number;
      opcode: number;
      name: string | undefined;
      args: readonly bigint[];
      result: HypercallResult;
    }
  | {
      kind: 'rtas';
      ts: number;
      dur: number;
      token: number;
      name: string;
      nargs: number;
      nret: number;
      args: number[];
      rets: number[];
    }
  | { kind: 'stage'; ts: number; dur: number; name: string; args: Record<string, string | number | boolean> }
  | { kind: 'machine'; ts: number; name: string; args: Record<string, string | boolean> }
  | { kind: 'cap'; ts: number };

/** The tracks, in the order the viewer lists them. */
const TRACKS = {
  stages: { tid: 1, name: 'run stages' },
  hypercalls: { tid: 2, name: 'hypercalls' },
  rtas: { tid: 3, name: 'RTAS calls' },
  rtasTrace: { tid: 4, name: 'trace: RTAS (ddw, spapr_pci)' },
  iommu: { tid: 5, name: 'trace: spapr_iommu' },
  vfio: { tid: 6, name: 'trace: vfio' },
  machine: { tid: 7, name: 'machine events' },
  other: { tid: 8, name: 'trace: other' },
} as const;

const PID = 1;

/** The track of a trace event, by its name. */
function trackOf(name: string): number {
  if (/(^|_)ddw_|^spapr_pci_|rtas/.test(name)) return TRACKS.rtasTrace.tid;
  if (name.startsWith('spapr_iommu_') || name.startsWith('spapr_tce')) return TRACKS.iommu.tid;
  if (name.startsWith('vfio_')) return TRACKS.vfio.tid;
  return TRACKS.other.tid;
}

interface Recording {
  readonly entries: Entry[];
  readonly maxEvents: number;
  readonly processName: string;
  readonly dropped: number;
}

const recordings = new WeakMap<TimelineRecorder, Recording>();

/**
 * A recorder, attached to `target` when given (see TimelineRecorder.attach). Call stop() at the
 * end of the run, then timelineJson() or writeTimeline().
 */
export function createTimelineRecorder(
  target?: TraceBus | TimelineMachine,
  options: TimelineOptions = {},
): TimelineRecorder {
  const maxEvents = options.maxEvents ?? DEFAULT_TIMELINE_MAX_EVENTS;
  if (!Number.isSafeInteger(maxEvents) || maxEvents < 0)
    throw new RangeError(`maxEvents ${maxEvents} is not a count`);
  const now = options.now ?? (() => performance.now());
  const origin = now();
  const clock = () => (now() - origin) * 1000;
  const entries: Entry[] = [];
  let dropped = 0;
  let stopped = false;
  const detachers = new Set<() => void>();
  /** Per bus: the event subscription, dropped at the cap. */
  const eventSubscriptions = new Map<TraceBus, () => void>();
  const buses = new Set<TraceBus>();

  /** Room for one more? Counts it as dropped when not; the first drop leaves a marker. */
  const admit = (): boolean => {
    if (entries.length < maxEvents) return true;
    if (dropped === 0) {
      entries.push({ kind: 'cap', ts: clock() });
      // From here on trace events follow the selection again: the model's fast paths come back.
      for (const unsubscribe of eventSubscriptions.values()) unsubscribe();
      eventSubscriptions.clear();
    }
    dropped++;
    return false;
  };

  // Calls open now (nested calls stack); null for one that started after the cap.
  const hcalls: ({ ts: number; args: readonly bigint[] } | null)[] = [];
  const rtasCalls: ({ ts: number; args: number[] } | null)[] = [];
  let stage: { name: string; ts: number; args: Record<string, string | number | boolean> } | undefined;

  const endStage = () => {
    if (stage === undefined) return;
    const ts = clock();
    if (admit())
      entries.push({ kind: 'stage', ts: stage.ts, dur: ts - stage.ts, name: stage.name, args: stage.args });
    stage = undefined;
  };

  /**
   * Ends the innermost open span of `stack` (null: entered past the cap): it is counted, and
   * recorded as `entry` makes it when it was admitted.
   */
  const endSpan = <A>(
    stack: ({ ts: number; args: A } | null)[],
    entry: (open: { ts: number; args: A }, dur: number) => Entry,
  ): void => {
    const open = stack.pop();
    if (open === null || open === undefined) {
      admit();
      return;
    }
    const ts = clock();
    if (admit()) entries.push(entry(open, ts - open.ts));
  };

  const attachBus = (bus: TraceBus): (() => void) => {
    if (buses.has(bus)) return () => undefined;
    buses.add(bus);
    if (entries.length < maxEvents || dropped === 0) {
      eventSubscriptions.set(
        bus,
        bus.record({
          event: (event, args) => {
            if (admit()) entries.push({ kind: 'trace', ts: clock(), event, args });
          },
        }),
      );
    }
    const calls = bus.record({
      hypercall: {
        enter: (_opcode, _name, args) =>
          void hcalls.push(entries.length < maxEvents ? { ts: clock(), args } : null),
        leave: (opcode, name, result) =>
          endSpan(hcalls, (open, dur) => ({
            kind: 'hcall',
            ts: open.ts,
            dur,
            opcode,
            name,
            args: open.args,
            result,
          })),
      },
      rtas: {
        enter: (call) =>
          void rtasCalls.push(
            entries.length < maxEvents ? { ts: clock(), args: Array.from(call.args) } : null,
          ),
        leave: (call: RtasCall) =>
          endSpan(rtasCalls, (open, dur) => ({
            kind: 'rtas',
            ts: open.ts,
            dur,
            token: call.token,
            name: call.name,
            nargs: call.nargs,
            nret: call.nret,
            args: open.args,
            rets: Array.from(call.rets),
          })),
      },
    });
    const detach = () => {
      eventSubscriptions.get(bus)?.();
      eventSubscriptions.delete(bus);
      calls();
      buses.delete(bus);
      detachers.delete(detach);
    };
    detachers.add(detach);
    return detach;
  };

  const attachMachine = (machine: TimelineMachine): (() => void) => {
    const busDetach = attachBus(machine.trace);
    const events = machine.get(MachineTokens.Events);
    const onLifecycle = (e: { phase: string; device?: string }) => {
      if (admit())
        entries.push({
          kind: 'machine',
          ts: clock(),
          name: e.device === undefined ? e.phase : `${e.phase} ${e.device}`,
          args: { phase: e.phase, ...(e.device !== undefined ? { device: e.device } : {}) },
        });
    };
    const onGuestError = (e: { source: string; message: string }) => {
      if (admit()) entries.push({ kind: 'machine', ts: clock(), name: 'guest-error', args: { ...e } });
    };
    const onHostError = (e: { source: string; message: string; fatal: boolean }) => {
      if (admit()) entries.push({ kind: 'machine', ts: clock(), name: 'host-error', args: { ...e } });
    };
    events.on('lifecycle', onLifecycle);
    events.on('guest-error', onGuestError);
    events.on('host-error', onHostError);
    const detach = () => {
      events.off('lifecycle', onLifecycle);
      events.off('guest-error', onGuestError);
      events.off('host-error', onHostError);
      busDetach();
      detachers.delete(detach);
    };
    detachers.add(detach);
    return detach;
  };

  const recorder: TimelineRecorder = {
    attach(t) {
      if (stopped) throw new Error('the timeline recorder is stopped');
      return isMachine(t) ? attachMachine(t) : attachBus(t);
    },
    stage(name, args = {}) {
      if (stopped) return;
      endStage();
      stage = { name, ts: clock(), args };
    },
    stop() {
      if (stopped) return;
      endStage();
      stopped = true;
      for (const detach of [...detachers]) detach();
    },
    get recorded() {
      return dropped > 0 ? entries.length - 1 : entries.length;
    },
    get dropped() {
      return dropped;
    },
    maxEvents,
  };
  recordings.set(recorder, {
    entries,
    maxEvents,
    processName: options.processName ?? 'ddw',
    get dropped() {
      return dropped;
    },
  });
  if (target !== undefined) recorder.attach(target);
  return recorder;
}

function isMachine(target: TraceBus | TimelineMachine): target is TimelineMachine {
  return typeof (target as Partial<TimelineMachine>).get === 'function' && 'trace' in target;
}

/** Known argument and return names of hypercalls (PAPR's registers from r4 on). */
const HCALL_ARGS: Record<string, readonly string[]> = {
  H_GET_TCE: ['liobn', 'ioba'],
  H_PUT_TCE: ['liobn', 'ioba', 'tce'],
  H_PUT_TCE_INDIRECT: ['liobn', 'ioba', 'tce_list', 'npages'],
  H_STUFF_TCE: ['liobn', 'ioba', 'tce_value', 'npages'],
  H_RTAS: ['rtas_args'],
};
const HCALL_OUTPUTS: Record<string, readonly string[]> = { H_GET_TCE: ['tce'] };

/** Known cells of the DDW RTAS calls (QEMU's hw/ppc/spapr_rtas_ddw.c). */
const RTAS_ARGS: Record<string, readonly string[]> = {
  'ibm,query-pe-dma-window': ['config_addr', 'buid_hi', 'buid_lo'],
  'ibm,create-pe-dma-window': ['config_addr', 'buid_hi', 'buid_lo', 'page_shift', 'window_shift'],
  'ibm,remove-pe-dma-window': ['liobn'],
  'ibm,reset-pe-dma-window': ['config_addr', 'buid_hi', 'buid_lo'],
};
function rtasRetNames(name: string, nret: number): readonly string[] {
  switch (name) {
    case 'ibm,query-pe-dma-window':
      return nret === 5
        ? ['status', 'windows_available', 'largest_block', 'page_sizes', 'migration_capable']
        : [
            'status',
            'windows_available',
            'largest_block_hi',
            'largest_block_lo',
            'page_sizes',
            'migration_capable',
          ];
    case 'ibm,create-pe-dma-window':
      return ['status', 'liobn', 'start_hi', 'start_lo'];
    default:
      return ['status'];
  }
}
/** Counts and shifts read better in decimal; addresses, ids and masks stay hexadecimal. */
const DECIMAL = new Set(['npages', 'page_shift', 'window_shift', 'windows_available', 'migration_capable']);

function cell(name: string, value: number): string | number {
  if (name === 'status') return value | 0;
  return DECIMAL.has(name) ? value : formatHex(value >>> 0);
}

function register(name: string, value: bigint): string | number {
  return DECIMAL.has(name) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : formatHex(value);
}

type Args = Record<string, unknown>;

function named<T>(
  names: readonly string[] | undefined,
  values: readonly T[],
  format: (name: string, value: T) => unknown,
  rest: string,
): Args {
  const args: Args = {};
  const extra: unknown[] = [];
  values.forEach((v, i) => {
    const name = names?.[i];
    if (name !== undefined) args[name] = format(name, v);
    else extra.push(format(rest, v));
  });
  if (extra.length > 0) args[rest] = extra;
  return args;
}

/** A trace argument as JSON: numbers stay numbers, 64-bit values become strings (hex when unsigned). */
function traceValue(event: TraceEvent, index: number, value: TraceValue): unknown {
  if (typeof value !== 'bigint') return value;
  const param = event.params[index];
  if (param?.signed) return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  return formatHex(value);
}

function eventJson(entry: Entry): object {
  const ts = round(entry.ts);
  switch (entry.kind) {
    case 'trace': {
      const { event } = entry;
      const args: Args = {};
      let values: TraceValue[];
      try {
        values = event.toValues(entry.args);
      } catch {
        // An emit with arguments its declaration cannot take: shown as given.
        values = entry.args.map((a) => (typeof a === 'boolean' ? (a ? 1 : 0) : a));
      }
      values.forEach((v, i) => {
        args[event.params[i]?.name ?? `arg${i}`] = traceValue(event, i, v);
      });
      return {
        name: event.name,
        cat: event.group ?? 'trace',
        ph: 'i',
        s: 't',
        ts,
        pid: PID,
        tid: trackOf(event.name),
        args,
      };
    }
    case 'hcall': {
      const name = entry.name ?? `hcall ${formatHex(entry.opcode)}`;
      const ret = BigInt.asIntN(64, entry.result.ret);
      return {
        name,
        cat: 'hcall',
        ph: 'X',
        ts,
        dur: round(entry.dur),
        pid: PID,
        tid: TRACKS.hypercalls.tid,
        args: {
          opcode: formatHex(entry.opcode),
          ...named(HCALL_ARGS[name], entry.args, register, 'args'),
          ret: Number(ret),
          ret_name: hcallReturnName(ret),
          ...named(HCALL_OUTPUTS[name], entry.result.outputs ?? [], register, 'outputs'),
        },
      };
    }
    case 'rtas': {
      const name = entry.name === '' ? `rtas token ${formatHex(entry.token)}` : entry.name;
      return {
        name,
        cat: 'rtas',
        ph: 'X',
        ts,
        dur: round(entry.dur),
        pid: PID,
        tid: TRACKS.rtas.tid,
        args: {
          token: formatHex(entry.token),
          nargs: entry.nargs,
          nret: entry.nret,
          ...named(RTAS_ARGS[name], entry.args, cell, 'args'),
          ...named(rtasRetNames(name, entry.nret), entry.rets, cell, 'rets'),
        },
      };
    }
    case 'stage':
      return {
        name: entry.name,
        cat: 'stage',
        ph: 'X',
        ts,
        dur: round(entry.dur),
        pid: PID,
        tid: TRACKS.stages.tid,
        args: entry.args,
      };
    case 'machine':
      return {
        name: entry.name,
        cat: 'machine',
        ph: 'i',
        s: 't',
        ts,
        pid: PID,
        tid: TRACKS.machine.tid,
        args: entry.args,
      };
    case 'cap':
      return {
        name: 'timeline full: later events dropped',
        cat: 'ddw',
        ph: 'i',
        s: 'g',
        ts,
        pid: PID,
        tid: TRACKS.stages.tid,
      };
  }
}

/** Microseconds to the nanosecond. */
function round(us: number): number {
  return Math.round(us * 1000) / 1000;
}

function metadataEvents(processName: string): object[] {
  const out: object[] = [{ name: 'process_name', ph: 'M', pid: PID, tid: 0, args: { name: processName } }];
  for (const track of Object.values(TRACKS)) {
    out.push({ name: 'thread_name', ph: 'M', pid: PID, tid: track.tid, args: { name: track.name } });
    out.push({
      name: 'thread_sort_index',
      ph: 'M',
      pid: PID,
      tid: track.tid,
      args: { sort_index: track.tid },
    });
  }
  return out;
}

/**
 * Writes the recording as trace-event JSON through `write`, in chunks of about `chunkBytes`
 * characters (never the whole file as one string). Call it after stop(); events still being
 * recorded are not included.
 */
export function writeTimeline(
  recorder: TimelineRecorder,
  write: (chunk: string) => void,
  chunkBytes = 1 << 16,
): void {
  const recording = recordings.get(recorder);
  if (recording === undefined) throw new TypeError('not a recorder made by createTimelineRecorder');
  let buffer = '{"traceEvents":[\n';
  let first = true;
  const put = (event: object) => {
    buffer += `${first ? '' : ',\n'}${JSON.stringify(event)}`;
    first = false;
    if (buffer.length >= chunkBytes) {
      write(buffer);
      buffer = '';
    }
  };
  for (const event of metadataEvents(recording.processName)) put(event);
  const { entries } = recording;
  for (let i = 0; i < entries.length; i++) put(eventJson(entries[i]!));
  const kept = entries.length - (recording.dropped > 0 ? 1 : 0);
  const otherData = {
    producer: 'ddw',
    clock: 'performance.now(), microseconds from the start of the recording',
    events: kept,
    dropped: recording.dropped,
    maxEvents: recording.maxEvents,
    ...(recording.dropped > 0
      ? {
          note: `the timeline holds its first ${kept} events; ${recording.dropped} later hypercalls, RTAS calls and stages were dropped, and trace events were not recorded after that point (the model's fast paths resume)`,
        }
      : {}),
  };
  buffer += `\n],\n"displayTimeUnit":"ns",\n"otherData":${JSON.stringify(otherData)}}\n`;
  write(buffer);
}

/** The recording as one trace-event JSON string (for a page to offer as a download). */
export function timelineJson(recorder: TimelineRecorder): string {
  const chunks: string[] = [];
  writeTimeline(recorder, (chunk) => void chunks.push(chunk));
  return chunks.join('');
}
