import {
  answerRequests,
  buildConfigured,
  buildPseries,
  type CommandIO,
  checkReplayQemuArgs,
  configureMachine,
  createTimelineRecorder,
  DdwError,
  describeWindows,
  errorLine,
  formatHex,
  formatReport,
  GUEST_CHOICES,
  linesOf,
  loadSnapshot,
  type Machine,
  type MachineCommandLine,
  mtreeReport,
  negotiate,
  QEMU_VERSIONS,
  qemuOptionsOf,
  replaySource,
  runResolved,
  SnapshotError,
  SpaprPciTokens,
  saveSnapshot,
  snapshotInfo,
  TraceBus,
  TraceSelection,
  timelineJson,
  UsageError,
  versionOf,
} from '@ddw/cli/browser';
import type { MachineInput, PhbPicture, Reply, Request, RunResult, WindowPicture } from './protocol.js';

/** The worker's global scope, as far as this file uses it (the page's lib is DOM, not WebWorker). */
const scope = self as unknown as {
  postMessage(message: Reply, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<Request>) => void) | null;
};

/** Trace lines kept for the page; the rest are counted. */
const MAX_TRACE_LINES = 20000;
/**
 * Without -trace: what the page traces. Per-page events are left out (a translation, or a host
 * IOMMU notification, per DMA page: 262144 lines for a 1 GiB window); -trace selects them.
 */
const DEFAULT_TRACE = ['spapr_iommu_*', '-spapr_iommu_xlate', 'vfio_*', '-vfio_iommu_map_notify'];
const HEAT_BUCKETS = 256;
/** Trace lines sent with a run's result (the page shows them before any filter). */
const TRACE_SHOWN = 5000;
/** Timeline events kept (later ones are counted, as `--trace-json` does past its cap). */
const TIMELINE_MAX_EVENTS = 200_000;
const MAX_RAM_RANGES = 64;

function post(reply: Reply, transfer?: Transferable[]): void {
  scope.postMessage(reply, transfer);
}

/** The command line the CLI would get: QEMU options as --qemu-args, then --qemu, --host, --guest. */
function commandLine(m: MachineInput, guest: boolean): MachineCommandLine {
  return {
    words: [],
    qemuArgs: [m.qemu],
    ...(m.qemuVersion !== '' ? { qemu: m.qemuVersion } : {}),
    ...(m.host !== '' ? { host: m.host } : {}),
    ...(guest && m.guest !== '' ? { guest: m.guest } : {}),
  };
}

function capture(): CommandIO & { outText: () => string; errText: () => string } {
  let out = '';
  let err = '';
  return {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    outText: () => out,
    errText: () => err,
  };
}

/** The configuration `ddw run` (or snapshot) makes; undefined when a help request was answered. */
async function configure(id: number, m: MachineInput, guest: boolean, command: string) {
  const line = commandLine(m, guest);
  const qemu = qemuOptionsOf(line, command);
  const io = capture();
  if (await answerRequests(qemu, io, () => `usage: ${command} [QEMU options]\n`, versionOf(line))) {
    post({ id, kind: 'text', text: io.outText() + io.errText() });
    return undefined;
  }
  if (qemu.trace.eventFiles.length > 0) {
    throw new UsageError(
      '-trace events=FILE: the page reads no files; give the patterns with -trace PATTERN',
    );
  }
  return { qemu, config: configureMachine(line, qemu) };
}

