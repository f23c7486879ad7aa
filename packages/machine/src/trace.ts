import { injectable } from './di.js';
import { DdwError } from './errors.js';
import type { HypercallObserver } from './hcall.js';
import type { RtasObserver } from './rtas.js';

/**
 * Trace events in QEMU's own terms: declared with trace-events syntax, printed as QEMU's `log`
 * backend prints them, selected with `-trace`-style glob patterns. Lines therefore compare
 * one-for-one with a real `qemu -trace ... -D file` log.
 *
 * Formatting follows C: every argument is first converted to its declared parameter type (so a
 * 64-bit mask passed as `unsigned` is truncated), then read by its conversion the way printf's
 * va_arg would read it (so `uint64_t ret` printed with PRId64 shows -4).
 */

export type TraceArg = bigint | number | boolean | string;

/** An argument after conversion to its C type: number for types up to 32 bits, bigint for 64. */
export type TraceValue = bigint | number | string;

type TypeKind = 'int' | 'bool' | 'string' | 'pointer';

export interface TraceParam {
  /** The C type as declared, whitespace normalised: `uint64_t`, `const char *`. */
  readonly type: string;
  readonly name: string;
  readonly kind: TypeKind;
  /** Width in bits of the C type (64 for pointers, `const char *` included). */
  readonly bits: 8 | 16 | 32 | 64;
  readonly signed: boolean;
}

/** QEMU's tracetool refuses events with more parameters than this. */
export const TRACE_MAX_ARGS = 10;

// Integer types tracetool accepts, by their canonical spelling. Plain `char` is taken as signed,
// as on the x86-64 hosts traces usually come from; QEMU's trace-events never print one.
const INTEGER_TYPES: Record<string, { bits: 8 | 16 | 32 | 64; signed: boolean }> = {
  int8_t: { bits: 8, signed: true },
  uint8_t: { bits: 8, signed: false },
  int16_t: { bits: 16, signed: true },
  uint16_t: { bits: 16, signed: false },
  int32_t: { bits: 32, signed: true },
  uint32_t: { bits: 32, signed: false },
  int64_t: { bits: 64, signed: true },
  uint64_t: { bits: 64, signed: false },
  char: { bits: 8, signed: true },
  'signed char': { bits: 8, signed: true },
  'unsigned char': { bits: 8, signed: false },
  short: { bits: 16, signed: true },
  'short int': { bits: 16, signed: true },
  'unsigned short': { bits: 16, signed: false },
  'unsigned short int': { bits: 16, signed: false },
  int: { bits: 32, signed: true },
  signed: { bits: 32, signed: true },
  'signed int': { bits: 32, signed: true },
  unsigned: { bits: 32, signed: false },
  'unsigned int': { bits: 32, signed: false },
  long: { bits: 64, signed: true },
  'long int': { bits: 64, signed: true },
  'unsigned long': { bits: 64, signed: false },
  'long long': { bits: 64, signed: true },
  'unsigned long long': { bits: 64, signed: false },
  size_t: { bits: 64, signed: false },
  ssize_t: { bits: 64, signed: true },
  uintptr_t: { bits: 64, signed: false },
  ptrdiff_t: { bits: 64, signed: true },
};

// What glibc's <inttypes.h> expands the PRI macros to on a 64-bit (LP64) host.
const PRI_LENGTH: Record<string, string> = { '8': '', '16': '', '32': '', '64': 'l', PTR: 'l' };
const PRI_MACRO = /^PRI([diouxX])(8|16|32|64|PTR)$/;
// QEMU's own printf macros that appear in trace-events files.
const QEMU_MACROS: Record<string, string> = {
  HWADDR_PRIx: 'lx',
  HWADDR_PRIX: 'lX',
  HWADDR_PRId: 'ld',
  HWADDR_PRIu: 'lu',
};

function declError(line: string, problem: string): DdwError {
  return new DdwError('TRACE', `trace event declaration ${JSON.stringify(line.trim())}: ${problem}`);
}

