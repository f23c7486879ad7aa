// Encoding a VARRAY: which encoder a value gets, and the callbacks sources call.

import type { VMStateVarrayField } from '../description.js';
import { describe, Malformed } from '../errors.js';
import type { StreamWriter } from '../streams.js';
import { ElementEncoder } from './element-encoder.js';
import { RunEncoder } from './run-encoder.js';
import { type VarraySource, varrayOf } from './source.js';

// The callbacks given to sources are always the same few functions, small, so that a source's
// loop sees one target and inlines it: a call that is not inlined boxes its uint32 arguments,
// one allocation per element. They hand the element to the encoder being written.
let elements: ElementEncoder | undefined;
let runs: RunEncoder | undefined;
const onElement = (index: number, high: number, low: number): void => elements!.element(index, high, low);
const onRun = (first: number, n: number, high: number, low: number, stride: number): void =>
  runs!.run(first, n, high, low, stride);
const onSlots = (first: number, n: number, slots: Uint32Array): void => runs!.slots(first, n, slots);

/**
 * Writes a VARRAY's elements (QEMU-shaped, big-endian in index order) in blocks of
 * VARRAY_BLOCK_ELEMENTS: zero runs for empty blocks, affine records for blocks that are one
 * progression (uint64 elements of a source with forEachRun), literal blocks for the rest.
 */
export function putVarray(w: StreamWriter, field: VMStateVarrayField, value: unknown, count: number): void {
  const name = field.name;
  if (count === 0) {
    if (value !== null && value !== undefined && (value as VarraySource).length !== 0)
      throw new Malformed(`VARRAY ${name}: its count is 0 but it holds elements`);
    return;
  }
  const source: VarraySource | undefined =
    value !== null &&
    typeof value === 'object' &&
    typeof (value as VarraySource).forEachNonZero === 'function'
      ? (value as VarraySource)
      : value !== null && typeof value === 'object' && typeof (value as ArrayLike<number>).length === 'number'
        ? varrayOf(value as ArrayLike<number>)
        : undefined;
  if (!source) throw new Malformed(`VARRAY ${name}: ${describe(value)} is not an array`);
  if (source.length !== count)
    throw new Malformed(`VARRAY ${name}: it holds ${source.length} elements, its count says ${count}`);
  if (field.element === 'uint64' && typeof source.forEachSpan === 'function')
    putSpans(w, name, source, count);
  else if (field.element === 'uint64' && typeof source.forEachRun === 'function')
    putRuns(w, name, source, count);
  else putElements(w, field, source, count);
}

/** The elements of a source without runs: literal blocks written in place, zero runs between. */
function putElements(w: StreamWriter, field: VMStateVarrayField, source: VarraySource, count: number): void {
  const encoder = new ElementEncoder(w, field, count);
  const outer = elements;
  elements = encoder;
  try {
    source.forEachNonZero(onElement);
  } finally {
    elements = outer;
  }
  encoder.end();
}

/** The elements of a uint64 source with runs. */
function putRuns(w: StreamWriter, name: string, source: VarraySource, count: number): void {
  const encoder = new RunEncoder(w, name, count);
  const outer = runs;
  runs = encoder;
  try {
    source.forEachRun!(onRun);
  } finally {
    runs = outer;
  }
  encoder.end();
}

/** The elements of a uint64 source with spans. */
function putSpans(w: StreamWriter, name: string, source: VarraySource, count: number): void {
  const encoder = new RunEncoder(w, name, count);
  const outer = runs;
  runs = encoder;
  try {
    source.forEachSpan!(onRun, onSlots);
  } finally {
    runs = outer;
  }
  encoder.end();
}
