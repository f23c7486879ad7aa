import type { RamRegion, SparseRam } from '@ddw/memory';
import { DdwError, messageOf, PluginError } from './errors.js';
import type { Machine } from './machine.js';

/**
 * Migration and snapshots, after QEMU's vmstate (include/migration/vmstate.h, migration/savevm.c):
 * plugins describe their state declaratively as sections (a name, an instance id, a version and a
 * minimum version, typed fields, subsections sent only when `needed`, pre_save / post_load hooks)
 * and register them in the machine's VmstateRegistry; saveSnapshot() writes every section into one
 * binary stream and loadSnapshot() reads it back into a machine of the same description.
 *
 * Loading is all or nothing: the whole file is parsed and every section decoded into plain values,
 * checked against the target machine (identity, section list, versions, EQUAL fields, each
 * section's own `validate` hook) before the first post_load runs. post_load hooks must not fail:
 * whatever could make them fail belongs in `validate`.
 *
 * The file (all integers big-endian, as QEMU's stream):
 *
 *   0   "DDWS"                      magic
 *   4   u32 format version          SNAPSHOT_FORMAT_VERSION
 *   8   u32 header length H
 *   12  u32 CRC32 of the header
 *   16  header: UTF-8 JSON { machine: { type, ram, maxmem }, sections: [{ name, instanceId,
 *       version, size, crc }] }: the machine's identity (ram and maxmem as hex strings) and every
 *       section with its size in bytes and the CRC32 of those bytes, so a load checks that it is
 *       the same machine and names the section a corruption is in before decoding anything
 *   16+H payload: each section in header order, then QEMU_VM_EOF (0x01). A section is
 *       QEMU_VM_SECTION_FULL (0x04), u32 section index, u8 name length + name, u32 instance id,
 *       u32 version id, its fields, any subsections (QEMU_VM_SUBSECTION 0x05, u8 name length +
 *       name, u32 version id, fields), then QEMU_VM_SECTION_FOOTER (0x7e) and the section index.
 *
 * Fields: u8/u16/u32/u64 and their signed forms in their width, bool as one byte (0 or 1), custom
 * fields as their VMStateInfo writes them. A VARRAY_UINT32_ALLOC holds as many elements as its
 * count field says, QEMU-shaped (big-endian elements in index order) but in blocks of
 * VARRAY_BLOCK_ELEMENTS elements (the last one shorter), so that empty stretches cost nothing: a
 * literal block is 0x01 followed by its elements; a run of all-zero blocks is 0x00 followed by a
 * u32 block count (at least 1). The blocks must cover the array exactly; decoded, the array is
 * exactly the elements QEMU's stream would carry. Guest RAM is the section "ram" (SPARSE_RAM_INFO):
 * only the touched, non-zero 64 KiB chunks of the sparse backing, each as be64 (offset | 0x08)
 * and its bytes, ended by be64 0x10 (QEMU's RAM_SAVE_FLAG_PAGE / _EOS).
 */

/** The layout version of the file; a file of another version is refused. */
export const SNAPSHOT_FORMAT_VERSION = 1;
/** Elements per block of an encoded VARRAY (see the module comment). */
export const VARRAY_BLOCK_ELEMENTS = 1 << 14;

const MAGIC = 0x44445753; // "DDWS"
const PREAMBLE_BYTES = 16;
const QEMU_VM_EOF = 0x01;
const QEMU_VM_SECTION_FULL = 0x04;
const QEMU_VM_SUBSECTION = 0x05;
const QEMU_VM_SECTION_FOOTER = 0x7e;
const VARRAY_ZERO_RUN = 0x00;
const VARRAY_LITERAL = 0x01;
const BLOCK_SHIFT = 14;
const TWO_32 = 0x1_0000_0000;
const U64_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------
// CRC32 (IEEE 802.3, reflected polynomial 0xedb88320), table-driven, eight bytes per step.

const CRC_TABLES = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i]!;
    for (let s = 1; s < 8; s++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[s * 256 + i] = c >>> 0;
    }
  }
  return t;
})();

/** CRC32 of `bytes`; pass the previous result as `seed` to continue over more bytes. */
export function crc32(bytes: Uint8Array, seed = 0): number {
  const t = CRC_TABLES;
  let crc = (seed ^ 0xffffffff) >>> 0;
  const n = bytes.length;
  let i = 0;
  for (; n - i >= 8; i += 8) {
    const a = (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)) ^ crc;
    const b = bytes[i + 4]! | (bytes[i + 5]! << 8) | (bytes[i + 6]! << 16) | (bytes[i + 7]! << 24);
    crc =
      t[1792 + (a & 0xff)]! ^
      t[1536 + ((a >>> 8) & 0xff)]! ^
      t[1280 + ((a >>> 16) & 0xff)]! ^
      t[1024 + (a >>> 24)]! ^
      t[768 + (b & 0xff)]! ^
      t[512 + ((b >>> 8) & 0xff)]! ^
      t[256 + ((b >>> 16) & 0xff)]! ^
      t[b >>> 24]!;
  }
  for (; i < n; i++) crc = t[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * A snapshot that cannot be loaded (or a section that cannot be saved). `section` names the
 * section at fault, "header" for the file itself; the target machine is unchanged.
 */
export class SnapshotError extends DdwError {
  override name = 'SnapshotError';
  readonly section: string;
  readonly instanceId: number | undefined;
  readonly reason: string;

  constructor(
    section: string,
    instanceId: number | undefined,
    reason: string,
    options: { cause?: unknown } = {},
  ) {
    const where =
      section === 'header'
        ? 'snapshot header'
        : `snapshot section "${section}"${instanceId === undefined ? '' : ` (instance 0x${instanceId.toString(16)})`}`;
    super('SNAPSHOT', `${where}: ${reason}`, options);
    this.section = section;
    this.instanceId = instanceId;
    this.reason = reason;
  }
}

/** A malformed stream, found while decoding; turned into a SnapshotError naming the section. */
class Malformed extends Error {}

// ---------------------------------------------------------------------------------------------
// Byte streams

/** What a custom field's VMStateInfo writes with. */
export interface SnapshotWriter {
  u8(v: number): void;
  u16(v: number): void;
  u32(v: number): void;
  u64(v: bigint): void;
  /** A u64 given as two 32-bit halves (no BigInt on hot paths). */
  u64Halves(high: number, low: number): void;
  bytes(data: Uint8Array): void;
}

/** What a custom field's VMStateInfo reads with; every read is bounds-checked (a short stream throws). */
export interface SnapshotReader {
  readonly remaining: number;
  u8(): number;
  u16(): number;
  u32(): number;
  u64(): bigint;
  /** `n` bytes as a view into the snapshot (no copy): copy them if they must outlive the load. */
  bytes(n: number): Uint8Array;
  /** Throws the decoding error that names the section being read. */
  fail(reason: string): never;
}

class ByteWriter implements SnapshotWriter {
  buf: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(initial = 1 << 16) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }

  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.pos, v);
    this.pos += 2;
  }

  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, v);
    this.pos += 4;
  }

  u64(v: bigint): void {
    this.ensure(8);
    this.view.setBigUint64(this.pos, BigInt.asUintN(64, v));
    this.pos += 8;
  }

  u64Halves(high: number, low: number): void {
    this.ensure(8);
    this.view.setUint32(this.pos, high);
    this.view.setUint32(this.pos + 4, low);
    this.pos += 8;
  }

  bytes(data: Uint8Array): void {
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  /** Reserves `n` zeroed bytes and returns where they start. */
  reserve(n: number): number {
    this.ensure(n);
    const at = this.pos;
    this.buf.fill(0, at, at + n);
    this.pos += n;
    return at;
  }

  shortString(s: string): void {
    const bytes = new TextEncoder().encode(s);
    this.u8(bytes.length);
    this.bytes(bytes);
  }
}

