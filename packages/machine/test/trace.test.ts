import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DdwError } from '../src/errors.js';
import {
  callbackSink,
  globToRegExp,
  parseTraceLine,
  streamSink,
  TRACE_MAX_ARGS,
  type TraceArg,
  TraceBus,
  type TraceRecord,
} from '../src/trace/index.js';

const PUT =
  'spapr_iommu_put(uint64_t liobn, uint64_t ioba, uint64_t tce, uint64_t ret) "liobn=0x%"PRIx64" ioba=0x%"PRIx64" tce=0x%"PRIx64" ret=%"PRId64';
const XLATE =
  'spapr_iommu_xlate(uint64_t liobn, uint64_t ioba, uint64_t tce, unsigned perm, unsigned pgsize) "liobn=0x%"PRIx64" 0x%"PRIx64" -> 0x%"PRIx64" perm=%u mask=0x%x"';
const NEW_TABLE =
  'spapr_iommu_new_table(uint64_t liobn, void *table, int fd) "liobn=0x%"PRIx64" table=%p fd=%d"';
const MAP_NOTIFY =
  'vfio_iommu_map_notify(const char *op, uint64_t iova_start, uint64_t iova_end) "iommu %s @ 0x%"PRIx64" - 0x%"PRIx64';

/** A bus with one event of the given printf format over the given C parameter list, enabled. */
function single(params: string, format: string) {
  const bus = new TraceBus();
  const event = bus.define(`t(${params}) ${format}`);
  bus.enable('t');
  const out = bus.collect();
  return (...args: TraceArg[]) => {
    event.emit(...args);
    return out.lines.pop()!.slice('t '.length);
  };
}

