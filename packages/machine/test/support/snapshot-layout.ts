/**
 * Snapshot files taken apart and put back together, for tests: the layout of a version 1 or 2
 * file, a file rewritten with its checksums recomputed (as a broken or foreign writer would write
 * it), and a version 2 file turned into version 1 (the old writer's framing: preamble, header
 * length and CRC, the JSON header, then the same payload).
 *
 * Written from the format description (vmstate/index.ts), independently of the reader.
 */
import { crc32 } from '../../src/vmstate/crc.js';

export interface IndexJson {
  machine: Record<string, unknown>;
  sections: { name: string; instanceId: number; version: number; size: number; crc: number }[];
}

export interface Layout {
  formatVersion: number;
  index: IndexJson;
  /** Where the payload (the first section) starts. */
  payloadAt: number;
  /** Where the index (v2) or the header (v1) starts. */
  indexAt: number;
  /** Where each section starts in the file. */
  starts: number[];
}

const TRAILER_BYTES = 24;
const TRAILER_MAGIC = 0x44445745; // "DDWE"
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function layout(bytes: Uint8Array): Layout {
  const view = dv(bytes);
  const formatVersion = view.getUint32(4);
  let indexAt: number;
  let indexLength: number;
  let payloadAt: number;
  if (formatVersion === 1) {
    indexAt = 16;
    indexLength = view.getUint32(8);
    payloadAt = 16 + indexLength;
  } else {
    const t = bytes.length - TRAILER_BYTES;
    indexAt = view.getUint32(t) * 2 ** 32 + view.getUint32(t + 4);
    indexLength = view.getUint32(t + 8);
    payloadAt = 8;
  }
  const index = JSON.parse(new TextDecoder().decode(bytes.subarray(indexAt, indexAt + indexLength)));
  const starts: number[] = [];
  let at = payloadAt;
  for (const s of index.sections) {
    starts.push(at);
    at += s.size;
  }
  return { formatVersion, index, payloadAt, indexAt, starts };
}

/** The payload (sections and QEMU_VM_EOF) of a file. */
export function payloadOf(bytes: Uint8Array): Uint8Array {
  const l = layout(bytes);
  const end = l.formatVersion === 1 ? bytes.length : l.indexAt;
  return bytes.slice(l.payloadAt, end);
}

/** A version 2 file of `payload` with `index` (the sections' CRCs as given). */
export function writeV2(index: IndexJson, payload: Uint8Array): Uint8Array {
  const indexBytes = new TextEncoder().encode(JSON.stringify(index));
  const out = new Uint8Array(8 + payload.length + indexBytes.length + TRAILER_BYTES);
  const view = dv(out);
  view.setUint32(0, 0x44445753);
  view.setUint32(4, 2);
  out.set(payload, 8);
  const indexAt = 8 + payload.length;
  out.set(indexBytes, indexAt);
  const t = indexAt + indexBytes.length;
  view.setUint32(t, Math.floor(indexAt / 2 ** 32));
  view.setUint32(t + 4, indexAt % 2 ** 32);
  view.setUint32(t + 8, indexBytes.length);
  view.setUint32(t + 12, crc32(indexBytes));
  view.setUint32(t + 16, crc32(out.subarray(t, t + 16)));
  view.setUint32(t + 20, TRAILER_MAGIC);
  return out;
}

/** A version 1 file of `payload` with `index` as its header: what ddw wrote before version 2. */
export function writeV1(index: IndexJson, payload: Uint8Array): Uint8Array {
  const headerBytes = new TextEncoder().encode(JSON.stringify(index));
  const out = new Uint8Array(16 + headerBytes.length + payload.length);
  const view = dv(out);
  view.setUint32(0, 0x44445753);
  view.setUint32(4, 1);
  view.setUint32(8, headerBytes.length);
  view.setUint32(12, crc32(headerBytes));
  out.set(headerBytes, 16);
  out.set(payload, 16 + headerBytes.length);
  return out;
}

/**
 * The file rewritten in `formatVersion` (default: its own) after `edit` changed the index and
 * `payloadEdit` the payload (`sectionAt(i)`: where section i starts in the payload), with every
 * section CRC recomputed (sizes stay as the index says).
 */
export function reseal(
  bytes: Uint8Array,
  edit: (index: IndexJson) => void = () => {},
  payloadEdit?: (payload: Uint8Array, sectionAt: (i: number) => number) => void,
  formatVersion?: number,
): Uint8Array {
  const l = layout(bytes);
  const payload = payloadOf(bytes);
  const index: IndexJson = structuredClone(l.index);
  payloadEdit?.(payload, (i) => l.starts[i]! - l.payloadAt);
  let at = 0;
  for (const s of index.sections) {
    s.crc = crc32(payload.subarray(at, at + s.size));
    at += s.size;
  }
  edit(index);
  return (formatVersion ?? l.formatVersion) === 1 ? writeV1(index, payload) : writeV2(index, payload);
}

/** A version 2 file as the old writer wrote the same sections (no affine VARRAY blocks in them). */
export function toV1(bytes: Uint8Array): Uint8Array {
  return reseal(bytes, undefined, undefined, 1);
}