class ByteReader implements SnapshotReader {
  readonly view: DataView;

  constructor(
    readonly buf: Uint8Array,
    public pos: number,
    readonly end: number,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  need(n: number, what: string): void {
    if (this.end - this.pos < n)
      throw new Malformed(`truncated: ${what} needs ${n} bytes, ${this.end - this.pos} left`);
  }

  u8(what = 'a u8'): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }

  u16(what = 'a u16'): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32(what = 'a u32'): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  u64(what = 'a u64'): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return v;
  }

  bytes(n: number, what = 'bytes'): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0) throw new Malformed(`${what}: bad length ${n}`);
    this.need(n, what);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  shortString(what: string): string {
    const n = this.u8(`${what} length`);
    const bytes = this.bytes(n, what);
    for (const b of bytes) if (b < 0x20 || b > 0x7e) throw new Malformed(`${what} is not printable ASCII`);
    return String.fromCharCode(...bytes);
  }

  fail(reason: string): never {
    throw new Malformed(reason);
  }
}

// ---------------------------------------------------------------------------------------------
// Section descriptions

export type VMStateScalarType =
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'uint64'
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'bool';

export type VMStateElementType = 'uint8' | 'uint16' | 'uint32' | 'uint64';

interface FieldBase {
  /** The property of the opaque object it is saved from; the key of the loaded value. */
  readonly name: string;
  /** Present in streams of this section version and later (VMSTATE_*_V); default: always. */
  readonly version?: number;
}

/** VMSTATE_UINT32 and friends; `equal` is VMSTATE_*_EQUAL: a load fails unless the value is this machine's. */
export interface VMStateScalarField extends FieldBase {
  readonly type: VMStateScalarType;
  readonly equal?: boolean;
}

/**
 * VMSTATE_VARRAY_UINT32_ALLOC: `count` names an earlier uint32 field holding the number of
 * elements. Saved from a VarraySource (or an array of numbers/bigints); loaded as a VarrayView,
 * or null when the count is 0 (the ALLOC flag allocates only for a non-zero size).
 */
export interface VMStateVarrayField extends FieldBase {
  readonly type: 'varray_uint32_alloc';
  readonly element: VMStateElementType;
  readonly count: string;
}

/** A field with its own encoding (QEMU's VMStateInfo), e.g. guest RAM. */
export interface VMStateCustomField extends FieldBase {
  readonly type: 'custom';
  // biome-ignore lint/suspicious/noExplicitAny: a field holds any VMStateInfo
  readonly info: VMStateInfo<any, unknown>;
}

export type VMStateField = VMStateScalarField | VMStateVarrayField | VMStateCustomField;

/** QEMU's VMStateInfo: how a custom field is written and read. */
export interface VMStateInfo<In = unknown, Out = In> {
  readonly name: string;
  put(writer: SnapshotWriter, value: In): void;
  /** Reads the value; a malformed stream throws (reader.fail or a short read). */
  get(reader: SnapshotReader): Out;
}

/** A subsection: written after the fields only when `needed` says so at save time. */
export interface VMStateSubsection<T extends object = object> {
  readonly name: string;
  readonly version: number;
  readonly minimumVersion?: number;
  readonly fields: readonly VMStateField[];
  needed(opaque: T): boolean;
}

/** A section as loaded: plain values, nothing applied yet. */
export interface VMStateLoaded {
  /** The version id the stream carried. */
  readonly version: number;
  readonly fields: Readonly<Record<string, unknown>>;
  /** The subsections present in the stream, by name. */
  readonly subsections: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/**
 * A section description (QEMU's VMStateDescription). Hooks get the opaque object the section was
 * registered with. `validate` runs after every section of the snapshot was decoded and before any
 * is applied; it throws (with the reason) to refuse the load, and may return prepared data that
 * `postLoad` gets. `postLoad` applies the loaded values and must not fail.
 */
export interface VMStateDescription<T extends object = object, P = unknown> {
  readonly name: string;
  readonly version: number;
  /** The oldest version this machine loads (default: `version`). */
  readonly minimumVersion?: number;
  readonly fields: readonly VMStateField[];
  readonly subsections?: readonly VMStateSubsection<T>[];
  preSave?(opaque: T): void;
  postSave?(opaque: T): void;
  validate?(opaque: T, loaded: VMStateLoaded): P;
  postLoad?(opaque: T, loaded: VMStateLoaded, prepared: P): void;
}

/** Shorthands in the spirit of QEMU's VMSTATE_* macros. */
export const VMState = {
  uint8: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'uint8',
    ...opts,
  }),
  uint16: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'uint16',
    ...opts,
  }),
  uint32: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'uint32',
    ...opts,
  }),
  uint64: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'uint64',
    ...opts,
  }),
  int32: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'int32',
    ...opts,
  }),
  int64: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'int64',
    ...opts,
  }),
  bool: (name: string, opts: { version?: number; equal?: boolean } = {}): VMStateScalarField => ({
    name,
    type: 'bool',
    ...opts,
  }),
  varrayUint32Alloc: (
    name: string,
    count: string,
    element: VMStateElementType,
    opts: { version?: number } = {},
  ): VMStateVarrayField => ({ name, type: 'varray_uint32_alloc', count, element, ...opts }),
  custom: <In, Out>(
    name: string,
    info: VMStateInfo<In, Out>,
    opts: { version?: number } = {},
  ): VMStateCustomField => ({
    name,
    type: 'custom',
    info,
    ...opts,
  }),
} as const;

