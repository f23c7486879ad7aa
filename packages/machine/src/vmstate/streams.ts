import { crc32 } from './crc.js';
import { Malformed, PassThrough } from './errors.js';

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

/**
 * Where writeSnapshot puts the file, in order, as it is encoded. `chunk` is only valid during the
 * call: the writer reuses its memory afterwards, so a sink that keeps it must copy it.
 */
export interface SnapshotSink {
  write(chunk: Uint8Array): void;
}

/**
 * A snapshot file read at random: `size` bytes, of which `read` returns `length` bytes from
 * `offset` (never asked beyond `size`). What it returns may be kept (a loaded section keeps views
 * into it), so it must not be reused. An error it throws leaves loadSnapshot / snapshotInfo as is.
 */
export interface SnapshotSource {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
}

/** How much writeSnapshot buffers before it hands the bytes to the sink. */
export const SNAPSHOT_WRITE_BUFFER = 1 << 20;
/** The writer's first buffer; it grows (doubling) to SNAPSHOT_WRITE_BUFFER before it flushes. */
const INITIAL_BUFFER = 1 << 16;

/**
 * A SnapshotWriter into a sink through one bounded buffer, keeping a running CRC32 of the bytes
 * written between beginCrc() and endCrc(). `reserve` hands out contiguous room in the buffer
 * (at most SNAPSHOT_WRITE_BUFFER bytes), valid until the next write.
 */
export class StreamWriter implements SnapshotWriter {
  buf: Uint8Array;
  view: DataView;
  pos = 0;
  /** Bytes handed to the sink so far. */
  private flushed = 0;
  /**
   * Every byte of `buf` at or after both this and `pos` is zero: never written since the buffer
   * was allocated (writes only ever go below `pos`), so a reservation there needs no clearing.
   */
  private zeroFrom = 0;
  /** Where the checksummed bytes not yet in `crc` start in `buf`; -1 when nothing is summed. */
  private crcFrom = -1;
  private crc = 0;

  /**
   * `sinkKeeps`: the sink keeps every chunk as it is (no copy), so each flush starts a new buffer
   * instead of reusing the old one.
   */
  constructor(
    private readonly sink: SnapshotSink,
    private readonly sinkKeeps = false,
  ) {
    this.buf = new Uint8Array(INITIAL_BUFFER);
    this.view = new DataView(this.buf.buffer);
  }

  /** Bytes written so far, flushed or not: the offset in the file of the next byte. */
  get offset(): number {
    return this.flushed + this.pos;
  }

  beginCrc(): void {
    this.crcFrom = this.pos;
    this.crc = 0;
  }

  /** The CRC32 of what was written since beginCrc(). */
  endCrc(): number {
    const crc = crc32(this.buf.subarray(this.crcFrom, this.pos), this.crc);
    this.crcFrom = -1;
    return crc;
  }

  /**
   * Hands what is buffered to the sink (`last`: nothing more will be written). What the sink
   * throws comes out as a PassThrough.
   */
  flush(last = false): void {
    if (this.pos === 0) return;
    if (this.crcFrom >= 0) {
      this.crc = crc32(this.buf.subarray(this.crcFrom, this.pos), this.crc);
      this.crcFrom = 0;
    }
    const chunk = this.buf.subarray(0, this.pos);
    this.flushed += this.pos;
    if (this.sinkKeeps && !last) {
      this.buf = new Uint8Array(SNAPSHOT_WRITE_BUFFER);
      this.view = new DataView(this.buf.buffer);
      this.zeroFrom = 0;
    } else if (this.zeroFrom < this.pos) {
      this.zeroFrom = this.pos;
    }
    this.pos = 0;
    try {
      this.sink.write(chunk);
    } catch (error) {
      throw new PassThrough(error);
    }
  }

