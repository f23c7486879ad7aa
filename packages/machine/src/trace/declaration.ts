// Trace event declarations in tracetool's syntax: the parameters with their C types, and the
// format string with its PRI macros expanded.

import { DdwError } from '../errors.js';

/** An argument as emitted. */
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

/** A DdwError naming the declaration `line` and what is wrong with it. */
export function declError(line: string, problem: string): DdwError {
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

const DECLARATION = /^\s*((?:[a-z]+\s+)*?)([A-Za-z_]\w*)\(([^)]*)\)\s*(.*?)\s*$/;

/** A declaration's parts: what TraceBus.define() builds an event from. */
export interface TraceDeclaration {
  readonly name: string;
  /** tracetool properties written before the name ("disable", "vcpu"). */
  readonly properties: readonly string[];
  readonly params: readonly TraceParam[];
  /** The printf format with PRI macros expanded. */
  readonly format: string;
}

/** Parses one trace-events line, e.g. `name(uint64_t a, int b) "a=0x%"PRIx64" b=%d"`. */
export function parseDeclaration(line: string): TraceDeclaration {
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
  return { name, properties, params, format };
}
