// The version 2 file: streamed, its index after the payload (see the module comment of vmstate/index.ts).

import { TWO_32 } from '@ddw/memory';
import { crc32 } from './crc.js';
import { headerError } from './errors.js';
import { type ParsedFile, PREAMBLE_BYTES, parseIndex, QEMU_VM_EOF } from './file.js';
import type { SourceReader } from './streams.js';

/** u64 index offset, u32 index length, u32 index CRC32, u32 CRC32 of those 16 bytes, magic. */
export const TRAILER_BYTES = 24;
/** "DDWE": the last four bytes of a version 2 file. */
export const TRAILER_MAGIC = 0x44445745;
/** The smallest version 2 file: preamble, QEMU_VM_EOF, an empty index, the trailer. */
export const V2_MIN_BYTES = PREAMBLE_BYTES + 1 + TRAILER_BYTES;

/** The trailer of an index of `indexLength` bytes at `indexOffset` whose CRC32 is `indexCrc`. */
export function encodeTrailer(indexOffset: number, indexLength: number, indexCrc: number): Uint8Array {
  const trailer = new Uint8Array(TRAILER_BYTES);
  const view = new DataView(trailer.buffer);
  view.setUint32(0, Math.floor(indexOffset / TWO_32));
  view.setUint32(4, indexOffset % TWO_32);
  view.setUint32(8, indexLength);
  view.setUint32(12, indexCrc);
  view.setUint32(16, crc32(trailer.subarray(0, 16)));
  view.setUint32(20, TRAILER_MAGIC);
  return trailer;
}

/**
 * Reads and checks a version 2 file's trailer and index, and that the sections the index lists
 * fill the payload exactly; the sections themselves are only placed, not read.
 */
export function parseV2(src: SourceReader): ParsedFile {
  const size = src.size;
  if (size < V2_MIN_BYTES)
    throw headerError(`truncated: ${size} bytes, a snapshot has at least ${V2_MIN_BYTES}`);
  const trailerAt = size - TRAILER_BYTES;
  const trailer = src.read(trailerAt, TRAILER_BYTES, 'the trailer');
  const view = new DataView(trailer.buffer, trailer.byteOffset, trailer.byteLength);
  if (view.getUint32(20) !== TRAILER_MAGIC) {
    const extra = bytesAfterTrailer(src);
    if (extra > 0) throw headerError(`${extra} unexpected bytes after the end of the snapshot`);
    throw headerError('truncated: the file does not end with the snapshot trailer (or its end is damaged)');
  }
  if (crc32(trailer.subarray(0, 16)) !== view.getUint32(16))
    throw headerError('checksum mismatch: the trailer is corrupted');
  const indexOffset = view.getUint32(0) * TWO_32 + view.getUint32(4);
  const indexLength = view.getUint32(8);
  if (indexOffset + indexLength !== trailerAt || indexOffset < PREAMBLE_BYTES + 1)
    throw headerError(
      `the trailer puts the index (${indexLength} bytes) at ${indexOffset}, but the trailer starts at ${trailerAt}`,
    );
  const index = src.read(indexOffset, indexLength, 'the index');
  if (crc32(index) !== view.getUint32(12)) throw headerError('checksum mismatch: the index is corrupted');
  const { machine, sections } = parseIndex(index, 'index', 'safe');
  let at = PREAMBLE_BYTES;
  for (const s of sections) {
    s.offset = at;
    at += s.size;
  }
  if (at + 1 !== indexOffset)
    throw headerError(
      `the sections (${at - PREAMBLE_BYTES} bytes) and the end-of-stream marker do not fill the payload (${indexOffset - PREAMBLE_BYTES} bytes)`,
    );
  if (src.read(at, 1, 'the end-of-stream marker')[0] !== QEMU_VM_EOF)
    throw headerError('the stream does not end with QEMU_VM_EOF');
  return { formatVersion: 2, machine, sections };
}

/** How far back from the end a complete file followed by other bytes is looked for. */
const APPENDED_SEARCH = 1 << 16;

/**
 * For a file that does not end with a trailer: how many bytes follow a complete trailer found in
 * its last APPENDED_SEARCH bytes (a complete snapshot with something appended), or 0.
 */
function bytesAfterTrailer(src: SourceReader): number {
  const from = Math.max(0, src.size - TRAILER_BYTES - APPENDED_SEARCH);
  const tail = src.read(from, src.size - from, 'the end of the file');
  const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  for (let p = tail.length - TRAILER_BYTES - 1; p >= 0; p--) {
    if (view.getUint32(p + 20) !== TRAILER_MAGIC) continue;
    if (crc32(tail.subarray(p, p + 16)) !== view.getUint32(p + 16)) continue;
    const indexEnd = view.getUint32(p) * TWO_32 + view.getUint32(p + 4) + view.getUint32(p + 8);
    if (indexEnd === from + p) return tail.length - p - TRAILER_BYTES;
  }
  return 0;
}