function parseParam(text: string, line: string): TraceParam {
  const star = text.lastIndexOf('*');
  let type: string;
  let name: string;
  if (star >= 0) {
    type = `${text.slice(0, star).trim().replace(/\s+/g, ' ')} *`;
    name = text.slice(star + 1).trim();
  } else {
    const match = /^(.*\S)\s+(\S+)$/.exec(text);
    if (!match) throw declError(line, `parameter "${text}" needs a type and a name`);
    type = match[1]!.replace(/\s+/g, ' ');
    name = match[2]!;
  }
  if (!/^[A-Za-z_]\w*$/.test(name)) throw declError(line, `parameter "${text}" has no valid name`);
  if (star >= 0) {
    const base = type.replace(/\s*\*$/, '').replace(/^const /, '');
    if (/\*/.test(base))
      throw declError(
        line,
        `parameter ${name}: pointers to pointers are not supported; declare it as void *`,
      );
    if (base === 'char') return { type, name, kind: 'string', bits: 64, signed: false };
    if (base !== 'void' && !(base in INTEGER_TYPES)) {
      throw declError(
        line,
        `parameter ${name} has type "${type}"; declare struct and other pointers as void *`,
      );
    }
    return { type, name, kind: 'pointer', bits: 64, signed: false };
  }
  if (type === 'bool') return { type, name, kind: 'bool', bits: 8, signed: false };
  const integer = INTEGER_TYPES[type];
  if (!integer) {
    throw declError(
      line,
      `parameter ${name} has type "${type}"; use a standard C or fixed-size integer type, bool, const char * or void *`,
    );
  }
  return { type, name, kind: 'int', ...integer };
}

/** The format string of a declaration: C string literals and PRI macros, concatenated. */
function parseFormatSource(source: string, line: string): string {
  let format = '';
  let i = 0;
  while (i < source.length) {
    const ch = source[i]!;
    if (/\s/.test(ch)) {
      i++;
    } else if (ch === '"') {
      i++;
      for (;;) {
        if (i >= source.length) throw declError(line, 'the format string is not closed with a double quote');
        const c = source[i++]!;
        if (c === '"') break;
        if (c !== '\\') {
          format += c;
          continue;
        }
        const escaped = source[i++];
        const replacement = escaped === undefined ? undefined : C_ESCAPES[escaped];
        if (replacement === undefined)
          throw declError(line, `unsupported escape \\${escaped ?? ''} in the format string`);
        format += replacement;
      }
    } else {
      const match = /^[A-Za-z_]\w*/.exec(source.slice(i));
      if (!match) throw declError(line, `unexpected ${JSON.stringify(ch)} in the format string`);
      const macro = match[0];
      const pri = PRI_MACRO.exec(macro);
      const expansion = pri ? `${PRI_LENGTH[pri[2]!]}${pri[1]}` : QEMU_MACROS[macro];
      if (expansion === undefined) throw declError(line, `unknown format macro ${macro}`);
      format += expansion;
      i += macro.length;
    }
  }
  return format;
}

const C_ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  "'": "'",
  '?': '?',
  n: '\n',
  t: '\t',
  r: '\r',
};

interface Spec {
  readonly minus: boolean;
  readonly zero: boolean;
  readonly hash: boolean;
  readonly space: boolean;
  readonly plus: boolean;
  readonly width: number;
  readonly precision: number | undefined;
  readonly length: string;
  readonly conversion: string;
}

type Segment = string | { readonly param: number; readonly render: (value: TraceValue) => string };