function windowsOf(machine: Machine): PhbPicture[] {
  return machine.get(SpaprPciTokens.Phbs).list.map((phb) => ({
    index: phb.index,
    id: phb.id,
    buid: formatHex(phb.buid),
    dmaWinAddr: formatHex(phb.props.dma_win_addr),
    dmaWinSize: formatHex(phb.props.dma_win_size),
    dma64WinAddr: formatHex(phb.props.dma64_win_addr),
    ddw: phb.props.ddw,
    windows: phb.windows
      .filter((t) => t.enabled)
      .map((t): WindowPicture => {
        const n = t.nbTable;
        const bucketSize = Math.max(1, Math.ceil(n / HEAT_BUCKETS));
        const buckets: number[] = [];
        const storage = t.storage;
        for (let from = 0; from < n; from += bucketSize) {
          buckets.push(storage ? storage.countNonZero(from, Math.min(n, from + bucketSize)) : 0);
        }
        const page = 1n << BigInt(t.pageShift);
        const ranges: { ram: bigint; bus: bigint; size: bigint }[] = [];
        let truncated = false;
        storage?.forEachRun((first, count, high, low, stride) => {
          if ((low & 3) === 0 && stride % 4 === 0) return; // no permission: maps nothing
          const ram = ((BigInt(high >>> 0) << 32n) | BigInt(low >>> 0)) & ~(page - 1n);
          const bus = t.busOffset + BigInt(first) * page;
          const size = stride === 0 ? page : BigInt(count) * page;
          const last = ranges[ranges.length - 1];
          if (last && last.ram + last.size === ram && last.bus + last.size === bus) {
            last.size += size;
          } else if (ranges.length < MAX_RAM_RANGES) {
            ranges.push({ ram, bus, size });
          } else truncated = true;
        });
        return {
          liobn: formatHex(BigInt(t.liobn)),
          busOffset: formatHex(t.busOffset),
          pageShift: t.pageShift,
          entries: n,
          bucketSize,
          buckets,
          ram: ranges.map((r) => ({ ram: formatHex(r.ram), bus: formatHex(r.bus), size: formatHex(r.size) })),
          ramTruncated: truncated,
        };
      }),
  }));
}

/** The last run's trace lines, for the page's filter. */
let lastTrace: string[] = [];

function filterTrace(id: number, patterns: string[], max: number): void {
  const selection = patterns.length > 0 ? new TraceSelection(patterns) : undefined;
  const lines: string[] = [];
  let matched = 0;
  for (const line of lastTrace) {
    // The event name, after QEMU's optional pid@seconds: prefix.
    const name = line.replace(/^\d+@\d+\.\d+:/, '').split(' ', 1)[0]!;
    if (selection && !selection.selects(name)) continue;
    matched++;
    if (lines.length < max) lines.push(line);
  }
  post({ id, kind: 'trace', lines, matched });
}

async function run(id: number, m: MachineInput): Promise<void> {
  const configured = await configure(id, m, true, "'ddw run'");
  if (!configured) return;
  const { qemu, config } = configured;
  const bus = new TraceBus({ timestamps: qemu.trace.timestamps });
  bus.setPatterns(qemu.trace.patterns.length > 0 ? qemu.trace.patterns : DEFAULT_TRACE);
  const trace: string[] = [];
  let traceTotal = 0;
  bus.addSink({
    write: (line) => {
      traceTotal++;
      if (trace.length < MAX_TRACE_LINES) trace.push(line);
    },
  });
  let phbs: PhbPicture[] = [];
  let mtree: RunResult['mtree'] | undefined;
  const report = await runResolved(config.resolved, {
    trace: bus,
    onProgress: (step, done, total) => post({ id, kind: 'progress', step, done, total }),
    inspect: (machine) => {
      phbs = windowsOf(machine);
      mtree = mtreeReport(machine, { flat: false, disabled: false });
    },
  });
  lastTrace = trace;
  post({
    id,
    kind: 'run',
    result: {
      report,
      text: formatReport(report),
      phbs,
      mtree: mtree!,
      traceTotal,
      traceKept: trace.length,
      traceShown: trace.slice(0, TRACE_SHOWN),
      stderr: '',
    },
  });
}

/** The machine run again, recorded as `ddw run --trace-json` records it: the timeline's JSON. */
async function timeline(id: number, m: MachineInput): Promise<void> {
  const configured = await configure(id, m, true, "'ddw run'");
  if (!configured) return;
  const { qemu, config } = configured;
  const bus = new TraceBus({ timestamps: qemu.trace.timestamps });
  bus.setPatterns(qemu.trace.patterns);
  const recorder = createTimelineRecorder(bus, { processName: 'ddw run', maxEvents: TIMELINE_MAX_EVENTS });
  // The stages `ddw run` marks.
  recorder.stage('build');
  let last = '';
  try {
    await runResolved(config.resolved, {
      trace: bus,
      onProgress: (step, done, total) => {
        post({ id, kind: 'progress', step, done, total });
        if (step === last) return;
        last = step;
        recorder.stage(step === 'negotiate' ? 'probe' : step);
      },
    });
  } finally {
    recorder.stop();
  }
  post({
    id,
    kind: 'timeline',
    json: timelineJson(recorder),
    events: recorder.recorded,
    dropped: recorder.dropped,
  });
}

