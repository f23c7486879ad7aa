// The printf engine: a format string compiled once, at declaration, into literal text and one
// renderer per conversion. A conversion reads its argument as printf's va_arg would read it (so
// `uint64_t ret` printed with PRId64 shows -4), after TraceEvent converted the argument to its
// declared parameter type.

import { declError, type TraceParam, type TraceValue } from './declaration.js';

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

/** A compiled format: literal text, or the renderer of one conversion and the parameter it reads. */
export type Segment = string | { readonly param: number; readonly render: (value: TraceValue) => string };

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

/** The segments of `format`, each conversion checked against the parameter it reads. */
export function compileFormat(format: string, params: readonly TraceParam[], line: string): Segment[] {
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