const LENGTH_BITS: Record<string, 8 | 16 | 32 | 64> = {
  hh: 8,
  h: 16,
  '': 32,
  l: 64,
  ll: 64,
  z: 64,
  j: 64,
  t: 64,
};
const CONVERSION = /^%([-0# +]*)(\d*)(?:\.(\d*))?(hh|h|ll|l|z|j|t)?([diouxXcsp%])/;

function pad(text: string, spec: Spec): string {
  if (text.length >= spec.width) return text;
  const fill = ' '.repeat(spec.width - text.length);
  return spec.minus ? text + fill : fill + text;
}

/** printf's integer layout: precision, sign or prefix, then width with spaces or zeros. */
function layoutInteger(negative: boolean, magnitude: string, spec: Spec, signed: boolean): string {
  let digits = magnitude;
  const zeroValue = magnitude === '0';
  if (spec.precision !== undefined) {
    if (spec.precision === 0 && zeroValue) digits = '';
    else if (digits.length < spec.precision) digits = '0'.repeat(spec.precision - digits.length) + digits;
  }
  let prefix = '';
  if (signed) prefix = negative ? '-' : spec.plus ? '+' : spec.space ? ' ' : '';
  if (spec.hash) {
    if ((spec.conversion === 'x' || spec.conversion === 'p') && !zeroValue) prefix = '0x';
    else if (spec.conversion === 'X' && !zeroValue) prefix = '0X';
    else if (spec.conversion === 'o' && !digits.startsWith('0')) digits = `0${digits}`;
  }
  const length = prefix.length + digits.length;
  if (length >= spec.width) return prefix + digits;
  if (spec.minus) return prefix + digits + ' '.repeat(spec.width - length);
  if (spec.zero && spec.precision === undefined) return prefix + '0'.repeat(spec.width - length) + digits;
  return ' '.repeat(spec.width - length) + prefix + digits;
}

function integerRenderer(spec: Spec): (value: TraceValue) => string {
  const signed = spec.conversion === 'd' || spec.conversion === 'i';
  const base = spec.conversion === 'o' ? 8 : spec.conversion === 'x' || spec.conversion === 'X' ? 16 : 10;
  const upper = spec.conversion === 'X';
  const bits = LENGTH_BITS[spec.length]!;
  const digits = (magnitude: bigint | number) => {
    const text = magnitude.toString(base);
    return upper ? text.toUpperCase() : text;
  };
  if (bits === 64) {
    return (value) => {
      const v = signed ? BigInt.asIntN(64, value as bigint) : BigInt.asUintN(64, value as bigint);
      return layoutInteger(v < 0n, digits(v < 0n ? -v : v), spec, signed);
    };
  }
  // Narrower reads see the promoted int; these reinterpret it as printf's va_arg + cast would.
  const narrow: (v: number) => number =
    bits === 32
      ? signed
        ? (v) => v | 0
        : (v) => v >>> 0
      : bits === 16
        ? signed
          ? (v) => (v << 16) >> 16
          : (v) => v & 0xffff
        : signed
          ? (v) => (v << 24) >> 24
          : (v) => v & 0xff;
  return (value) => {
    const v = narrow(value as number);
    return layoutInteger(v < 0, digits(v < 0 ? -v : v), spec, signed);
  };
}

function pointerRenderer(spec: Spec): (value: TraceValue) => string {
  // glibc prints a null pointer as "(nil)" and any other as %#lx.
  const hexSpec: Spec = { ...spec, hash: true, precision: undefined };
  return (value) => {
    const v = value as bigint;
    return v === 0n ? pad('(nil)', spec) : layoutInteger(false, v.toString(16), hexSpec, false);
  };
}

function renderer(
  spec: Spec,
  param: TraceParam,
  describe: string,
  line: string,
): (value: TraceValue) => string {
  const { conversion, length } = spec;
  if (conversion === 's') {
    if (param.kind !== 'string') throw declError(line, `${describe} is ${param.type} but %s prints a string`);
    if (length !== '') throw declError(line, `${describe}: wide strings (%l${conversion}) are not supported`);
    return (value) => {
      const text = value as string;
      return pad(spec.precision === undefined ? text : text.slice(0, spec.precision), spec);
    };
  }
  if (conversion === 'p') {
    if (param.kind !== 'pointer')
      throw declError(line, `${describe} is ${param.type} but %p prints a pointer`);
    if (length !== '') throw declError(line, `${describe}: %p takes no length modifier`);
    return pointerRenderer(spec);
  }
  if (param.kind !== 'int' && param.kind !== 'bool') {
    throw declError(line, `${describe} is ${param.type} but %${length}${conversion} prints an integer`);
  }
  if (conversion === 'c') {
    if (length !== '')
      throw declError(line, `${describe}: wide characters (%l${conversion}) are not supported`);
    return (value) => pad(String.fromCharCode((value as number) & 0xff), spec);
  }
  // Arguments narrower than int are promoted to int, so only the 64-bit split must agree.
  const promotedBits = param.bits === 64 ? 64 : 32;
  const readBits = LENGTH_BITS[length]!;
  if ((readBits === 64) !== (promotedBits === 64)) {
    throw declError(
      line,
      `${describe} is ${param.type} (${promotedBits}-bit after promotion) but %${length}${conversion} reads a ${readBits === 64 ? 64 : 32}-bit value`,
    );
  }
  return integerRenderer(spec);
}

function compileFormat(format: string, params: readonly TraceParam[], line: string): Segment[] {
  const segments: Segment[] = [];
  let literal = '';
  let next = 0;
  let i = 0;
  while (i < format.length) {
    const percent = format.indexOf('%', i);
    if (percent < 0) {
      literal += format.slice(i);
      break;
    }
    literal += format.slice(i, percent);
    const match = CONVERSION.exec(format.slice(percent));
    if (!match) {
      const shown = format.slice(percent, percent + 6);
      throw declError(
        line,
        `unsupported conversion "${shown}"; use %d %i %u %x %X %o %c %s %p %% with flags, width, precision and hh/h/l/ll/z/j/t`,
      );
    }
    i = percent + match[0].length;
    const conversion = match[5]!;
    if (conversion === '%') {
      literal += '%';
      continue;
    }
    const flags = match[1]!;
    const spec: Spec = {
      minus: flags.includes('-'),
      zero: flags.includes('0'),
      hash: flags.includes('#'),
      space: flags.includes(' '),
      plus: flags.includes('+'),
      width: match[2] ? Number(match[2]) : 0,
      precision: match[3] === undefined ? undefined : Number(match[3] || '0'),
      length: match[4] ?? '',
      conversion,
    };
    const param = params[next];
    if (param === undefined) {
      throw declError(line, `the format has more conversions than the ${params.length} parameter(s)`);
    }
    const describe = `parameter ${next + 1} (${param.name})`;
    if (literal !== '') segments.push(literal);
    literal = '';
    segments.push({ param: next, render: renderer(spec, param, describe, line) });
    next++;
  }
  if (literal !== '') segments.push(literal);
  return segments;
}

function conversionError(event: string, param: TraceParam, value: unknown): DdwError {
  const shown =
    typeof value === 'string'
      ? JSON.stringify(value)
      : typeof value === 'bigint'
        ? `${value}n`
        : String(value);
  return new DdwError(
    'TRACE',
    `trace event ${event}: argument ${param.name} (${param.type}) cannot take ${shown}`,
  );
}

/** The C conversion of one argument to its parameter's type, as an implicit cast would do it. */
function caster(event: string, param: TraceParam): (value: TraceArg) => TraceValue {
  if (param.kind === 'string') {
    return (value) => {
      if (typeof value !== 'string') throw conversionError(event, param, value);
      return value;
    };
  }
  if (param.kind === 'bool') {
    return (value) => {
      if (typeof value === 'boolean') return value ? 1 : 0;
      if (typeof value === 'bigint') return value !== 0n ? 1 : 0;
      if (typeof value === 'number') return value !== 0 ? 1 : 0;
      throw conversionError(event, param, value);
    };
  }
  if (param.bits === 64) {
    const wrap = param.signed ? (v: bigint) => BigInt.asIntN(64, v) : (v: bigint) => BigInt.asUintN(64, v);
    return (value) => {
      if (typeof value === 'bigint') return wrap(value);
      if (typeof value === 'number' && Number.isFinite(value)) return wrap(BigInt(Math.trunc(value)));
      if (typeof value === 'boolean') return value ? 1n : 0n;
      throw conversionError(event, param, value);
    };
  }
  const shift = 32 - param.bits;
  const wrap = param.signed
    ? (v: number) => (v << shift) >> shift
    : param.bits === 32
      ? (v: number) => v >>> 0
      : (v: number) => v & ((1 << param.bits) - 1);
  return (value) => {
    if (typeof value === 'number' && Number.isFinite(value)) return wrap(Math.trunc(value));
    if (typeof value === 'bigint') return wrap(Number(BigInt.asUintN(32, value)));
    if (typeof value === 'boolean') return value ? 1 : 0;
    throw conversionError(event, param, value);
  };
}

/** A declared trace event. Check `enabled` before computing expensive arguments. */
export class TraceEvent<A extends readonly TraceArg[] = readonly TraceArg[]> {
  /**
   * Whether emit() does anything. Set by the bus's patterns (and on for every event while a
   * recorder records them, see TraceBus.record); may also be set directly.
   */
  enabled = false;
  /**
   * @internal Whether the bus's selection picks it: while a recorder makes every event enabled,
   * only these reach sinks and listeners.
   */
  selected = false;
  readonly name: string;
  /** The trace-events file the event comes from, e.g. "hw/ppc" (informational). */
  readonly group: string | undefined;
  readonly params: readonly TraceParam[];
  /** The printf format with PRI macros expanded. */
  readonly format: string;
  /** tracetool properties written before the name ("disable", "vcpu"). */
  readonly properties: readonly string[];
  /** The declaration in a canonical spelling, used to tell redefinitions apart. */
  readonly declaration: string;
  private readonly segments: readonly Segment[];
  private readonly casts: readonly ((value: TraceArg) => TraceValue)[];

  /** @internal Built by TraceBus.define(). */
  constructor(
    private readonly bus: TraceBus,
    parts: {
      name: string;
      group: string | undefined;
      params: readonly TraceParam[];
      format: string;
      properties: readonly string[];
      segments: readonly Segment[];
    },
  ) {
    this.name = parts.name;
    this.group = parts.group;
    this.params = parts.params;
    this.format = parts.format;
    this.properties = parts.properties;
    this.segments = parts.segments;
    this.casts = parts.params.map((param) => caster(parts.name, param));
    this.declaration = `${[...parts.properties, parts.name].join(' ')}(${parts.params.map((p) => `${p.type} ${p.name}`).join(', ')}) ${JSON.stringify(parts.format)}`;
  }

  /**
   * Records the event; returns at once when disabled. (V8 does not materialise the rest array on
   * that path, which was measured faster than positional parameters.)
   */
  emit(...args: A): void {
    if (!this.enabled) return;
    this.bus.deliver(this as unknown as TraceEvent, args);
  }

  /** The arguments converted to their declared C types. */
  toValues(args: readonly (TraceArg | undefined)[]): TraceValue[] {
    if (args.length < this.casts.length) {
      throw new DdwError(
        'TRACE',
        `trace event ${this.name} takes ${this.casts.length} arguments, got ${args.length}`,
      );
    }
    return this.casts.map((cast, i) => {
      const value = args[i];
      if (value === undefined) throw conversionError(this.name, this.params[i]!, value);
      return cast(value);
    });
  }

  /** The text after the event name, as printf would produce it from `args`. */
  formatArgs(...args: A): string {
    return this.render(this.toValues(args));
  }

  /** The text after the event name from already-converted values. */
  render(values: readonly TraceValue[]): string {
    let out = '';
    for (const segment of this.segments) {
      out += typeof segment === 'string' ? segment : segment.render(values[segment.param]!);
    }
    return out;
  }
}

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

/**
 * Sees what the machines on a bus do, whatever the selection (a timeline: `ddw --trace-json`).
 * With `event`, every trace event as emitted: while such a recorder is attached every event is
 * enabled (enabling an event never changes what is computed), and sinks and listeners still get
 * only the selected ones. With `hypercall` and `rtas`, every hypercall and RTAS dispatch of the
 * machines built on the bus. A recorder only observes: it must not throw or call into the machine.
 */
export interface TraceRecorder {
  event?(event: TraceEvent, args: readonly TraceArg[]): void;
  hypercall?: HypercallObserver;
  rtas?: RtasObserver;
}

/** The registries a machine connects to its bus (TraceBus.connectCalls). */
interface CallSite {
  hypercalls: { observer: HypercallObserver | undefined };
  rtas: { observer: RtasObserver | undefined };
}

export interface TraceCollector {
  /** Every line written since the collector was made, without newlines. */
  readonly lines: string[];
  clear(): void;
  /** Detaches the collector from the bus; `lines` keeps what it has. */
  stop(): void;
}

export interface TraceBusOptions {
  /** Prefix each line with `pid@seconds.micros:` as `-msg timestamp=on` does. */
  timestamps?: boolean;
  /** Wall-clock time in microseconds since the Unix epoch (gettimeofday). */
  clock?: () => number;
  /** The id QEMU prints (its thread id; the process id for the main thread). */
  pid?: number;
}

/** A sink that hands each line to `fn`. */
export function callbackSink(fn: (line: string) => void): TraceSink {
  return { write: fn };
}

/** A sink that writes each line and a newline to a stream (process.stderr, a file stream). */
export function streamSink(stream: { write(chunk: string): unknown }): TraceSink {
  return { write: (line) => void stream.write(`${line}\n`) };
}

/** QEMU's trace glob: `*` any run of characters, `?` one character, everything else literal. */
export function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\*?]/g, (ch) =>
    ch === '*' ? '.*' : ch === '?' ? '.' : `\\${ch}`,
  );
  return new RegExp(`^${body}$`);
}

