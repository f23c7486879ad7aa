// A declared trace event: its arguments converted to their C types, its text rendered.

import { DdwError } from '../errors.js';
import type { TraceBus } from './bus.js';
import type { TraceArg, TraceParam, TraceValue } from './declaration.js';
import type { Segment } from './printf.js';

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
