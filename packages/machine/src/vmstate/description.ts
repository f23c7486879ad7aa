// Section descriptions: what plugins declare (QEMU's VMStateDescription, VMStateField, VMSTATE_* macros).

import type { SnapshotReader, SnapshotWriter } from './streams.js';

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
  /**
   * Reads the value written by version `version` of the section (or subsection) it is in; a
   * malformed stream throws (reader.fail or a short read).
   */
  get(reader: SnapshotReader, version: number): Out;
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

/** Bytes per element of each VARRAY element type. */
export const ELEMENT_BYTES: Record<VMStateElementType, number> = {
  uint8: 1,
  uint16: 2,
  uint32: 4,
  uint64: 8,
};