/**
 * A selection of trace events as QEMU's `-trace` patterns make one: each pattern a glob, a leading
 * `-` deselects, and the last pattern matching an event decides.
 */
export class TraceSelection {
  private rules: { pattern: string; enable: boolean; regexp: RegExp }[] = [];
  /** Answers by event name: a replay asks once per traced line. Cleared when a rule is added. */
  private readonly answers = new Map<string, boolean>();

  constructor(patterns: readonly string[] = []) {
    for (const p of patterns) this.add(p.startsWith('-') ? p.slice(1) : p, !p.startsWith('-'));
  }

  /** Appends a glob that selects (or, with `enable` false, deselects) what it matches. */
  add(pattern: string, enable: boolean): RegExp {
    if (pattern === '') {
      throw new DdwError(
        'TRACE',
        'an empty trace pattern selects nothing; write an event name or a glob such as spapr_iommu_*, or -NAME to leave one out',
      );
    }
    const regexp = globToRegExp(pattern);
    this.rules = [...this.rules, { pattern, enable, regexp }];
    this.answers.clear();
    return regexp;
  }

  /** The selection in pattern form (`-NAME` for a deselection). */
  patterns(): string[] {
    return this.rules.map((r) => (r.enable ? r.pattern : `-${r.pattern}`));
  }

