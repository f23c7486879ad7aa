// The version 1 file (ddw before streamed snapshots), read only:
//
//   0   "DDWS"                      magic
//   4   u32 format version          1
//   8   u32 header length H
//   12  u32 CRC32 of the header
//   16  header: the JSON index (see file.ts), section sizes u32
//   16+H payload: each section in header order, then QEMU_VM_EOF (0x01)
//
// The sections are encoded as in version 2, without affine VARRAY blocks.

import { crc32 } from './crc.js';
import { headerError, SnapshotError } from './errors.js';
import { type ParsedFile, parseIndex, QEMU_VM_EOF } from './file.js';
import type { SourceReader } from './streams.js';

const V1_PREAMBLE_BYTES = 16;

/** Reads and checks a version 1 file's preamble and header; the payload is only sized, not read. */
export function parseV1(src: SourceReader): ParsedFile {
  const size = src.size;
  if (size < V1_PREAMBLE_BYTES)
    throw headerError(`truncated: ${size} bytes, a snapshot has at least ${V1_PREAMBLE_BYTES}`);
  const preamble = src.read(0, V1_PREAMBLE_BYTES, 'the preamble');
  const view = new DataView(preamble.buffer, preamble.byteOffset, preamble.byteLength);
  const headerLength = view.getUint32(8);
  if (size - V1_PREAMBLE_BYTES < headerLength)
    throw headerError(
      `truncated: the header needs ${headerLength} bytes, ${size - V1_PREAMBLE_BYTES} are left`,
    );
  const headerBytes = src.read(V1_PREAMBLE_BYTES, headerLength, 'the header');
  if (crc32(headerBytes) !== view.getUint32(12))
    throw headerError('checksum mismatch: the header is corrupted');
  const { machine, sections } = parseIndex(headerBytes, 'header', 'u32');
  const payloadAt = V1_PREAMBLE_BYTES + headerLength;
  let payloadSize = 1; // QEMU_VM_EOF
  for (const s of sections) {
    s.offset = payloadAt + payloadSize - 1;
    payloadSize += s.size;
  }
  const have = size - payloadAt;
  if (have < payloadSize) {
    // Name the first section the file cuts into.
    let at = 0;
    for (const s of sections) {
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
  if (src.read(size - 1, 1, 'the end-of-stream marker')[0] !== QEMU_VM_EOF)
    throw headerError('the stream does not end with QEMU_VM_EOF');
  return { formatVersion: 1, machine, sections };
}