  /** Makes room for `n` more contiguous bytes (n <= SNAPSHOT_WRITE_BUFFER). */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.buf.length < SNAPSHOT_WRITE_BUFFER) {
      // Still small: grow instead of flushing, so that a small snapshot is one chunk.
      let size = this.buf.length * 2;
      while (size < this.pos + n && size < SNAPSHOT_WRITE_BUFFER) size *= 2;
      if (size >= this.pos + n) {
        const next = new Uint8Array(size);
        next.set(this.buf.subarray(0, this.pos));
        this.buf = next;
        this.view = new DataView(next.buffer);
        this.zeroFrom = this.pos;
        return;
      }
    }
    this.flush();
    if (n > this.buf.length) {
      this.buf = new Uint8Array(SNAPSHOT_WRITE_BUFFER);
      this.view = new DataView(this.buf.buffer);
      this.zeroFrom = 0;
    }
    if (n > this.buf.length) throw new Error(`cannot reserve ${n} contiguous bytes`);
  }

  u8(v: number): void {
    if (this.pos >= this.buf.length) this.ensure(1);
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
    let at = 0;
    while (at < data.length) {
      if (this.pos === this.buf.length) this.ensure(Math.min(data.length - at, SNAPSHOT_WRITE_BUFFER));
      const n = Math.min(data.length - at, this.buf.length - this.pos);
      this.buf.set(n === data.length ? data : data.subarray(at, at + n), this.pos);
      this.pos += n;
      at += n;
    }
  }

  /** Reserves `n` zeroed contiguous bytes and returns where they start in `buf`. */
  reserve(n: number): number {
    this.ensure(n);
    const at = this.pos;
    // What lies beyond everything ever written to this buffer is still zero.
    const end = at + n;
    const zeroFrom = Math.max(this.zeroFrom, at);
    if (zeroFrom > at) this.buf.fill(0, at, Math.min(end, zeroFrom));
    if (end > this.zeroFrom) this.zeroFrom = end;
    this.pos = end;
    return at;
  }

  shortString(s: string): void {
    const bytes = new TextEncoder().encode(s);
    this.u8(bytes.length);
    this.bytes(bytes);
  }
}

/** Reads one section's bytes (or a v1 header); every read is bounds-checked. */
export class ByteReader implements SnapshotReader {
  readonly view: DataView;

  constructor(
    readonly buf: Uint8Array,
    public pos: number,
    readonly end: number,
    /** The file's format version: what the stream may contain. */
    readonly formatVersion: number,
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

/** How much of a section a checksum pass reads at once. */
export const SNAPSHOT_READ_PIECE = 1 << 20;

/**
 * The file being loaded, as a SnapshotSource checked on every read: in bounds, and the source
 * returns what was asked for. A bad read is a Malformed; what the source throws, a PassThrough.
 */
export class SourceReader {
  readonly size: number;
  /** Reads are copies (a SnapshotSource), not views of bytes the caller holds: they may differ between two reads. */
  readonly isCopy: boolean;
  private readonly source: SnapshotSource;

  constructor(from: unknown) {
    if (from instanceof Uint8Array) {
      const bytes = from;
      this.size = bytes.length;
      this.isCopy = false;
      this.source = { size: bytes.length, read: (offset, length) => bytes.subarray(offset, offset + length) };
      return;
    }
    const source = from as SnapshotSource | null;
    if (
      source === null ||
      typeof source !== 'object' ||
      typeof source.read !== 'function' ||
      !Number.isSafeInteger(source.size) ||
      source.size < 0
    )
      throw new Malformed('a snapshot is a Uint8Array of bytes or a SnapshotSource');
    this.size = source.size;
    this.isCopy = true;
    this.source = source;
  }

  read(offset: number, length: number, what: string): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new Malformed(`${what}: bad position ${offset} + ${length}`);
    if (offset + length > this.size)
      throw new Malformed(
        `truncated: ${what} needs ${length} bytes at ${offset}, the file has ${this.size} bytes`,
      );
    let bytes: Uint8Array;
    try {
      bytes = this.source.read(offset, length);
    } catch (error) {
      throw new PassThrough(error);
    }
    if (!(bytes instanceof Uint8Array) || bytes.length !== length)
      throw new Malformed(
        `truncated: reading ${what} gave ${bytes instanceof Uint8Array ? bytes.length : 'no'} bytes of ${length} (the file changed?)`,
      );
    return bytes;
  }
}