  /** Whether the event is selected (`initial` when no pattern matches it). */
  selects(name: string, initial = false): boolean {
    const key = initial ? `+${name}` : name;
    let selected = this.answers.get(key);
    if (selected === undefined) {
      selected = initial;
      for (const rule of this.rules) if (rule.regexp.test(name)) selected = rule.enable;
      this.answers.set(key, selected);
    }
    return selected;
  }

  /** The patterns (in pattern form, each once) that match none of `events`: likely typos. */
  matchingNone(events: readonly string[]): string[] {
    const none: string[] = [];
    for (const rule of this.rules) {
      const p = rule.enable ? rule.pattern : `-${rule.pattern}`;
      if (!none.includes(p) && !events.some((e) => rule.regexp.test(e))) none.push(p);
    }
    return none;
  }
}

const DECLARATION = /^\s*((?:[a-z]+\s+)*?)([A-Za-z_]\w*)\(([^)]*)\)\s*(.*?)\s*$/;

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
    const match = DECLARATION.exec(line);
    if (!match) throw declError(line, 'expected name(type arg, ...) "format"');
    const properties = match[1]!.trim() === '' ? [] : match[1]!.trim().split(/\s+/);
    for (const property of properties) {
      if (property !== 'disable' && property !== 'vcpu')
        throw declError(line, `unknown property "${property}"`);
    }
    const name = match[2]!;
    const paramsText = match[3]!.trim();
    const params =
      paramsText === 'void' || paramsText === ''
        ? []
        : paramsText.split(',').map((text) => {
            if (text.trim() === '') throw declError(line, 'empty parameter (write void for none)');
            return parseParam(text.trim(), line);
          });
    if (params.length > TRACE_MAX_ARGS) throw declError(line, `more than ${TRACE_MAX_ARGS} parameters`);
    const names = new Set<string>();
    for (const param of params) {
      if (names.has(param.name)) throw declError(line, `parameter name ${param.name} is used twice`);
      names.add(param.name);
    }
    const format = parseFormatSource(match[4]!, line);
    if (format.endsWith('\n'))
      throw declError(line, 'the format must not end with a newline; the backend adds one');
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

