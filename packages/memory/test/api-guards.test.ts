import { describe, expect, it } from 'vitest';
import {
  type AccessSize,
  AddressSpace,
  AliasRegion,
  ContainerRegion,
  InvalidAccessSizeError,
  IOMMUNotifier,
  IOMMUNotifierFlag,
  loadBytes,
  MemoryArgumentError,
  MemoryConfigError,
  MemoryRangeError,
  MemTxResult,
  MmioRegion,
  RamRegion,
  SparseRam,
  storeBytes,
} from '../src/index.js';
import { patternMmio } from './helpers.js';

function memory() {
  const root = new ContainerRegion('system', 1n << 40n);
  const ram = new RamRegion('ram', 0x10000n);
  const dev = patternMmio('dev', 0x100n);
  root.addSubregion(0n, ram);
  root.addSubregion(0x10000n, dev.region);
  return { as: new AddressSpace(root, 'memory'), ram, dev };
}

const BAD_SIZES = [0, 3, 5, 16, -1, 2.5, Number.NaN, '4', 4n];

describe('load and store sizes', () => {
  it.each(BAD_SIZES)('AddressSpace.load and store refuse size %s on RAM and on MMIO', (size) => {
    const { as, dev } = memory();
    for (const addr of [0x100n, 0x10000n]) {
      expect(() => as.load(addr, size as AccessSize)).toThrow(InvalidAccessSizeError);
      expect(() => as.store(addr, size as AccessSize, 0x1234n)).toThrow(InvalidAccessSizeError);
    }
    // Nothing reached the device or RAM.
    expect(dev.log).toEqual([]);
    expect(as.load(0x100n, 8).value).toBe(0n);
  });

  it('names the call and the size, and is a RangeError', () => {
    const { as } = memory();
    let caught: unknown;
    try {
      as.load(0n, 3 as AccessSize);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(RangeError);
    expect(caught).toMatchObject({
      name: 'InvalidAccessSizeError',
      code: 'INVALID_ACCESS_SIZE',
      message: 'AddressSpace.load: access size 3 is not 1, 2, 4 or 8 bytes',
    });
  });

  it('MMIO dispatch and the byte helpers refuse them too', () => {
    const { dev } = memory();
    const buf = new Uint8Array(16);
    expect(() => dev.region.readInto(0n, 3 as AccessSize, buf, 0)).toThrow(InvalidAccessSizeError);
    expect(() => dev.region.writeFrom(0n, 16 as AccessSize, buf, 0)).toThrow(InvalidAccessSizeError);
    expect(() => loadBytes(buf, 0, 3, 'big')).toThrow(InvalidAccessSizeError);
    expect(() => storeBytes(buf, 0, 16, 1n, 'big')).toThrow(InvalidAccessSizeError);
  });

  it('still loads and stores every valid size', () => {
    const { as } = memory();
    for (const size of [1, 2, 4, 8] as const) {
      expect(as.store(0x200n, size, 0xa5n)).toBe(MemTxResult.OK);
      expect(as.load(0x200n, size).value).toBe(0xa5n);
    }
  });
});

describe('access arguments', () => {
  it('refuses a number address, a non-bigint value, a bad endianness, a non-buffer', () => {
    const { as } = memory();
    expect(() => as.load(0x100 as unknown as bigint, 4)).toThrow(MemoryArgumentError);
    expect(() => as.load(0x100 as unknown as bigint, 4)).toThrow(
      'AddressSpace.load: address 256 is not a bigint; write it as e.g. 0x1000n',
    );
    expect(() => as.store(0x100n, 4, 5 as unknown as bigint)).toThrow(
      'AddressSpace.store: value 5 is not a bigint',
    );
    expect(() => as.load(0x100n, 4, 'middle' as never)).toThrow(/endianness "middle" is neither/);
    expect(() => as.read(0n, [1, 2] as never)).toThrow(/buffer an array is not a Uint8Array/);
    expect(() => as.write(1 as never, new Uint8Array(1))).toThrow(MemoryArgumentError);
    expect(() => as.translate(1 as never, false)).toThrow(TypeError);
    expect(() => as.accessValid(0n, 1 as never, false)).toThrow(/len must be a bigint/);
  });

  it('keeps out-of-range bigint addresses a decode error, not an exception', () => {
    const { as } = memory();
    expect(as.load(-8n, 8).result).toBe(MemTxResult.DECODE_ERROR);
    expect(as.load(1n << 64n, 8).result).toBe(MemTxResult.DECODE_ERROR);
  });
});

describe('constructors', () => {
  it('AddressSpace needs a root region and a name', () => {
    expect(() => new AddressSpace(undefined as never, 'memory')).toThrow(MemoryArgumentError);
    expect(() => new AddressSpace(undefined as never, 'memory')).toThrow(
      'new AddressSpace(root, "memory"): root is undefined, not a MemoryRegion; pass the region the address space shows, e.g. a ContainerRegion',
    );
    expect(() => new AddressSpace({ name: 'fake' } as never, 'memory')).toThrow(
      /root is an object, not a MemoryRegion/,
    );
    expect(() => new AddressSpace(new ContainerRegion('c', 1n), undefined as never)).toThrow(
      /name must be a non-empty string/,
    );
  });

  it('regions refuse a bad name or size with named errors', () => {
    expect(() => new ContainerRegion(undefined as never, 1n)).toThrow(MemoryArgumentError);
    expect(() => new RamRegion('ram', -1n)).toThrow(MemoryConfigError);
    expect(() => new RamRegion('ram', 4096 as never)).toThrow('ram: size must be a bigint, got 4096');
    expect(() => new RamRegion('ram', 4096n, null as never)).toThrow(/options must be an object/);
    expect(() => new RamRegion('ram', 4096n, { maxSize: 8192 as never })).toThrow(
      /options.maxSize 8192 is not a bigint/,
    );
    expect(() => new MmioRegion('dev', 16n, undefined as never)).toThrow(
      /ops must be an object of callbacks/,
    );
    expect(() => new MmioRegion('dev', 16n, { read: 5 } as never)).toThrow(/ops.read must be a function/);
  });

  it('AliasRegion needs a region target and a bigint offset', () => {
    const ram = new RamRegion('ram', 0x1000n);
    expect(() => new AliasRegion('a', undefined as never, 0n, 16n)).toThrow(
      /target is undefined, not a MemoryRegion/,
    );
    expect(() => new AliasRegion('a', ram, 16 as never, 16n)).toThrow(/offset 16 is not a bigint/);
    expect(() => new AliasRegion('a', ram, 0n, 16n).setOffset(1 as never)).toThrow(MemoryArgumentError);
  });

  it('subregion calls check their arguments', () => {
    const root = new ContainerRegion('root', 1n << 20n);
    expect(() => root.addSubregion(0n, undefined as never)).toThrow(/sub is undefined, not a MemoryRegion/);
    expect(() => root.addSubregion(0 as never, new RamRegion('r', 16n))).toThrow(/offset 0 is not a bigint/);
    expect(() => root.removeSubregion(null as never)).toThrow(MemoryArgumentError);
    expect(() => new RamRegion('r2', 16n).setAddress(4 as never)).toThrow(MemoryArgumentError);
  });

  it('IOMMUNotifier needs a callback and bigint bounds', () => {
    expect(() => new IOMMUNotifier(undefined as never, IOMMUNotifierFlag.MAP)).toThrow(
      /notify is undefined, not a function/,
    );
    expect(() => new IOMMUNotifier(() => {}, IOMMUNotifierFlag.MAP, 0 as never)).toThrow(
      /start and end must be bigints/,
    );
  });
});

describe('SparseRam bounds', () => {
  it('refuses accesses outside the store instead of allocating past its end', () => {
    const ram = new SparseRam(0x1000);
    const buf = new Uint8Array(16);
    expect(() => ram.write(0x1000 - 8, buf, 0, 16)).toThrow(MemoryRangeError);
    expect(() => ram.read(-1, buf, 0, 1)).toThrow(RangeError);
    expect(() => ram.fill(0, 1, 0x1001)).toThrow(
      'SparseRam.fill: 4097 bytes at offset 0 are outside the 4096 bytes of RAM',
    );
    expect(() => ram.read(0, buf, 8, 16)).toThrow(/do not fit a buffer of 16 bytes/);
    expect(ram.residentChunks).toBe(0);
    expect(() => new SparseRam(-1)).toThrow(MemoryRangeError);
  });
});