/** A File's text in chunks, as the replay reads it (never whole). */
async function* chunksOf(file: Blob): AsyncGenerator<string> {
  const reader = file.stream().pipeThrough(new TextDecoderStream()).getReader();
  let done = false;
  try {
    for (;;) {
      const next = await reader.read();
      if (next.done) {
        done = true;
        return;
      }
      yield next.value;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => undefined);
  }
}

async function replay(request: Extract<Request, { kind: 'replay' }>): Promise<void> {
  const { id } = request;
  const line: MachineCommandLine = {
    words: [],
    qemuArgs: [request.qemu.trim() === '' ? '-M pseries' : request.qemu],
    ...(request.qemuVersion !== '' ? { qemu: request.qemuVersion } : {}),
  };
  const version = versionOf(line);
  const qemu = qemuOptionsOf(line);
  const io = capture();
  if (await answerRequests(qemu, io, () => 'usage: ddw replay TRACE --qemu-args "..."\n', version)) {
    post({ id, kind: 'text', text: io.outText() });
    return;
  }
  checkReplayQemuArgs(qemu);
  post({ id, kind: 'progress', step: 'replay', done: 0, total: 1 });
  const code = await replaySource(
    { name: request.name, lines: () => linesOf(chunksOf(request.file)) },
    {
      patterns: [],
      check: true,
      json: false,
      build: (trace) =>
        buildPseries(qemu, {
          trace,
          ...(request.host !== '' ? { host: request.host } : {}),
          ...(version !== undefined ? { qemu: version } : {}),
        }),
    },
    io,
  );
  const out = io.outText().replace(/\n$/, '').split('\n');
  const summary = out.pop() ?? '';
  post({ id, kind: 'replay', summary, diff: out.join('\n'), stderr: io.errText(), code });
}

async function snapshotSave(id: number, m: MachineInput): Promise<void> {
  const configured = await configure(id, m, true, "'ddw snapshot save'");
  if (!configured) return;
  const machine = await buildConfigured(configured.config.resolved);
  try {
    negotiate(machine);
    const bytes = saveSnapshot(machine);
    const text = `saved ${bytes.length} bytes\n${describeWindows(machine)
      .map((w) => `  ${w}\n`)
      .join('')}`;
    post({ id, kind: 'snapshot-save', bytes, text }, [bytes.buffer as ArrayBuffer]);
  } finally {
    machine.dispose();
  }
}

async function snapshotLoad(request: Extract<Request, { kind: 'snapshot-load' }>): Promise<void> {
  const { id, name } = request;
  const configured = await configure(id, request.machine, false, "'ddw snapshot load'");
  if (!configured) return;
  const bytes = new Uint8Array(request.bytes);
  const inFile = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof SnapshotError) error.message = `${name}: ${error.message}`;
      throw error;
    }
  };
  // Verified whole before anything is built, as `ddw snapshot load` does.
  inFile(() => snapshotInfo(bytes));
  const machine = await buildConfigured(configured.config.resolved);
  try {
    inFile(() => loadSnapshot(machine, bytes));
    const text = `loaded ${name}\n${describeWindows(machine)
      .map((w) => `  ${w}\n`)
      .join('')}`;
    post({ id, kind: 'snapshot-load', text });
  } finally {
    machine.dispose();
  }
}

scope.onmessage = (event) => {
  const request = event.data;
  if (request.kind === 'trace-filter') {
    try {
      filterTrace(request.id, request.patterns, request.max);
    } catch (error) {
      post({ id: request.id, kind: 'error', message: `ddw: ${errorLine(error)}` });
    }
    return;
  }
  const work =
    request.kind === 'run'
      ? run(request.id, request.machine)
      : request.kind === 'replay'
        ? replay(request)
        : request.kind === 'snapshot-save'
          ? snapshotSave(request.id, request.machine)
          : request.kind === 'timeline'
            ? timeline(request.id, request.machine)
            : snapshotLoad(request);
  work.catch((error: unknown) =>
    post({
      id: request.id,
      kind: 'error',
      // As the CLI prints it on stderr.
      message:
        error instanceof DdwError ? `ddw: ${errorLine(error)}` : `ddw: internal error: ${errorLine(error)}`,
    }),
  );
};

post({ id: 0, kind: 'ready', qemuVersions: [...QEMU_VERSIONS], guests: [...GUEST_CHOICES] });
