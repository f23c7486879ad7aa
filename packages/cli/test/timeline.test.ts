import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createMachine, TraceBus } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import { runMachine } from '../src/run.js';
import { createTimelineRecorder, timelineJson, writeTimeline } from '../src/timeline.js';

/** A small machine with a DDW and a passthrough device: hypercalls, RTAS calls, vfio traces. */
const QEMU_ARGS =
  '-M pseries -m 2G,maxmem=4G,slots=2 -global spapr-pci-host-bridge.dma_win_size=0x1000000 -device vfio-pci,host=0000:01:00.0';

const traceEvent = z.discriminatedUnion('ph', [
  z.strictObject({
    name: z.string(),
    ph: z.literal('M'),
    pid: z.number().int(),
    tid: z.number().int(),
    args: z.record(z.string(), z.unknown()),
  }),
  z.strictObject({
    name: z.string(),
    cat: z.string(),
    ph: z.literal('X'),
    ts: z.number().min(0),
    dur: z.number().min(0),
    pid: z.number().int(),
    tid: z.number().int(),
    args: z.record(z.string(), z.unknown()),
  }),
  z.strictObject({
    name: z.string(),
    cat: z.string(),
    ph: z.literal('i'),
    s: z.enum(['t', 'p', 'g']),
    ts: z.number().min(0),
    pid: z.number().int(),
    tid: z.number().int(),
    args: z.record(z.string(), z.unknown()).optional(),
  }),
]);
const traceFile = z.strictObject({
  traceEvents: z.array(traceEvent),
  displayTimeUnit: z.literal('ns'),
  otherData: z.record(z.string(), z.unknown()),
});
type Event = z.infer<typeof traceEvent>;
type Span = Extract<Event, { ph: 'X' }>;

async function recordRun(options: { maxEvents?: number; patterns?: string[] } = {}) {
  const bus = new TraceBus();
  bus.setPatterns(options.patterns ?? []);
  const lines = bus.collect();
  const recorder = createTimelineRecorder(bus, {
    ...(options.maxEvents !== undefined ? { maxEvents: options.maxEvents } : {}),
  });
  recorder.stage('run');
  const report = await runMachine({ qemuArgs: QEMU_ARGS, trace: bus });
  recorder.stop();
  return { bus, recorder, report, lines: lines.lines, json: timelineJson(recorder) };
}

const spans = (events: Event[], name: string) =>
  events.filter((e): e is Span => e.ph === 'X' && e.name === name);

