/**
 * Migration and snapshots, after QEMU's vmstate (include/migration/vmstate.h, migration/savevm.c):
 * plugins describe their state declaratively as sections (a name, an instance id, a version and a
 * minimum version, typed fields, subsections sent only when `needed`, pre_save / post_load hooks)
 * and register them in the machine's VmstateRegistry; writeSnapshot() streams every section to a
 * sink as it encodes it (saveSnapshot() collects that into one Uint8Array) and loadSnapshot()
 * reads it back, from the bytes or from a SnapshotSource read at random, into a machine of the
 * same description.
 *
 * Loading is all or nothing: the index is read, every section's checksum verified, every section
 * decoded into plain values and checked against the target machine (identity, section list,
 * versions, EQUAL fields, each section's own `validate` hook) before the first post_load runs.
 * post_load hooks must not fail: whatever could make them fail belongs in `validate`.
 *
 * The file, format version 2 (all integers big-endian, as QEMU's stream). It is written in one
 * pass through a bounded buffer, so what is only known once a section is written (its size and
 * CRC) goes in an index after the payload, found through a fixed-size trailer at the very end:
 *
 *   0     "DDWS"                      magic
 *   4     u32 format version          SNAPSHOT_FORMAT_VERSION (2)
 *   8     payload: each section in index order, then QEMU_VM_EOF (0x01). A section is
 *         QEMU_VM_SECTION_FULL (0x04), u32 section index, u8 name length + name, u32 instance id,
 *         u32 version id, its fields, any subsections (QEMU_VM_SUBSECTION 0x05, u8 name length +
 *         name, u32 version id, fields), then QEMU_VM_SECTION_FOOTER (0x7e) and the section index.
 *   I     index: UTF-8 JSON { machine: { type, ram, maxmem }, sections: [{ name, instanceId,
 *         version, size, crc }] }: the machine's identity (ram and maxmem as hex strings) and every
 *         section with its size in bytes (an integer up to 2^53 - 1: no 4 GiB limit) and the CRC32
 *         of those bytes, so a load checks that it is the same machine and names the section a
 *         corruption is in before decoding anything. The sections fill the payload exactly.
 *   N-24  trailer: u64 index offset I, u32 index length, u32 CRC32 of the index, u32 CRC32 of
 *         those 16 bytes, "DDWE" (the end magic); N is the file's size, and the index ends where
 *         the trailer starts.
 *
 * Format version 1 (ddw before streamed snapshots) is still read: "DDWS", u32 1, u32 header length,
 * u32 header CRC32, the same JSON (section sizes u32) as a header, then the payload; the same
 * sections, without affine VARRAY blocks (format-v1.ts).
 *
 * Fields: u8/u16/u32/u64 and their signed forms in their width, bool as one byte (0 or 1), custom
 * fields as their VMStateInfo writes them. A VARRAY_UINT32_ALLOC holds as many elements as its
 * count field says, QEMU-shaped (big-endian elements in index order) but in blocks of
 * VARRAY_BLOCK_ELEMENTS elements (the last one shorter), so that empty stretches and progressions
 * cost nothing: a literal block is 0x01 followed by its elements; a run of all-zero blocks is 0x00
 * followed by a u32 block count (at least 1); a run of affine blocks (uint64 elements, version 2)
 * is 0x02, a u32 block count b (at least 1), the u64 value v of its first element and a u64 stride
 * s below 2^36: element i of those b blocks, counted from the first element of the first, is
 * v + i*s modulo 2^64. A block is written affine when its elements are all non-zero and one
 * progression (found from a source's forEachRun), and consecutive such blocks continuing one
 * progression are one record. The blocks must cover the array exactly; decoded, the array is
 * exactly the elements QEMU's stream would carry. Guest RAM is the section "ram"
 * (SPARSE_RAM_INFO), version 2: only the non-zero 4 KiB pages (QEMU's TARGET_PAGE_SIZE) of the
 * touched chunks of the sparse backing, each as be64 (offset | 0x08) and its bytes, ended by be64
 * 0x10 (QEMU's RAM_SAVE_FLAG_PAGE / _EOS); version 1 wrote 64 KiB chunks the same way.
 *
 * The code, in this folder: crc (CRC32), errors, streams (the writer, the reader, sinks and
 * sources), description (what a section declares), registry, fields, file (the index), format-v1
 * and format-v2, snapshot (save, load, info), ram, and varray/: format (the block layout), source
 * (what a VARRAY is saved from), halves (64-bit arithmetic on halves), encode with its
 * element-encoder and run-encoder, decode, view (the loaded VARRAY) and run-coalescer.
 */

export { crc32 } from './crc.js';
export {
  VMState,
  type VMStateCustomField,
  type VMStateDescription,
  type VMStateElementType,
  type VMStateField,
  type VMStateInfo,
  type VMStateLoaded,
  type VMStateScalarField,
  type VMStateScalarType,
  type VMStateSubsection,
  type VMStateVarrayField,
} from './description.js';
export { SnapshotError } from './errors.js';
export type { SnapshotInfo } from './file.js';
export {
  RAM_SNAPSHOT_CHUNK,
  RAM_VMSTATE,
  type RamImage,
  registerRamVmstate,
  SPARSE_RAM_INFO,
} from './ram.js';
export { type VMStateSection, VmstateRegistry } from './registry.js';
export {
  loadSnapshot,
  SNAPSHOT_FORMAT_VERSION,
  SNAPSHOT_FORMAT_VERSIONS_READ,
  type SnapshotMachine,
  saveSnapshot,
  snapshotInfo,
  writeSnapshot,
} from './snapshot.js';
export {
  SNAPSHOT_WRITE_BUFFER,
  type SnapshotReader,
  type SnapshotSink,
  type SnapshotSource,
  type SnapshotWriter,
} from './streams.js';
export { VARRAY_BLOCK_ELEMENTS, VARRAY_STRIDE_LIMIT } from './varray/format.js';
export { type VarraySource, varrayOf } from './varray/source.js';
export { VarrayView } from './varray/view.js';