describe('TraceBus.define', () => {
  it('parses parameters, expands PRI macros and keeps the declaration', () => {
    const bus = new TraceBus();
    const event = bus.define(PUT, 'hw/ppc');
    expect(event.name).toBe('spapr_iommu_put');
    expect(event.group).toBe('hw/ppc');
    expect(event.params.map((p) => `${p.type} ${p.name}`)).toEqual([
      'uint64_t liobn',
      'uint64_t ioba',
      'uint64_t tce',
      'uint64_t ret',
    ]);
    expect(event.format).toBe('liobn=0x%lx ioba=0x%lx tce=0x%lx ret=%ld');
    expect(event.enabled).toBe(false);
  });

  it('understands pointers, strings, void and properties', () => {
    const bus = new TraceBus();
    const table = bus.define(NEW_TABLE);
    expect(table.params.map((p) => p.kind)).toEqual(['int', 'pointer', 'int']);
    const notify = bus.define(MAP_NOTIFY);
    expect(notify.params[0]).toMatchObject({ type: 'const char *', name: 'op', kind: 'string' });
    const none = bus.define('disable vcpu tick(void) "tick"');
    expect(none.params).toEqual([]);
    expect(none.properties).toEqual(['disable', 'vcpu']);
  });

  it('returns the existing event for an identical declaration and refuses a different one', () => {
    const bus = new TraceBus();
    const first = bus.define(PUT);
    expect(bus.define(`  ${PUT}  `)).toBe(first);
    expect(() => bus.define(PUT.replace('ret=%"PRId64', 'ret=%"PRIu64'))).toThrow(
      /already declared differently/,
    );
    expect(bus.events()).toEqual([first]);
  });

  it.each([
    ['t(uint64_t a) "%d"', /64-bit after promotion/],
    ['t(unsigned a) "%"PRIx64', /reads a 64-bit value/],
    ['t(uint32_t a) "%s"', /%s prints a string/],
    ['t(const char *s) "%d"', /prints an integer/],
    ['t(int a) "%p"', /%p prints a pointer/],
    ['t(int a) "%d %d"', /more conversions than the 1 parameter/],
    ['t(int a) "%f"', /unsupported conversion/],
    ['t(int a) "%*d"', /unsupported conversion/],
    ['t(struct foo *f) "%p"', /declare struct and other pointers as void \*/],
    ['t(hwaddr a) "%"PRIx64', /standard C or fixed-size integer/],
    ['t(int a, int a) "%d"', /used twice/],
    ['t(int a,) "%d"', /empty parameter/],
    ['t(int a) "%d\\n"', /must not end with a newline/],
    ['t(int a) "%"PRIq64', /unknown format macro/],
    ['t(int a) "%d', /not closed/],
    ['bogus t(int a) "%d"', /unknown property/],
    ['no parentheses', /expected name\(type arg/],
  ])('refuses %s', (line, message) => {
    expect(() => new TraceBus().define(line)).toThrow(message);
  });

  it(`allows at most ${TRACE_MAX_ARGS} parameters, as tracetool`, () => {
    const params = (n: number) => Array.from({ length: n }, (_, i) => `int a${i}`).join(', ');
    expect(() => new TraceBus().define(`t(${params(TRACE_MAX_ARGS)}) ""`)).not.toThrow();
    expect(() => new TraceBus().define(`t(${params(TRACE_MAX_ARGS + 1)}) ""`)).toThrow(DdwError);
  });

  it('declares a whole trace-events text, skipping comments and blank lines', () => {
    const bus = new TraceBus();
    const events = bus.defineAll(`# spapr_iommu.c\n${PUT}\n\n  # more\n${XLATE}\n`, 'hw/ppc');
    expect(events.map((e) => e.name)).toEqual(['spapr_iommu_put', 'spapr_iommu_xlate']);
  });
});

describe('formatting as C would', () => {
  it('prints the spapr_iommu_put line with a signed return code from a uint64_t', () => {
    const bus = new TraceBus();
    const put = bus.define(PUT);
    bus.enable('spapr_iommu_*');
    const out = bus.collect();
    put.emit(0x80000001n, 0x800000000001000n, 0x7f000003n, BigInt.asUintN(64, -4n));
    put.emit(0x80000000n, 0x1000n, 0n, 0n);
    expect(out.lines).toEqual([
      'spapr_iommu_put liobn=0x80000001 ioba=0x800000000001000 tce=0x7f000003 ret=-4',
      'spapr_iommu_put liobn=0x80000000 ioba=0x1000 tce=0x0 ret=0',
    ]);
  });

  it('truncates a 64-bit mask passed to an unsigned parameter (spapr_iommu_xlate on a miss)', () => {
    const bus = new TraceBus();
    const xlate = bus.define(XLATE);
    bus.enable('spapr_iommu_xlate');
    const out = bus.collect();
    xlate.emit(0x80000000n, 0x40000000n, 0n, 0, 0xffffffffffffffffn);
    xlate.emit(0x80000000n, 0x1234n, 0x5000000n, 1, 0xfffn);
    expect(out.lines).toEqual([
      'spapr_iommu_xlate liobn=0x80000000 0x40000000 -> 0x0 perm=0 mask=0xffffffff',
      'spapr_iommu_xlate liobn=0x80000000 0x1234 -> 0x5000000 perm=1 mask=0xfff',
    ]);
  });

  it('wraps arguments like a C cast to the parameter type', () => {
    expect(single('uint64_t v', '"%"PRIu64')(-1n)).toBe('18446744073709551615');
    expect(single('uint64_t v', '"%"PRIu64')(1n << 64n)).toBe('0');
    expect(single('int64_t v', '"%"PRId64')(0x8000000000000000n)).toBe('-9223372036854775808');
    expect(single('uint32_t v', '"%"PRIx32')(0x1_2345_6789n)).toBe('23456789');
    expect(single('int v', '"%d"')(0xffffffff)).toBe('-1');
    expect(single('unsigned v', '"%u"')(-1)).toBe('4294967295');
    expect(single('uint16_t v', '"%u"')(0x12345)).toBe('9029');
    expect(single('int8_t v', '"%d"')(200)).toBe('-56');
    expect(single('uint8_t v', '"%d"')(-1n)).toBe('255');
    expect(single('int v', '"%d"')(-7.9)).toBe('-7');
    expect(single('bool b', '"%d"')(true)).toBe('1');
    expect(single('bool b', '"%d"')(5n)).toBe('1');
    expect(single('uint64_t v', '"%"PRIx64')(true)).toBe('1');
  });

  it('applies flags, width, precision and length modifiers (outputs checked against glibc printf)', () => {
    expect(single('int v', '"[%5d]"')(42)).toBe('[   42]');
    expect(single('int v', '"[%-5d]"')(42)).toBe('[42   ]');
    expect(single('int v', '"[%05d]"')(-42)).toBe('[-0042]');
    expect(single('int v', '"[%+d]"')(5)).toBe('[+5]');
    expect(single('int v', '"[% d]"')(5)).toBe('[ 5]');
    expect(single('int v', '"[%+ d]"')(5)).toBe('[+5]');
    expect(single('int v', '"[%.3d]"')(7)).toBe('[007]');
    expect(single('int v', '"[%08.3d]"')(7)).toBe('[     007]');
    expect(single('int v', '"[%.0d]"')(0)).toBe('[]');
    expect(single('int v', '"[%#x]"')(0)).toBe('[0]');
    expect(single('int v', '"[%#x]"')(255)).toBe('[0xff]');
    expect(single('int v', '"[%#010x]"')(255)).toBe('[0x000000ff]');
    expect(single('int v', '"[%#X]"')(2748)).toBe('[0XABC]');
    expect(single('int v', '"[%#o]"')(8)).toBe('[010]');
    expect(single('int v', '"[%#o]"')(0)).toBe('[0]');
    expect(single('int v', '"[%o]"')(-1)).toBe('[37777777777]');
    expect(single('int v', '"[%hhx]"')(-1)).toBe('[ff]');
    expect(single('int v', '"[%hhd]"')(200)).toBe('[-56]');
    expect(single('int v', '"[%hd]"')(70000)).toBe('[4464]');
    expect(single('int v', '"[%hu]"')(-1)).toBe('[65535]');
    expect(single('int8_t v', '"[%x]"')(-1)).toBe('[ffffffff]');
    expect(single('size_t v', '"[%zu]"')(-1n)).toBe('[18446744073709551615]');
    expect(single('int64_t v', '"[%lli]"')(-3n)).toBe('[-3]');
    expect(single('uint64_t v', '"[%-#20llX]"')(0xdeadbeefn)).toBe('[0XDEADBEEF          ]');
    expect(single('int v', '"[%c]"')(65)).toBe('[A]');
    expect(single('const char *s', '"[%.2s]"')('abc')).toBe('[ab]');
    expect(single('const char *s', '"[%-4s]"')('ab')).toBe('[ab  ]');
    expect(single('const char *s', '"[%5s]"')('ab')).toBe('[   ab]');
    expect(single('void *p', '"[%p]"')(0n)).toBe('[(nil)]');
    expect(single('void *p', '"[%p]"')(0x558207d28a80n)).toBe('[0x558207d28a80]');
    expect(single('void *p', '"[%10p]"')(0n)).toBe('[     (nil)]');
    expect(single('void *p', '"[%-10p]"')(0x1000n)).toBe('[0x1000    ]');
    expect(single('int v', '"[100%%] %d"')(3)).toBe('[100%] 3');
  });

  it('decodes C string escapes and concatenates literals', () => {
    const render = single('const char *d', '"dev\\"%s\\"" " tab\\t" "end"');
    expect(render('e1000e')).toBe('dev"e1000e" tab\tend');
  });

  it('refuses an argument that cannot convert to its parameter type', () => {
    expect(() => single('int v', '"%d"')('12')).toThrow(/argument v \(int\) cannot take "12"/);
    expect(() => single('const char *s', '"%s"')(1)).toThrow(/argument s \(const char \*\) cannot take 1/);
    expect(() => single('uint64_t v', '"%"PRIx64')(Number.NaN)).toThrow(DdwError);
    expect(() => single('int a, int b', '"%d %d"')(1)).toThrow(/takes 2 arguments, got 1/);
  });

  it('formats a line for inspection without emitting, and the arguments alone', () => {
    const bus = new TraceBus();
    const put = bus.define(PUT);
    expect(put.formatArgs(1n, 2n, 3n, 4n)).toBe('liobn=0x1 ioba=0x2 tce=0x3 ret=4');
    expect(bus.formatLine(put, 1n, 2n, 3n, 4n)).toBe('spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=4');
  });

  it('keeps the space after the name when the format is empty, as the log backend does', () => {
    const bus = new TraceBus();
    const event = bus.define('bare(void) ""');
    expect(bus.formatLine(event)).toBe('bare ');
  });
});

describe('selection', () => {
  function busWithEvents() {
    const bus = new TraceBus();
    const put = bus.define(PUT);
    const xlate = bus.define(XLATE);
    const table = bus.define(NEW_TABLE);
    const notify = bus.define(MAP_NOTIFY);
    return { bus, put, xlate, table, notify };
  }

  it('enables and disables by glob, in order', () => {
    const { bus, put, xlate, table, notify } = busWithEvents();
    bus.enable('spapr_iommu_*');
    expect([put.enabled, xlate.enabled, table.enabled, notify.enabled]).toEqual([true, true, true, false]);
    bus.disable('spapr_iommu_?late');
    expect(xlate.enabled).toBe(false);
    bus.enable('vfio_iommu_map_notify');
    expect(notify.enabled).toBe(true);
    expect(bus.patterns()).toEqual(['spapr_iommu_*', '-spapr_iommu_?late', 'vfio_iommu_map_notify']);
  });

  it('setPatterns replaces the selection; a leading - disables', () => {
    const { bus, put, xlate, notify } = busWithEvents();
    bus.enable('*');
    bus.setPatterns(['spapr_iommu_*', '-spapr_iommu_xlate']);
    expect([put.enabled, xlate.enabled, notify.enabled]).toEqual([true, false, false]);
    bus.setPatterns([]);
    expect(put.enabled).toBe(false);
  });

  it('applies the selection to events declared later', () => {
    const bus = new TraceBus();
    bus.setPatterns(['spapr_iommu_*', '-spapr_iommu_xlate']);
    expect(bus.define(PUT).enabled).toBe(true);
    expect(bus.define(XLATE).enabled).toBe(false);
    expect(bus.define(MAP_NOTIFY).enabled).toBe(false);
  });

  it('matches globs literally apart from * and ?', () => {
    expect(globToRegExp('spapr_iommu_*').test('spapr_iommu_pci_put')).toBe(true);
    expect(globToRegExp('spapr_iommu_*').test('xspapr_iommu_put')).toBe(false);
    expect(globToRegExp('a.b').test('axb')).toBe(false);
    expect(globToRegExp('a?c').test('abc')).toBe(true);
    expect(globToRegExp('a?c').test('ac')).toBe(false);
    expect(() => new TraceBus().enable('')).toThrow(DdwError);
  });

  it('a disabled event formats nothing and reaches no sink or listener', () => {
    const bus = new TraceBus();
    const put = bus.define(PUT);
    const out = bus.collect();
    const records: TraceRecord[] = [];
    bus.onRecord((r) => records.push(r));
    // Arguments that could not be converted prove no conversion ran.
    put.emit('not a number', 0n, 0n, 0n);
    expect(out.lines).toEqual([]);
    expect(records).toEqual([]);
  });
});

describe('output', () => {
  it('prefixes pid@seconds.micros: when timestamps are on', () => {
    let now = 1_690_000_000_000_042;
    const bus = new TraceBus({ timestamps: true, clock: () => now, pid: 4242 });
    const put = bus.define(PUT);
    bus.enable('*');
    const out = bus.collect();
    put.emit(1n, 2n, 3n, 0n);
    now += 1_999_958;
    put.emit(1n, 2n, 3n, 0n);
    expect(out.lines).toEqual([
      '4242@1690000000.000042:spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=0',
      '4242@1690000002.000000:spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=0',
    ]);
    bus.timestamps = false;
    expect(bus.formatLine(put, 1n, 2n, 3n, 0n)).toBe('spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=0');
  });

  it('writes to callback and stream sinks, which can be removed', async () => {
    const bus = new TraceBus();
    const put = bus.define(PUT);
    bus.enable('*');
    const seen: string[] = [];
    const removeCallback = bus.addSink(callbackSink((line) => seen.push(line)));
    let written = '';
    const stream = new Writable({
      write(chunk, _encoding, done) {
        written += String(chunk);
        done();
      },
    });
    const sink = streamSink(stream);
    bus.addSink(sink);
    put.emit(1n, 2n, 3n, 0n);
    removeCallback();
    expect(bus.removeSink(sink)).toBe(true);
    expect(bus.removeSink(sink)).toBe(false);
    put.emit(9n, 9n, 9n, 9n);
    expect(seen).toEqual(['spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=0']);
    expect(written).toBe('spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=0\n');
  });

  it('collectors can be cleared and stopped', () => {
    const bus = new TraceBus();
    const put = bus.define(PUT);
    bus.enable('*');
    const out = bus.collect();
    put.emit(1n, 2n, 3n, 0n);
    out.clear();
    put.emit(4n, 5n, 6n, 0n);
    out.stop();
    put.emit(7n, 8n, 9n, 0n);
    expect(out.lines).toEqual(['spapr_iommu_put liobn=0x4 ioba=0x5 tce=0x6 ret=0']);
  });

  it('gives structured listeners the emitted arguments and their C values', () => {
    const bus = new TraceBus();
    const xlate = bus.define(XLATE);
    bus.enable('*');
    const records: TraceRecord[] = [];
    const stop = bus.onRecord((r) => records.push(r));
    xlate.emit(0x80000000n, 0x10n, 0n, 0, 0xffffffffffffffffn);
    stop();
    xlate.emit(0n, 0n, 0n, 0, 0n);
    expect(records).toHaveLength(1);
    expect(records[0]!.event).toBe(xlate);
    expect(records[0]!.args).toEqual([0x80000000n, 0x10n, 0n, 0, 0xffffffffffffffffn]);
    expect(records[0]!.values).toEqual([0x80000000n, 0x10n, 0n, 0, 0xffffffff]);
  });
});

describe('parseTraceLine', () => {
  it('reads a plain log line into name, text and fields', () => {
    const line = 'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x200000 tcevalue=0x0 npages=512 ret=0';
    expect(parseTraceLine(line)).toEqual({
      name: 'spapr_iommu_pci_stuff',
      text: 'liobn=0x80000000 ioba=0x200000 tcevalue=0x0 npages=512 ret=0',
      fields: { liobn: '0x80000000', ioba: '0x200000', tcevalue: '0x0', npages: '512', ret: '0' },
      positional: [],
    });
  });

  it('reads the timestamped form', () => {
    const parsed = parseTraceLine(
      '719585@1608130130.441188:spapr_iommu_put liobn=0x1 ioba=0x2 tce=0x3 ret=-4\n',
    );
    expect(parsed).toMatchObject({ pid: 719585, timestamp: 1608130130441188, name: 'spapr_iommu_put' });
    expect(parsed!.fields.ret).toBe('-4');
  });

  it('keeps positional parts and multi-word keys', () => {
    const xlate = parseTraceLine('spapr_iommu_xlate liobn=0x80000000 0x1234 -> 0x5000000 perm=1 mask=0xfff')!;
    expect(xlate.fields).toEqual({ liobn: '0x80000000', perm: '1', mask: '0xfff' });
    expect(xlate.positional).toEqual(['0x1234', '->', '0x5000000']);
    const query = parseTraceLine(
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x80000000, mask=0x107',
    )!;
    expect(query.fields).toEqual({
      buid: '0x800000020000000',
      addr: '0x0',
      'max window size': '0x80000000',
      mask: '0x107',
    });
    expect(query.positional).toEqual(['1', 'windows', 'available']);
  });

  it('reads a line without fields and refuses what is not a trace line', () => {
    expect(parseTraceLine('bare ')).toMatchObject({ name: 'bare', text: '', fields: {} });
    expect(parseTraceLine('bare')).toMatchObject({ name: 'bare', text: '' });
    expect(parseTraceLine('qemu-system-ppc64: warning: something')).toBeUndefined();
    expect(parseTraceLine('')).toBeUndefined();
  });
});