describe('timeline', { timeout: 60_000 }, () => {
  it('is trace-event JSON: spans for hypercalls and RTAS calls, instants for every trace event', async () => {
    const { json, recorder, report } = await recordRun();
    expect(report.ok).toBe(true);
    const file = traceFile.parse(JSON.parse(json));
    const events = file.traceEvents;
    expect(recorder.dropped).toBe(0);
    expect(file.otherData).toMatchObject({ events: recorder.recorded, dropped: 0 });

    const indirect = spans(events, 'H_PUT_TCE_INDIRECT');
    expect(indirect.length).toBeGreaterThan(0);
    expect(indirect[0]!.args).toMatchObject({
      opcode: '0x13c',
      liobn: '0x80000001',
      npages: expect.any(Number),
      tce_list: expect.stringMatching(/^0x/),
      ret: 0,
      ret_name: 'H_SUCCESS',
    });
    const create = spans(events, 'ibm,create-pe-dma-window');
    expect(create).toHaveLength(1);
    expect(create[0]!.args).toMatchObject({
      token: '0x2027',
      config_addr: expect.stringMatching(/^0x/),
      page_shift: expect.any(Number),
      window_shift: expect.any(Number),
      status: 0,
      liobn: '0x80000001',
    });
    expect(spans(events, 'ibm,query-pe-dma-window').length).toBeGreaterThan(0);
    // Every RTAS call happens inside an H_RTAS hypercall.
    const hrtas = spans(events, 'H_RTAS');
    for (const call of events.filter((e): e is Span => e.ph === 'X' && e.cat === 'rtas')) {
      expect(hrtas.some((h) => h.ts <= call.ts && call.ts + call.dur <= h.ts + h.dur)).toBe(true);
    }

    // Trace events as instants, arguments by their declared names, on their subsystem's track.
    const notify = events.find((e) => e.ph === 'i' && e.name === 'vfio_iommu_map_notify');
    expect(notify?.args).toMatchObject({ iova_start: expect.stringMatching(/^0x/) });
    const ddwCreate = events.find((e) => e.ph === 'i' && e.name === 'spapr_iommu_ddw_create');
    expect(Object.keys(ddwCreate?.args ?? {}).length).toBeGreaterThan(0);
    const tracks = new Map(
      events
        .filter((e) => e.ph === 'M' && e.name === 'thread_name')
        .map((e) => [e.tid, (e.args as { name: string }).name]),
    );
    expect(tracks.get(notify!.tid)).toBe('trace: vfio');
    expect(tracks.get(indirect[0]!.tid)).toBe('hypercalls');
    expect(tracks.get(create[0]!.tid)).toBe('RTAS calls');
    for (const e of events) if (e.ph !== 'M') expect(tracks.has(e.tid)).toBe(true);

    // The stage span holds everything else.
    const [stage] = spans(events, 'run');
    for (const e of events) {
      if (e.ph === 'M' || e === stage) continue;
      expect(e.ts).toBeGreaterThanOrEqual(stage!.ts);
      expect(e.ts + (e.ph === 'X' ? e.dur : 0)).toBeLessThanOrEqual(stage!.ts + stage!.dur);
    }
  });

  it('spans on one track nest properly', async () => {
    const { json } = await recordRun();
    const events = traceFile.parse(JSON.parse(json)).traceEvents;
    const byTrack = new Map<number, Span[]>();
    for (const e of events) if (e.ph === 'X') byTrack.set(e.tid, [...(byTrack.get(e.tid) ?? []), e]);
    expect(byTrack.size).toBeGreaterThanOrEqual(3);
    for (const list of byTrack.values()) {
      list.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
      const open: Span[] = [];
      for (const span of list) {
        while (open.length > 0 && open.at(-1)!.ts + open.at(-1)!.dur <= span.ts) open.pop();
        const parent = open.at(-1);
        if (parent) expect(span.ts + span.dur).toBeLessThanOrEqual(parent.ts + parent.dur);
        open.push(span);
      }
    }
  });

  it('records every event whatever the selection, and prints only the selection', async () => {
    const bus = new TraceBus();
    bus.setPatterns(['spapr_iommu_pci_*']);
    const plain = bus.collect();
    const plainReport = await runMachine({ qemuArgs: QEMU_ARGS, trace: bus });
    plain.stop();

    const recorded = await recordRun({ patterns: ['spapr_iommu_pci_*'] });
    expect(recorded.lines).toEqual(plain.lines);
    expect(recorded.lines.length).toBeGreaterThan(0);
    const strip = (r: typeof plainReport) => ({ ...r, timeMs: 0 });
    expect(strip(recorded.report)).toEqual(strip(plainReport));
    const names = new Set(JSON.parse(recorded.json).traceEvents.map((e: Event) => e.name));
    expect(names.has('vfio_iommu_map_notify')).toBe(true);
    expect(names.has('spapr_iommu_xlate')).toBe(true);
    // Detached: the events follow the selection again.
    expect(recorded.bus.event('vfio_iommu_map_notify')?.enabled).toBe(false);
    expect(recorded.bus.event('spapr_iommu_pci_indirect')?.enabled).toBe(true);
  });

  it('keeps at most maxEvents, counts what it drops, and notes it', async () => {
    const { json, recorder, bus, report } = await recordRun({ maxEvents: 100 });
    expect(report.ok).toBe(true);
    expect(recorder.recorded).toBe(100);
    expect(recorder.dropped).toBeGreaterThan(0);
    const file = traceFile.parse(JSON.parse(json));
    const kept = file.traceEvents.filter((e) => e.ph !== 'M' && e.cat !== 'ddw');
    expect(kept).toHaveLength(100);
    expect(file.traceEvents.some((e) => e.ph === 'i' && e.s === 'g' && /dropped/.test(e.name))).toBe(true);
    expect(file.otherData).toMatchObject({ events: 100, dropped: recorder.dropped, maxEvents: 100 });
    expect(String(file.otherData.note)).toMatch(/first 100 events/);
    // Past the cap the events went back to the selection (none): the model's fast paths.
    expect(bus.events().some((e) => e.enabled)).toBe(false);
  });

  it('streams in chunks, and a machine target records its events too', async () => {
    const machine = await createMachine([], { ram: '1G' });
    const recorder = createTimelineRecorder(machine);
    const ev = machine.trace.define('test_event(uint64_t addr, int ret, const char *what) "x"');
    expect(ev.enabled).toBe(true);
    for (let i = 0; i < 500; i++) ev.emit(BigInt(i) << 40n, -i, 'w');
    const unknown = machine.guest.hcall(0x9990);
    expect(unknown.ret).toBe(-2n);
    machine.dispose();
    recorder.stop();
    expect(ev.enabled).toBe(false);
    const chunks: string[] = [];
    writeTimeline(recorder, (c) => void chunks.push(c), 4096);
    expect(chunks.length).toBeGreaterThan(5);
    for (const c of chunks.slice(0, -1)) expect(c.length).toBeLessThan(4096 + 1024);
    expect(chunks.join('')).toBe(timelineJson(recorder));
    const events = traceFile.parse(JSON.parse(chunks.join(''))).traceEvents;
    const last = events.filter((e) => e.name === 'test_event').at(-1);
    expect(last?.args).toEqual({ addr: `0x${(499n << 40n).toString(16)}`, ret: -499, what: 'w' });
    expect(spans(events, 'hcall 0x9990')[0]?.args).toMatchObject({ ret: -2, ret_name: 'H_FUNCTION' });
    expect(events.some((e) => e.ph === 'i' && e.name === 'dispose' && e.cat === 'machine')).toBe(true);
  });

  it('leaves printing alone: sinks get the selected events, a directly enabled one keeps printing', () => {
    const bus = new TraceBus();
    const a = bus.define('ev_a(int x) "x=%d"');
    const b = bus.define('ev_b(int x) "x=%d"');
    const c = bus.define('ev_c(int x) "x=%d"');
    bus.enable('ev_a');
    c.enabled = true;
    const lines = bus.collect();
    const seen: string[] = [];
    const detach = bus.record({ event: (e) => void seen.push(e.name) });
    expect([a.enabled, b.enabled, c.enabled]).toEqual([true, true, true]);
    for (const e of [a, b, c]) e.emit(1);
    bus.disable('ev_a');
    a.emit(2);
    expect(seen).toEqual(['ev_a', 'ev_b', 'ev_c', 'ev_a']);
    expect(lines.lines).toEqual(['ev_a x=1', 'ev_c x=1']);
    detach();
    expect([a.enabled, b.enabled, c.enabled]).toEqual([false, false, true]);
  });

  it('imports no Node module (the web page uses it)', () => {
    const source = readFileSync(fileURLToPath(new URL('../src/timeline.ts', import.meta.url)), 'utf8');
    expect(source).not.toMatch(/from ['"](node:|fs|path|os|child_process)/);
    expect(source).not.toMatch(/\bprocess\./);
  });
});
