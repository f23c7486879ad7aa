import { MAX_RAM_SIZE } from './constants.js';
import { describeValue, MemoryArgumentError, MemoryConfigError, MemoryRangeError } from './errors.js';
import { formatHex } from './format.js';
import { MemoryRegion } from './region.js';

/** log2 of the backing chunk size: 64 KiB, the largest common guest page. */
export const RAM_CHUNK_SHIFT = 16;
export const RAM_CHUNK_SIZE = 1 << RAM_CHUNK_SHIFT;
const CHUNK_MASK = RAM_CHUNK_SIZE - 1;

/**
 * Sparse backing store for RAM: chunks are allocated on first write and untouched memory reads as
 * zeros, so a 1 TiB guest costs what it touches. Offsets are plain numbers (sizes are capped at
 * MAX_RAM_SIZE, so they stay exact).
 */
export class SparseRam {
  readonly #chunks = new Map<number, Uint8Array>();

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new MemoryRangeError(
        'new SparseRam(size)',
        `size ${describeValue(size)} is not a whole number of bytes`,
      );
    }
  }

  /** Bytes actually allocated. */
  get residentBytes(): number {
    return this.#chunks.size * RAM_CHUNK_SIZE;
  }

  get residentChunks(): number {
    return this.#chunks.size;
  }

  /** Copies `length` bytes at `offset` into `dst` at `dstOffset`; untouched bytes read as zero. */
  read(offset: number, dst: Uint8Array, dstOffset: number, length: number): void {
    this.checkSpan('SparseRam.read', offset, length);
    checkBufferSpan('SparseRam.read', dst, dstOffset, length);
    this.forEachSpan(offset, length, (index, inChunk, n, done) => {
      const chunk = this.#chunks.get(index);
      if (chunk) dst.set(chunk.subarray(inChunk, inChunk + n), dstOffset + done);
      else dst.fill(0, dstOffset + done, dstOffset + done + n);
    });
  }

  /** Copies `length` bytes of `src` from `srcOffset` to `offset`. */
  write(offset: number, src: Uint8Array, srcOffset: number, length: number): void {
    this.checkSpan('SparseRam.write', offset, length);
    checkBufferSpan('SparseRam.write', src, srcOffset, length);
    this.forEachSpan(offset, length, (index, inChunk, n, done) => {
      this.chunkForWrite(index).set(src.subarray(srcOffset + done, srcOffset + done + n), inChunk);
    });
  }

  /** Sets `length` bytes at `offset` to `value`; zeroing untouched memory allocates nothing. */
  fill(offset: number, value: number, length: number): void {
    this.checkSpan('SparseRam.fill', offset, length);
    this.forEachSpan(offset, length, (index, inChunk, n) => {
      const chunk = value === 0 ? this.#chunks.get(index) : this.chunkForWrite(index);
      chunk?.fill(value, inChunk, inChunk + n);
    });
  }

  /** Throws MemoryRangeError unless [offset, offset + length) lies inside the store. */
  private checkSpan(where: string, offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.size
    ) {
      throw new MemoryRangeError(
        where,
        `${describeValue(length)} bytes at offset ${describeValue(offset)} are outside the ${this.size} bytes of RAM`,
      );
    }
  }

  /** Splits [offset, offset + length) at chunk boundaries: (chunk index, offset in it, bytes, bytes before). */
  private forEachSpan(
    offset: number,
    length: number,
    fn: (index: number, inChunk: number, n: number, done: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const inChunk = at & CHUNK_MASK;
      const n = Math.min(length - done, RAM_CHUNK_SIZE - inChunk);
      fn(Math.floor(at / RAM_CHUNK_SIZE), inChunk, n, done);
      done += n;
    }
  }

  private chunkForWrite(index: number): Uint8Array {
    let chunk = this.#chunks.get(index);
    if (!chunk) {
      chunk = new Uint8Array(RAM_CHUNK_SIZE);
      this.#chunks.set(index, chunk);
    }
    return chunk;
  }

  /** Drops every chunk: all memory reads as zero again. */
  clear(): void {
    this.#chunks.clear();
  }

  /** The allocated chunks in address order, as [offset, bytes] (for snapshots and inspection). */
  *chunks(): IterableIterator<[number, Uint8Array]> {
    const indices = [...this.#chunks.keys()].sort((a, b) => a - b);
    for (const index of indices) yield [index * RAM_CHUNK_SIZE, this.#chunks.get(index)!];
  }
}

function checkBufferSpan(where: string, buf: unknown, at: number, length: number): void {
  if (!(buf instanceof Uint8Array)) {
    throw new MemoryArgumentError(where, `buffer ${describeValue(buf)} is not a Uint8Array`);
  }
  if (!Number.isSafeInteger(at) || at < 0 || at + length > buf.length) {
    throw new MemoryRangeError(
      where,
      `${length} bytes at buffer offset ${describeValue(at)} do not fit a buffer of ${buf.length} bytes`,
    );
  }
}

export interface RamRegionOptions {
  /** Read-only memory (a ROM): writes are ignored, as QEMU ignores writes to ROM. */
  readonly?: boolean;
  /** Upper bound for later setSize(); the backing is sized for it. Defaults to `size`. */
  maxSize?: bigint;
  /**
   * Device memory mapped as RAM (memory_region_init_ram_device_ptr: a passthrough device's BAR):
   * guest-accessible, but not guest RAM, so VFIO neither pre-registers nor DMA-maps it.
   */
  ramDevice?: boolean;
}

/** Guest RAM (memory_region_init_ram): reads and writes go straight to sparse backing memory. */
export class RamRegion extends MemoryRegion {
  readonly kind = 'ram' as const;
  readonly ram: SparseRam;
  readonly maxSize: bigint;
  readonly ramDevice: boolean;

  constructor(name: string, size: bigint, options: RamRegionOptions = {}) {
    super(name, size);
    if (options === null || typeof options !== 'object') {
      throw new MemoryArgumentError(`new RamRegion("${name}", size, options)`, 'options must be an object');
    }
    if (options.maxSize !== undefined && typeof options.maxSize !== 'bigint') {
      throw new MemoryArgumentError(
        `new RamRegion("${name}", size, options)`,
        `options.maxSize ${describeValue(options.maxSize)} is not a bigint`,
      );
    }
    this.maxSize = options.maxSize ?? size;
    if (this.maxSize > MAX_RAM_SIZE) {
      throw new MemoryConfigError(
        name,
        `RAM of ${formatHex(this.maxSize)} bytes is larger than the 2^52 bytes ddw backs`,
      );
    }
    if (this.maxSize < size) {
      throw new MemoryConfigError(name, 'maxSize is smaller than size');
    }
    this.ram = new SparseRam(Number(this.maxSize));
    this.readonly = options.readonly ?? false;
    this.ramDevice = options.ramDevice ?? false;
  }

  override setSize(size: bigint): void {
    if (size > this.maxSize) {
      throw new MemoryConfigError(
        this.name,
        `cannot grow to ${formatHex(size)}: its maxSize is ${formatHex(this.maxSize)}`,
      );
    }
    super.setSize(size);
  }
}
