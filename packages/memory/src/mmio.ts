import type { Endianness } from './constants.js';
import { MemTxResult } from './constants.js';
import { InvalidAccessSizeError, MemoryArgumentError, MemoryConfigError } from './errors.js';
import { MemoryRegion } from './region.js';

export type AccessSize = 1 | 2 | 4 | 8;

export interface AccessConstraints {
  /** Smallest access in bytes (default 1). */
  minAccessSize?: AccessSize;
  /** Largest access in bytes (default 4, as QEMU). */
  maxAccessSize?: AccessSize;
  /** Whether accesses not aligned to their size are allowed (default false). */
  unaligned?: boolean;
}

/**
 * Callbacks of an MMIO region (QEMU's MemoryRegionOps). `offset` is relative to the region.
 * A callback may return a MemTxResult other than OK to fail the access, as QEMU's *_with_attrs ops.
 */
export interface MemoryRegionOps {
  read?(offset: bigint, size: AccessSize): bigint | number | { value: bigint | number; result: MemTxResult };
  write?(offset: bigint, value: bigint, size: AccessSize): undefined | MemTxResult;
  /** How the device's values are laid out as bytes (default 'big', ppc64's native order). */
  endianness?: Endianness;
  /** What the modelled device accepts; other accesses fail with an access error. */
  valid?: AccessConstraints;
  /** What the callbacks implement; other valid sizes are emulated with several calls. */
  impl?: Omit<AccessConstraints, 'unaligned'>;
}

const SIZES: readonly AccessSize[] = [1, 2, 4, 8];

/** Throws InvalidAccessSizeError unless `size` is 1, 2, 4 or 8. */
export function checkAccessSize(where: string, size: unknown): asserts size is AccessSize {
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new InvalidAccessSizeError(where, size);
}

/** A region whose accesses call device callbacks (memory_region_init_io). */
export class MmioRegion extends MemoryRegion {
  readonly kind = 'mmio' as const;
  readonly endianness: Endianness;
  readonly validMin: AccessSize;
  readonly validMax: AccessSize;
  readonly unaligned: boolean;
  readonly implMin: AccessSize;
  readonly implMax: AccessSize;

  constructor(
    name: string,
    size: bigint,
    readonly ops: MemoryRegionOps,
  ) {
    super(name, size);
    if (ops === null || typeof ops !== 'object') {
      throw new MemoryArgumentError(
        `new MmioRegion("${name}")`,
        'ops must be an object of callbacks, e.g. { read(offset, size) {...}, write(offset, value, size) {...} }',
      );
    }
    for (const hook of ['read', 'write'] as const) {
      if (ops[hook] !== undefined && typeof ops[hook] !== 'function') {
        throw new MemoryArgumentError(`new MmioRegion("${name}")`, `ops.${hook} must be a function`);
      }
    }
    this.endianness = ops.endianness ?? 'big';
    this.validMin = ops.valid?.minAccessSize ?? 1;
    this.validMax = ops.valid?.maxAccessSize ?? 4;
    this.unaligned = ops.valid?.unaligned ?? false;
    this.implMin = ops.impl?.minAccessSize ?? 1;
    this.implMax = ops.impl?.maxAccessSize ?? 4;
    for (const [field, v] of [
      ['valid.minAccessSize', this.validMin],
      ['valid.maxAccessSize', this.validMax],
      ['impl.minAccessSize', this.implMin],
      ['impl.maxAccessSize', this.implMax],
    ] as const) {
      if (!SIZES.includes(v)) throw new MemoryConfigError(name, `${field} must be 1, 2, 4 or 8, got ${v}`);
    }
    if (this.validMin > this.validMax || this.implMin > this.implMax) {
      throw new MemoryConfigError(name, 'a minAccessSize is larger than its maxAccessSize');
    }
  }

