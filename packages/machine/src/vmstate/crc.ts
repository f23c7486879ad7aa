// CRC32 (IEEE 802.3, reflected polynomial 0xedb88320): Node's zlib.crc32 where the runtime has
// it (Node >= 20.16 / 22.3), found at run time so that the package stays importable in a browser;
// the table-driven JavaScript implementation everywhere else, and for short inputs, where a call
// into native code costs more than it saves. Both give the same values.

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

/** The JavaScript CRC32 (eight bytes per step); `crc32` uses it where there is no native one. */
export function crc32Table(bytes: Uint8Array, seed = 0): number {
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

type NativeCrc32 = (data: Uint8Array, value?: number) => number;

/** node:zlib's crc32, looked up without importing any node: module; undefined where there is none. */
function findNativeCrc32(): NativeCrc32 | undefined {
  try {
    const process = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    const zlib = process?.getBuiltinModule?.('node:zlib') as { crc32?: unknown } | undefined;
    return typeof zlib?.crc32 === 'function' ? (zlib.crc32 as NativeCrc32) : undefined;
  } catch {
    return undefined;
  }
}

/** The runtime's native CRC32 (Node's zlib.crc32), if it has one; exported for tests. */
export const nativeCrc32: NativeCrc32 | undefined = findNativeCrc32();

/**
 * Below this many bytes the JavaScript loop is faster than the call into zlib. (zlib also answers
 * 0 for no bytes at all, whatever the seed, where a CRC continued over nothing is the seed.)
 */
const NATIVE_MIN_BYTES = 64;
/** zlib takes a 32-bit length: longer inputs go in pieces of this size. */
const NATIVE_PIECE = 1 << 30;

/** CRC32 of `bytes`; pass the previous result as `seed` to continue over more bytes. */
export function crc32(bytes: Uint8Array, seed = 0): number {
  const native = nativeCrc32;
  if (native === undefined || bytes.length < NATIVE_MIN_BYTES) return crc32Table(bytes, seed);
  if (bytes.length <= NATIVE_PIECE) return native(bytes, seed >>> 0);
  let crc = seed >>> 0;
  for (let at = 0; at < bytes.length; at += NATIVE_PIECE)
    crc = native(bytes.subarray(at, Math.min(bytes.length, at + NATIVE_PIECE)), crc);
  return crc;
}