// ---------------------------------------------------------------------------------------------
// VARRAY values

/**
 * What a VARRAY is saved from: its length and its non-zero elements in increasing index order,
 * each as two 32-bit halves (high is 0 for elements narrower than 64 bits). A TCE table's sparse
 * storage is one directly: saving aliases the live entries, as QEMU's pre_save does.
 */
export interface VarraySource {
  readonly length: number;
  forEachNonZero(fn: (index: number, high: number, low: number) => void): void;
}

/** A VarraySource over an array of numbers or bigints. */
export function varrayOf(values: ArrayLike<number> | ArrayLike<bigint>): VarraySource {
  return {
    length: values.length,
    forEachNonZero(fn) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        if (typeof v === 'bigint') {
          const u = BigInt.asUintN(64, v);
          if (u !== 0n) fn(i, Number(u >> 32n), Number(u & 0xffffffffn));
        } else if (v !== 0) {
          fn(i, Math.floor(v / TWO_32) >>> 0, v >>> 0);
        }
      }
    },
  };
}

/**
 * A loaded VARRAY: a view into the snapshot bytes (nothing is copied until a section applies it).
 * Elements read as bigint; forEachNonZero walks the populated blocks only.
 */
export class VarrayView implements VarraySource {
  constructor(
    private readonly bytes: Uint8Array,
    private readonly view: DataView,
    readonly element: VMStateElementType,
    readonly length: number,
    /** Per block: where its elements start in `bytes`, or -1 for an all-zero block. */
    private readonly blocks: Float64Array,
  ) {}

  private get width(): number {
    return ELEMENT_BYTES[this.element];
  }

  get(index: number): bigint {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) return 0n;
    const at = this.blocks[index >>> BLOCK_SHIFT]!;
    if (at < 0) return 0n;
    const p = at + (index & (VARRAY_BLOCK_ELEMENTS - 1)) * this.width;
    switch (this.element) {
      case 'uint8':
        return BigInt(this.bytes[p]!);
      case 'uint16':
        return BigInt(this.view.getUint16(p));
      case 'uint32':
        return BigInt(this.view.getUint32(p));
      case 'uint64':
        return this.view.getBigUint64(p);
    }
  }

  forEachNonZero(fn: (index: number, high: number, low: number) => void): void {
    const width = this.width;
    const view = this.view;
    const bytes = this.bytes;
    for (let b = 0; b < this.blocks.length; b++) {
      const at = this.blocks[b]!;
      if (at < 0) continue;
      const base = b * VARRAY_BLOCK_ELEMENTS;
      const n = Math.min(VARRAY_BLOCK_ELEMENTS, this.length - base);
      for (let i = 0; i < n; i++) {
        const p = at + i * width;
        let high = 0;
        let low: number;
        if (width === 8) {
          high = view.getUint32(p);
          low = view.getUint32(p + 4);
        } else if (width === 4) low = view.getUint32(p);
        else if (width === 2) low = view.getUint16(p);
        else low = bytes[p]!;
        if (high !== 0 || low !== 0) fn(base + i, high, low);
      }
    }
  }

  /** Every element, for small arrays (tests, inspection). */
  toArray(): bigint[] {
    const out = new Array<bigint>(this.length).fill(0n);
    this.forEachNonZero((i, high, low) => {
      out[i] = (BigInt(high) << 32n) | BigInt(low);
    });
    return out;
  }
}

const ELEMENT_BYTES: Record<VMStateElementType, number> = { uint8: 1, uint16: 2, uint32: 4, uint64: 8 };

// ---------------------------------------------------------------------------------------------
// Registry

/** One registered section: what is saved, and into what it loads. */
export interface VMStateSection {
  readonly description: VMStateDescription<object, unknown>;
  readonly instanceId: number;
  readonly opaque: object;
  /** Who registered it (a plugin name), for messages. */
  readonly owner: string;
}

/**
 * The machine's vmstate sections (QEMU's savevm handlers list), in registration order, which is
 * the order they are saved and loaded in. Plugins register theirs in `register(ctx)` through
 * `ctx.vmstate`, or when they create the object the section describes.
 */
export class VmstateRegistry {
  readonly #sections: VMStateSection[] = [];

  /**
   * Registers a section (vmstate_register); a (name, instance id) pair is unique. Returns a
   * function that unregisters it. The description is checked here: a malformed one is a
   * PluginError naming the owner.
   */
  register<T extends object, P>(
    description: VMStateDescription<T, P>,
    instanceId: number,
    opaque: T,
    owner = 'machine',
  ): () => void {
    checkDescription(description as unknown as VMStateDescription, owner);
    if (!Number.isInteger(instanceId) || instanceId < 0 || instanceId > 0xffffffff) {
      throw new PluginError(
        owner,
        'invalid',
        `vmstate section "${description.name}": instance id ${instanceId} is not a u32`,
      );
    }
    if (this.find(description.name, instanceId)) {
      throw new PluginError(
        owner,
        'conflict',
        `vmstate section "${description.name}" instance 0x${instanceId.toString(16)} is registered twice`,
      );
    }
    const section: VMStateSection = {
      description: description as unknown as VMStateDescription<object, unknown>,
      instanceId,
      opaque,
      owner,
    };
    this.#sections.push(section);
    return () => {
      const at = this.#sections.indexOf(section);
      if (at >= 0) this.#sections.splice(at, 1);
    };
  }