  /** The largest access the device accepts at `offset` for up to `remaining` bytes (memory_access_size). */
  accessSizeAt(offset: bigint, remaining: number): AccessSize {
    let size: number = this.validMax;
    while (size > remaining) size >>= 1;
    if (!this.unaligned) {
      const misalign = Number(offset & 7n);
      if (misalign !== 0) size = Math.min(size, misalign & -misalign);
    }
    return Math.max(size, 1) as AccessSize;
  }

  /** One access of `size` bytes whose bytes land in `buf` (memory_region_dispatch_read). */
  readInto(offset: bigint, size: AccessSize, buf: Uint8Array, at: number): MemTxResult {
    checkAccessSize('MmioRegion.readInto', size);
    if (!this.accessValid(offset, size)) {
      buf.fill(0, at, at + size);
      return MemTxResult.DECODE_ERROR;
    }
    let result: MemTxResult = MemTxResult.OK;
    const step = clampSize(size, this.implMin, this.implMax);
    // A callback wider than the access still lays out its bytes from `offset`; keep the first ones.
    const scratch = step > size ? new Uint8Array(step) : null;
    for (let done = 0; done < size; done += step) {
      let value = 0n;
      if (this.ops.read) {
        const r = this.ops.read(offset + BigInt(done), step);
        if (typeof r === 'object') {
          value = BigInt(r.value);
          result |= r.result;
        } else {
          value = BigInt(r);
        }
      }
      if (scratch) {
        storeBytes(scratch, 0, step, value, this.endianness);
        buf.set(scratch.subarray(0, size), at);
      } else {
        storeBytes(buf, at + done, step, value, this.endianness);
      }
    }
    return result;
  }

  /** One access of `size` bytes taken from `buf` (memory_region_dispatch_write). */
  writeFrom(offset: bigint, size: AccessSize, buf: Uint8Array, at: number): MemTxResult {
    checkAccessSize('MmioRegion.writeFrom', size);
    if (!this.accessValid(offset, size)) return MemTxResult.DECODE_ERROR;
    let result: MemTxResult = MemTxResult.OK;
    const step = clampSize(size, this.implMin, this.implMax);
    // A callback wider than the access gets the access's bytes first and zeros after them.
    const scratch = step > size ? new Uint8Array(step) : null;
    if (scratch) scratch.set(buf.subarray(at, at + size));
    for (let done = 0; done < size; done += step) {
      const value = scratch
        ? loadBytes(scratch, 0, step, this.endianness)
        : loadBytes(buf, at + done, step, this.endianness);
      result |= this.ops.write?.(offset + BigInt(done), value, step) ?? MemTxResult.OK;
    }
    return result;
  }

  private accessValid(offset: bigint, size: AccessSize): boolean {
    if (size < this.validMin || size > this.validMax) return false;
    if (!this.unaligned && (offset & BigInt(size - 1)) !== 0n) return false;
    return true;
  }
}

function clampSize(size: AccessSize, min: AccessSize, max: AccessSize): AccessSize {
  return Math.min(Math.max(size, min), max) as AccessSize;
}

/** Writes the low `size` bytes of `value` at `buf[at]` in the given byte order. */
export function storeBytes(
  buf: Uint8Array,
  at: number,
  size: number,
  value: bigint,
  endian: Endianness,
): void {
  checkAccessSize('storeBytes', size);
  if (typeof value !== 'bigint') throw new MemoryArgumentError('storeBytes', 'value must be a bigint');
  let v = value;
  for (let i = 0; i < size; i++) {
    const byte = Number(v & 0xffn);
    buf[endian === 'little' ? at + i : at + size - 1 - i] = byte;
    v >>= 8n;
  }
}

/** Reads `size` bytes at `buf[at]` as an unsigned value in the given byte order. */
export function loadBytes(buf: Uint8Array, at: number, size: number, endian: Endianness): bigint {
  checkAccessSize('loadBytes', size);
  let v = 0n;
  for (let i = 0; i < size; i++) {
    const byte = buf[endian === 'little' ? at + size - 1 - i : at + i]!;
    v = (v << 8n) | BigInt(byte);
  }
  return v;
}