/** One observer for several (undefined for none): what a registry calls on each dispatch. */
function fanOut<O extends { enter(...args: never[]): void; leave(...args: never[]): void }>(
  observers: readonly O[],
): O | undefined {
  if (observers.length <= 1) return observers[0];
  return {
    enter: (...args: never[]) => {
      for (const o of observers) o.enter(...args);
    },
    leave: (...args: never[]) => {
      for (const o of observers) o.leave(...args);
    },
  } as unknown as O;
}

export interface ParsedTraceLine {
  /** The thread id of a `-msg timestamp=on` line. */
  pid?: number;
  /** Microseconds since the Unix epoch, from a `-msg timestamp=on` line. */
  timestamp?: number;
  name: string;
  /** Everything after the name and its space, unchanged. */
  text: string;
  /**
   * `key=value` tokens, trailing commas dropped. A key is the run of plain words before `=`, so
   * `page size=0x10000` gives `fields['page size']`; the first occurrence of a key wins.
   */
  fields: Record<string, string>;
  /** Tokens that are not part of a field, in order, trailing commas dropped. */
  positional: string[];
}

const LOG_LINE = /^(?:(\d+)@(\d+)\.(\d{6}):)?([A-Za-z_]\w*)(?: (.*))?$/;
const PLAIN_WORD = /^[A-Za-z]+$/;

/** Reads a QEMU log-backend trace line; undefined for a line that is not one. */
export function parseTraceLine(line: string): ParsedTraceLine | undefined {
  const match = LOG_LINE.exec(line.replace(/\r?\n$/, ''));
  if (!match) return undefined;
  const text = match[5] ?? '';
  const parsed: ParsedTraceLine = { name: match[4]!, text, fields: {}, positional: [] };
  if (match[1] !== undefined) {
    parsed.pid = Number(match[1]);
    parsed.timestamp = Number(match[2]) * 1e6 + Number(match[3]);
  }
  const pending: string[] = [];
  for (const token of text.split(/\s+/).filter((t) => t !== '')) {
    const field = /^([A-Za-z_]\w*)=(.*)$/.exec(token);
    if (field) {
      const key = [...pending, field[1]!].join(' ');
      pending.length = 0;
      if (!(key in parsed.fields)) parsed.fields[key] = field[2]!.replace(/,$/, '');
      continue;
    }
    if (PLAIN_WORD.test(token)) {
      pending.push(token);
      continue;
    }
    parsed.positional.push(...pending, token.replace(/,$/, ''));
    pending.length = 0;
  }
  parsed.positional.push(...pending);
  return parsed;
}