  unregister(name: string, instanceId: number): boolean {
    const at = this.#sections.findIndex((s) => s.description.name === name && s.instanceId === instanceId);
    if (at < 0) return false;
    this.#sections.splice(at, 1);
    return true;
  }

  find(name: string, instanceId: number): VMStateSection | undefined {
    return this.#sections.find((s) => s.description.name === name && s.instanceId === instanceId);
  }

  list(): readonly VMStateSection[] {
    return [...this.#sections];
  }
}

const NAME_PATTERN = /^[\x21-\x7e]{1,255}$/;
const SCALAR_TYPES = new Set([
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'int8',
  'int16',
  'int32',
  'int64',
  'bool',
]);

function checkVersion(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function checkFields(fields: readonly VMStateField[], where: string, owner: string): void {
  const bad = (problem: string) => new PluginError(owner, 'invalid', `vmstate ${where}: ${problem}`);
  if (!Array.isArray(fields)) throw bad('fields is not an array');
  const seen = new Map<string, VMStateField>();
  for (const field of fields) {
    if (typeof field?.name !== 'string' || field.name === '') throw bad('a field has no name');
    if (seen.has(field.name)) throw bad(`field ${field.name} appears twice`);
    if (field.version !== undefined && !checkVersion(field.version))
      throw bad(`field ${field.name} has a bad version`);
    if (field.type === 'varray_uint32_alloc') {
      const count = seen.get(field.count);
      if (count?.type !== 'uint32')
        throw bad(`VARRAY ${field.name} counts with "${field.count}", which is not an earlier uint32 field`);
      if ((count.version ?? 0) > (field.version ?? 0))
        throw bad(`VARRAY ${field.name} is present in versions where its count ${field.count} is not`);
      if (!(field.element in ELEMENT_BYTES))
        throw bad(`VARRAY ${field.name} has element type ${field.element}`);
    } else if (field.type === 'custom') {
      if (typeof field.info?.put !== 'function' || typeof field.info?.get !== 'function')
        throw bad(`custom field ${field.name} has no put/get`);
    } else if (!SCALAR_TYPES.has(field.type)) {
      throw bad(`field ${(field as VMStateField).name} has unknown type ${(field as { type: string }).type}`);
    }
    seen.set(field.name, field);
  }
}

function checkDescription(d: VMStateDescription, owner: string): void {
  const bad = (problem: string) =>
    new PluginError(owner, 'invalid', `vmstate section "${String(d?.name)}": ${problem}`);
  if (typeof d?.name !== 'string' || !NAME_PATTERN.test(d.name))
    throw bad('the name must be 1-255 printable characters');
  if (!checkVersion(d.version)) throw bad('version is not a u32');
  const min = d.minimumVersion ?? d.version;
  if (!checkVersion(min) || min > d.version)
    throw bad('minimumVersion must be a u32 no greater than version');
  checkFields(d.fields, `section "${d.name}"`, owner);
  const names = new Set<string>();
  for (const sub of d.subsections ?? []) {
    if (typeof sub?.name !== 'string' || !NAME_PATTERN.test(sub.name))
      throw bad('a subsection has a bad name');
    if (names.has(sub.name)) throw bad(`subsection ${sub.name} appears twice`);
    names.add(sub.name);
    if (!checkVersion(sub.version)) throw bad(`subsection ${sub.name} has a bad version`);
    const subMin = sub.minimumVersion ?? sub.version;
    if (!checkVersion(subMin) || subMin > sub.version)
      throw bad(`subsection ${sub.name} has a bad minimumVersion`);
    if (typeof sub.needed !== 'function') throw bad(`subsection ${sub.name} has no needed()`);
    checkFields(sub.fields, `subsection "${sub.name}" of "${d.name}"`, owner);
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding fields

function putScalar(w: ByteWriter, type: VMStateScalarType, value: unknown, name: string): void {
  const bad = () => new Malformed(`field ${name}: ${describe(value)} is not a ${type}`);
  switch (type) {
    case 'bool':
      if (typeof value !== 'boolean') throw bad();
      w.u8(value ? 1 : 0);
      return;
    case 'uint64':
    case 'int64': {
      const v = typeof value === 'number' && Number.isSafeInteger(value) ? BigInt(value) : value;
      if (typeof v !== 'bigint') throw bad();
      if (type === 'uint64' ? v < 0n || v > U64_MAX : v < -(1n << 63n) || v >= 1n << 63n) throw bad();
      w.u64(v);
      return;
    }
    default: {
      const bits = SCALAR_BITS[type];
      const signed = type.startsWith('int');
      if (typeof value !== 'number' || !Number.isInteger(value)) throw bad();
      const lo = signed ? -(2 ** (bits - 1)) : 0;
      const hi = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
      if (value < lo || value > hi) throw bad();
      const u = value < 0 ? value + 2 ** bits : value;
      if (bits === 8) w.u8(u);
      else if (bits === 16) w.u16(u);
      else w.u32(u);
    }
  }
}

const SCALAR_BITS: Record<string, number> = {
  uint8: 8,
  uint16: 16,
  uint32: 32,
  int8: 8,
  int16: 16,
  int32: 32,
};

function getScalar(r: ByteReader, type: VMStateScalarType, name: string): number | bigint | boolean {
  const what = `field ${name}`;
  switch (type) {
    case 'bool': {
      const b = r.u8(what);
      if (b > 1) throw new Malformed(`field ${name}: bool byte 0x${b.toString(16)} is neither 0 nor 1`);
      return b === 1;
    }
    case 'uint64':
      return r.u64(what);
    case 'int64':
      return BigInt.asIntN(64, r.u64(what));
    case 'uint8':
      return r.u8(what);
    case 'int8':
      return (r.u8(what) << 24) >> 24;
    case 'uint16':
      return r.u16(what);
    case 'int16':
      return (r.u16(what) << 16) >> 16;
    case 'uint32':
      return r.u32(what);
    case 'int32':
      return r.u32(what) | 0;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return `0x${value.toString(16)}`;
  if (typeof value === 'number')
    return Number.isInteger(value) && value >= 0 ? `0x${value.toString(16)}` : String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

function putVarray(w: ByteWriter, field: VMStateVarrayField, value: unknown, count: number): void {
  const name = field.name;
  const width = ELEMENT_BYTES[field.element];
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
  const blocks = Math.ceil(count / VARRAY_BLOCK_ELEMENTS);
  const maxLow = width === 8 || width === 4 ? 0xffffffff : width === 2 ? 0xffff : 0xff;
  let nextBlock = 0;
  let literalBlock = -1;
  let literalAt = 0;
  let last = -1;
  const zeros = (upTo: number) => {
    if (upTo <= nextBlock) return;
    w.u8(VARRAY_ZERO_RUN);
    w.u32(upTo - nextBlock);
    nextBlock = upTo;
  };
  source.forEachNonZero((index, high, low) => {
    if (!(index > last && index < count))
      throw new Malformed(`VARRAY ${name}: element index ${index} is out of order or out of range`);
    if ((width < 8 && high !== 0) || low > maxLow || low < 0 || high < 0 || high > 0xffffffff)
      throw new Malformed(`VARRAY ${name}: element ${index} does not fit in a ${field.element}`);
    last = index;
    const block = Math.floor(index / VARRAY_BLOCK_ELEMENTS);
    if (block !== literalBlock) {
      zeros(block);
      w.u8(VARRAY_LITERAL);
      literalAt = w.reserve(Math.min(VARRAY_BLOCK_ELEMENTS, count - block * VARRAY_BLOCK_ELEMENTS) * width);
      literalBlock = block;
      nextBlock = block + 1;
    }
    const p = literalAt + (index - block * VARRAY_BLOCK_ELEMENTS) * width;
    if (width === 8) {
      w.view.setUint32(p, high);
      w.view.setUint32(p + 4, low);
    } else if (width === 4) w.view.setUint32(p, low);
    else if (width === 2) w.view.setUint16(p, low);
    else w.buf[p] = low;
  });
  zeros(blocks);
}

function getVarray(r: ByteReader, field: VMStateVarrayField, count: number): VarrayView | null {
  if (count === 0) return null;
  const width = ELEMENT_BYTES[field.element];
  const total = Math.ceil(count / VARRAY_BLOCK_ELEMENTS);
  const blocks = new Float64Array(total);
  let b = 0;
  while (b < total) {
    const tag = r.u8(`VARRAY ${field.name} block tag`);
    if (tag === VARRAY_ZERO_RUN) {
      const run = r.u32(`VARRAY ${field.name} zero run`);
      if (run === 0 || run > total - b)
        throw new Malformed(`VARRAY ${field.name}: a run of ${run} zero blocks at block ${b} of ${total}`);
      blocks.fill(-1, b, b + run);
      b += run;
    } else if (tag === VARRAY_LITERAL) {
      const n = Math.min(VARRAY_BLOCK_ELEMENTS, count - b * VARRAY_BLOCK_ELEMENTS);
      r.need(n * width, `VARRAY ${field.name} block ${b}`);
      blocks[b] = r.pos;
      r.pos += n * width;
      b++;
    } else {
      throw new Malformed(`VARRAY ${field.name}: unknown block tag 0x${tag.toString(16)} at block ${b}`);
    }
  }
  return new VarrayView(r.buf, r.view, field.element, count, blocks);
}

/** Writes the fields present in `version`, reading values from `opaque`. */
function putFields(w: ByteWriter, fields: readonly VMStateField[], opaque: object, version: number): void {
  const values = opaque as Record<string, unknown>;
  for (const field of fields) {
    if ((field.version ?? 0) > version) continue;
    const value = values[field.name];
    if (field.type === 'varray_uint32_alloc') {
      putVarray(w, field, value, values[field.count] as number);
    } else if (field.type === 'custom') {
      try {
        field.info.put(w, value);
      } catch (error) {
        throw new Malformed(`field ${field.name} (${field.info.name}): ${messageOf(error)}`);
      }
    } else {
      putScalar(w, field.type, value, field.name);
    }
  }
}

/** Reads the fields present in `version`; EQUAL fields are compared with `opaque`'s values. */
function getFields(
  r: ByteReader,
  fields: readonly VMStateField[],
  opaque: object,
  version: number,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const live = opaque as Record<string, unknown>;
  for (const field of fields) {
    if ((field.version ?? 0) > version) continue;
    if (field.type === 'varray_uint32_alloc') {
      out[field.name] = getVarray(r, field, out[field.count] as number);
    } else if (field.type === 'custom') {
      let value: unknown;
      try {
        value = field.info.get(r);
      } catch (error) {
        throw new Malformed(`field ${field.name} (${field.info.name}): ${messageOf(error)}`);
      }
      out[field.name] = value;
    } else {
      const value = getScalar(r, field.type, field.name);
      if (field.equal) {
        const mine = live[field.name];
        const same =
          typeof mine === 'number' && typeof value === 'bigint' ? BigInt(mine) === value : mine === value;
        if (!same) {
          throw new Malformed(
            `field ${field.name}: ${describe(value)} != ${describe(mine)} (the snapshot's value must equal this machine's)`,
          );
        }
      }
      out[field.name] = value;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The file

/** What snapshotInfo() reports. */
export interface SnapshotInfo {
  readonly formatVersion: number;
  readonly machine: {
    readonly type: string | null;
    readonly ram: bigint;
    readonly maxmem: bigint | null;
  };
  readonly sections: readonly {
    readonly name: string;
    readonly instanceId: number;
    readonly version: number;
    readonly size: number;
  }[];
}

interface HeaderSection {
  name: string;
  instanceId: number;
  version: number;
  size: number;
  crc: number;
}

interface ParsedFile {
  formatVersion: number;
  machine: SnapshotInfo['machine'];
  sections: HeaderSection[];
  /** Where the payload starts in the file. */
  payloadAt: number;
}

function machineIdentity(machine: Machine): SnapshotInfo['machine'] {
  const d = machine.description;
  return { type: d.type ?? null, ram: d.ram, maxmem: d.maxmem ?? null };
}

function hexOrNull(v: bigint | null): string | null {
  return v === null ? null : `0x${v.toString(16)}`;
}

function headerError(reason: string): SnapshotError {
  return new SnapshotError('header', undefined, reason);
}

function parseHex(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(v))
    throw headerError(`${what} is not a 64-bit hex string`);
  return BigInt(v);
}

function parseU32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw headerError(`${what} is not a u32`);
  return v;
}

/** Reads and checks the preamble and the header; the payload is only sized, not read. */
function parseFile(bytes: unknown): ParsedFile {
  if (!(bytes instanceof Uint8Array)) throw headerError('a snapshot is a Uint8Array of bytes');
  if (bytes.length < PREAMBLE_BYTES)
    throw headerError(`truncated: ${bytes.length} bytes, a snapshot has at least ${PREAMBLE_BYTES}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== MAGIC) throw headerError('not a ddw snapshot (bad magic)');
  const formatVersion = view.getUint32(4);
  if (formatVersion !== SNAPSHOT_FORMAT_VERSION)
    throw headerError(
      `format version ${formatVersion} is not supported (this ddw reads ${SNAPSHOT_FORMAT_VERSION})`,
    );
  const headerLength = view.getUint32(8);
  if (bytes.length - PREAMBLE_BYTES < headerLength)
    throw headerError(
      `truncated: the header needs ${headerLength} bytes, ${bytes.length - PREAMBLE_BYTES} are left`,
    );
  const headerBytes = bytes.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength);
  if (crc32(headerBytes) !== view.getUint32(12))
    throw headerError('checksum mismatch: the header is corrupted');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw headerError(`the header is not JSON: ${messageOf(error)}`);
  }
  if (json === null || typeof json !== 'object') throw headerError('the header is not an object');
  const { machine, sections } = json as { machine?: unknown; sections?: unknown };
  if (machine === null || typeof machine !== 'object') throw headerError('machine is missing');
  const m = machine as { type?: unknown; ram?: unknown; maxmem?: unknown };
  if (m.type !== null && typeof m.type !== 'string') throw headerError('machine.type is not a string');
  const identity = {
    type: m.type as string | null,
    ram: parseHex(m.ram, 'machine.ram'),
    maxmem: m.maxmem === null ? null : parseHex(m.maxmem, 'machine.maxmem'),
  };
  if (!Array.isArray(sections)) throw headerError('sections is not a list');
  const list: HeaderSection[] = [];
  let payloadSize = 1; // QEMU_VM_EOF
  for (const [i, s] of sections.entries()) {
    if (s === null || typeof s !== 'object') throw headerError(`sections[${i}] is not an object`);
    const e = s as Record<string, unknown>;
    if (typeof e.name !== 'string' || !NAME_PATTERN.test(e.name))
      throw headerError(`sections[${i}].name is bad`);
    const entry: HeaderSection = {
      name: e.name,
      instanceId: parseU32(e.instanceId, `sections[${i}].instanceId`),
      version: parseU32(e.version, `sections[${i}].version`),
      size: parseU32(e.size, `sections[${i}].size`),
      crc: parseU32(e.crc, `sections[${i}].crc`),
    };
    if (list.some((o) => o.name === entry.name && o.instanceId === entry.instanceId))
      throw headerError(`section "${entry.name}" instance 0x${entry.instanceId.toString(16)} appears twice`);
    list.push(entry);
    payloadSize += entry.size;
  }
  const payloadAt = PREAMBLE_BYTES + headerLength;
  const have = bytes.length - payloadAt;
  if (have < payloadSize) {
    // Name the first section the file cuts into.
    let at = 0;
    for (const s of list) {
      if (at + s.size > have)
        throw new SnapshotError(
          s.name,
          s.instanceId,
          `truncated: the file ends ${have - at} bytes into this section of ${s.size}`,
        );
      at += s.size;
    }
    throw headerError('truncated: the end-of-stream marker is missing');
  }
  if (have > payloadSize)
    throw headerError(`${have - payloadSize} unexpected bytes after the end of the stream`);
  if (bytes[bytes.length - 1] !== QEMU_VM_EOF) throw headerError('the stream does not end with QEMU_VM_EOF');
  return { formatVersion, machine: identity, sections: list, payloadAt };
}

/**
 * Checks every section's bytes against the CRC32 the header gives for it, in header order (the
 * header's own CRC was checked by parseFile); returns where each section starts in the file.
 */
function checkSectionCrcs(bytes: Uint8Array, file: ParsedFile): number[] {
  let at = file.payloadAt;
  const offsets: number[] = [];
  for (const entry of file.sections) {
    if (crc32(bytes.subarray(at, at + entry.size)) !== entry.crc)
      throw new SnapshotError(entry.name, entry.instanceId, 'checksum mismatch: the section is corrupted');
    offsets.push(at);
    at += entry.size;
  }
  return offsets;
}

/**
 * The file's format version, machine identity and sections, without building or loading anything.
 * The file is verified as loadSnapshot verifies it before decoding: preamble, header CRC, header,
 * size, and every section's CRC, with the same SnapshotError for the same fault. What it cannot
 * check without a machine (identity, section list, versions, field contents) is left to a load.
 */
export function snapshotInfo(bytes: Uint8Array): SnapshotInfo {
  let parsed: ParsedFile;
  try {
    parsed = parseFile(bytes);
    checkSectionCrcs(bytes, parsed);
  } catch (error) {
    throw asSnapshotError('header', undefined, error, 'malformed: ');
  }
  return {
    formatVersion: parsed.formatVersion,
    machine: parsed.machine,
    sections: parsed.sections.map(({ name, instanceId, version, size }) => ({
      name,
      instanceId,
      version,
      size,
    })),
  };
}

function expectLive(machine: Machine, action: string): void {
  if (machine.state !== 'realized' && machine.state !== 'running') {
    throw new DdwError('MACHINE_STATE', `cannot ${action} a machine that is ${machine.state}`);
  }
}

/**
 * Saves the machine: every registered section, in registration order, after its pre_save hook.
 * The result loads into a machine built from the same description (loadSnapshot).
 */
export function saveSnapshot(machine: Machine): Uint8Array {
  expectLive(machine, 'save');
  const w = new ByteWriter();
  const header: Record<string, unknown>[] = [];
  for (const [index, section] of machine.vmstate.list().entries()) {
    const d = section.description;
    const start = w.pos;
    try {
      d.preSave?.(section.opaque);
      w.u8(QEMU_VM_SECTION_FULL);
      w.u32(index);
      w.shortString(d.name);
      w.u32(section.instanceId);
      w.u32(d.version);
      putFields(w, d.fields, section.opaque, d.version);
      for (const sub of d.subsections ?? []) {
        if (!sub.needed(section.opaque)) continue;
        w.u8(QEMU_VM_SUBSECTION);
        w.shortString(sub.name);
        w.u32(sub.version);
        putFields(w, sub.fields, section.opaque, sub.version);
      }
      w.u8(QEMU_VM_SECTION_FOOTER);
      w.u32(index);
      d.postSave?.(section.opaque);
    } catch (error) {
      throw new SnapshotError(d.name, section.instanceId, `cannot be saved: ${messageOf(error)}`, {
        cause: error,
      });
    }
    const size = w.pos - start;
    header.push({
      name: d.name,
      instanceId: section.instanceId,
      version: d.version,
      size,
      crc: crc32(w.buf.subarray(start, w.pos)),
    });
  }
  w.u8(QEMU_VM_EOF);
  const identity = machineIdentity(machine);
  const headerBytes = new TextEncoder().encode(
    JSON.stringify({
      machine: { type: identity.type, ram: hexOrNull(identity.ram), maxmem: hexOrNull(identity.maxmem) },
      sections: header,
    }),
  );
  const out = new Uint8Array(PREAMBLE_BYTES + headerBytes.length + w.pos);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC);
  view.setUint32(4, SNAPSHOT_FORMAT_VERSION);
  view.setUint32(8, headerBytes.length);
  view.setUint32(12, crc32(headerBytes));
  out.set(headerBytes, PREAMBLE_BYTES);
  out.set(w.buf.subarray(0, w.pos), PREAMBLE_BYTES + headerBytes.length);
  return out;
}

interface PlannedSection {
  section: VMStateSection;
  loaded: VMStateLoaded;
  prepared: unknown;
}

/** Decodes one section record of the payload (its bounds and CRC already known good). */
function decodeSection(
  bytes: Uint8Array,
  at: number,
  index: number,
  entry: HeaderSection,
  section: VMStateSection,
): VMStateLoaded {
  const r = new ByteReader(bytes, at, at + entry.size);
  const d = section.description;
  if (r.u8('the section marker') !== QEMU_VM_SECTION_FULL) throw new Malformed('bad section marker');
  if (r.u32('the section index') !== index)
    throw new Malformed('the section index does not match the header');
  if (r.shortString('the section name') !== entry.name)
    throw new Malformed('the section name does not match the header');
  if (r.u32('the instance id') !== entry.instanceId)
    throw new Malformed('the instance id does not match the header');
  const version = r.u32('the version id');
  if (version !== entry.version) throw new Malformed('the version id does not match the header');
  const fields = getFields(r, d.fields, section.opaque, version);
  const subsections: Record<string, Record<string, unknown>> = {};
  while (r.remaining > 0 && r.buf[r.pos] === QEMU_VM_SUBSECTION) {
    r.pos++;
    const name = r.shortString('a subsection name');
    const sub = d.subsections?.find((s) => s.name === name);
    if (!sub) throw new Malformed(`unknown subsection "${name}"`);
    if (name in subsections) throw new Malformed(`subsection "${name}" appears twice`);
    const subVersion = r.u32(`subsection ${name} version`);
    const min = sub.minimumVersion ?? sub.version;
    if (subVersion < min || subVersion > sub.version)
      throw new Malformed(
        `subsection "${name}" version ${subVersion} is not supported (this machine loads ${min}..${sub.version})`,
      );
    try {
      subsections[name] = getFields(r, sub.fields, section.opaque, subVersion);
    } catch (error) {
      throw new Malformed(`subsection "${name}": ${messageOf(error)}`);
    }
  }
  if (r.u8('the section footer') !== QEMU_VM_SECTION_FOOTER) throw new Malformed('bad section footer');
  if (r.u32('the section footer index') !== index) throw new Malformed('the footer index does not match');
  if (r.remaining !== 0) throw new Malformed(`${r.remaining} bytes left over after the section footer`);
  return { version, fields, subsections };
}

/** Everything a load checks, in order; nothing of the machine changes. */
function planLoad(machine: Machine, bytes: Uint8Array): PlannedSection[] {
  const file = parseFile(bytes);
  const mine = machineIdentity(machine);
  if (file.machine.type !== mine.type)
    throw headerError(
      `the snapshot is of a ${JSON.stringify(file.machine.type)} machine, this one is ${JSON.stringify(mine.type)}`,
    );
  if (file.machine.ram !== mine.ram)
    throw headerError(
      `the snapshot's machine has 0x${file.machine.ram.toString(16)} bytes of RAM, this one 0x${mine.ram.toString(16)}`,
    );
  if (file.machine.maxmem !== mine.maxmem)
    throw headerError(
      `the snapshot's machine has maxmem ${hexOrNull(file.machine.maxmem)}, this one ${hexOrNull(mine.maxmem)}`,
    );

  // Every section of the snapshot exists here in a version this machine loads, and none is missing.
  const registry = machine.vmstate;
  const matched: VMStateSection[] = [];
  for (const entry of file.sections) {
    const section = registry.find(entry.name, entry.instanceId);
    if (!section) throw new SnapshotError(entry.name, entry.instanceId, 'this machine has no such section');
    const d = section.description;
    const min = d.minimumVersion ?? d.version;
    if (entry.version < min || entry.version > d.version)
      throw new SnapshotError(
        entry.name,
        entry.instanceId,
        `version ${entry.version} is not supported (this machine loads versions ${min}..${d.version})`,
      );
    matched.push(section);
  }
  for (const section of registry.list()) {
    if (!matched.includes(section))
      throw new SnapshotError(section.description.name, section.instanceId, 'missing from the snapshot');
  }

  // Checksums first, so corruption is reported as such rather than as whatever it decodes to.
  const offsets = checkSectionCrcs(bytes, file);

  const planned: PlannedSection[] = [];
  for (const [i, entry] of file.sections.entries()) {
    const section = matched[i]!;
    let loaded: VMStateLoaded;
    try {
      loaded = decodeSection(bytes, offsets[i]!, i, entry, section);
    } catch (error) {
      throw asSnapshotError(entry.name, entry.instanceId, error, '');
    }
    planned.push({ section, loaded, prepared: undefined });
  }
  for (const p of planned) {
    const d = p.section.description;
    try {
      p.prepared = d.validate?.(p.section.opaque, p.loaded);
    } catch (error) {
      throw asSnapshotError(d.name, p.section.instanceId, error, 'refused: ');
    }
  }
  return planned;
}

function asSnapshotError(
  section: string,
  instanceId: number | undefined,
  error: unknown,
  prefix: string,
): SnapshotError {
  if (error instanceof SnapshotError) return error;
  const reason = error instanceof Malformed ? error.message : `${prefix}${messageOf(error)}`;
  return new SnapshotError(section, instanceId, reason, { cause: error });
}

/**
 * Loads a snapshot into `machine`, which must have been built from the same description. All or
 * nothing: a truncated, corrupted, wrong-version or wrong-machine snapshot throws a SnapshotError
 * naming the section and the reason, and the machine is left exactly as it was. Only once every
 * section has been decoded and validated do the post_load hooks run, in section order.
 */
export function loadSnapshot(machine: Machine, bytes: Uint8Array): void {
  expectLive(machine, 'load a snapshot into');
  let planned: PlannedSection[];
  try {
    planned = planLoad(machine, bytes);
  } catch (error) {
    throw asSnapshotError('header', undefined, error, 'malformed: ');
  }
  for (const p of planned) {
    const d = p.section.description;
    try {
      d.postLoad?.(p.section.opaque, p.loaded, p.prepared);
    } catch (error) {
      // Everything that can be refused was refused before this point: this is a model bug, and
      // the machine may be partly loaded, so it is not reported as a refused snapshot.
      throw new DdwError(
        'SNAPSHOT_APPLY',
        `post_load of section "${d.name}" (instance 0x${p.section.instanceId.toString(16)}) failed after the snapshot was validated; the machine is partly loaded: ${messageOf(error)}`,
        { cause: error },
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Guest RAM

/** QEMU's RAM stream flags (migration/ram.c): a page record, and the end of the RAM stream. */
const RAM_SAVE_FLAG_PAGE = 0x08;
const RAM_SAVE_FLAG_EOS = 0x10;
/** Guest RAM is written in 64 KiB chunks: the sparse backing's chunk size. */
export const RAM_SNAPSHOT_CHUNK = 1 << 16;

/** The pages of a loaded RAM section: 64 KiB chunks as views into the snapshot. */
export interface RamImage {
  readonly chunks: readonly { readonly offset: number; readonly data: Uint8Array }[];
}

function allZero(chunk: Uint8Array): boolean {
  const words =
    chunk.byteOffset % 4 === 0 && chunk.length % 4 === 0
      ? new Uint32Array(chunk.buffer, chunk.byteOffset, chunk.length / 4)
      : chunk;
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/**
 * The sparse RAM encoding: per touched, non-zero 64 KiB chunk a be64 (offset | PAGE) and its
 * bytes, in increasing offset order, then be64 EOS. Untouched chunks cost nothing.
 */
export const SPARSE_RAM_INFO: VMStateInfo<SparseRam, RamImage> = {
  name: 'sparse-ram',
  put(w, ram) {
    for (const [offset, chunk] of ram.chunks()) {
      if (allZero(chunk)) continue;
      w.u64Halves(Math.floor(offset / TWO_32), ((offset % TWO_32) | RAM_SAVE_FLAG_PAGE) >>> 0);
      w.bytes(chunk);
    }
    w.u64Halves(0, RAM_SAVE_FLAG_EOS);
  },
  get(r) {
    const chunks: { offset: number; data: Uint8Array }[] = [];
    let last = -1;
    for (;;) {
      const high = r.u32();
      const low = r.u32();
      const flags = low & 0xffff;
      const offset = high * TWO_32 + (low - flags);
      if (flags === RAM_SAVE_FLAG_EOS) {
        if (offset !== 0) r.fail(`the end-of-RAM record carries offset 0x${offset.toString(16)}`);
        break;
      }
      if (flags !== RAM_SAVE_FLAG_PAGE) r.fail(`unknown RAM record flags 0x${flags.toString(16)}`);
      if (high >= 0x100000) r.fail(`RAM offset 0x${offset.toString(16)} is beyond 2^52`);
      if (offset <= last) r.fail(`RAM chunk 0x${offset.toString(16)} is out of order`);
      last = offset;
      chunks.push({ offset, data: r.bytes(RAM_SNAPSHOT_CHUNK) });
    }
    return { chunks };
  },
};

/** The opaque of the RAM section: the RAM's size (EQUAL) and its backing. */
class RamOpaque {
  constructor(readonly region: RamRegion) {}
  get size(): bigint {
    return this.region.size;
  }
  get pages(): SparseRam {
    return this.region.ram;
  }
}

/** Guest RAM as a section: "ram", version 1, its size (must be equal) and its touched chunks. */
export const RAM_VMSTATE: VMStateDescription<RamOpaque, RamImage> = {
  name: 'ram',
  version: 1,
  fields: [VMState.uint64('size', { equal: true }), VMState.custom('pages', SPARSE_RAM_INFO)],
  validate(opaque, loaded) {
    const image = loaded.fields.pages as RamImage;
    const limit = opaque.region.ram.size;
    for (const { offset } of image.chunks) {
      if (offset >= limit)
        throw new Error(
          `RAM chunk at 0x${offset.toString(16)} lies beyond the RAM (0x${limit.toString(16)} bytes)`,
        );
    }
    return image;
  },
  postLoad(opaque, _loaded, image) {
    const ram = opaque.region.ram;
    ram.clear();
    for (const { offset, data } of image.chunks) {
      ram.write(offset, data, 0, Math.min(RAM_SNAPSHOT_CHUNK, ram.size - offset));
    }
  },
};

/** Registers guest RAM's section (the machine does this for its RAM region). */
export function registerRamVmstate(
  registry: VmstateRegistry,
  region: RamRegion,
  owner = '@ddw/machine',
): () => void {
  return registry.register(RAM_VMSTATE, 0, new RamOpaque(region), owner);
}
