import { describe, expect, it } from 'vitest';
import {
  AddressSpace,
  ContainerRegion,
  MemTxResult,
  MmioRegion,
  RAM_CHUNK_SIZE,
  RamRegion,
} from '../src/index.js';
import { patternMmio } from './helpers.js';

function machine() {
  const root = new ContainerRegion('system', 1n << 40n);
  const ramLow = new RamRegion('ram-low', 0x10000n);
  const ramHigh = new RamRegion('ram-high', 0x10000n);
  const dev = patternMmio('dev', 0x100n);
  root.addSubregion(0n, ramLow);
  root.addSubregion(0x10000n, dev.region);
  root.addSubregion(0x10100n, ramHigh);
  return { as: new AddressSpace(root, 'memory'), ramLow, ramHigh, dev };
}

describe('AddressSpace read/write', () => {
  it('writes and reads back a byte range that crosses RAM, MMIO and RAM', () => {
    const { as, dev, ramHigh } = machine();
    const data = Uint8Array.from({ length: 0x210 }, (_, i) => i & 0xff);
    expect(as.write(0xfff8n, data)).toBe(MemTxResult.OK);
    // The MMIO part became the largest aligned accesses the device accepts.
    expect(dev.log).toEqual([
      'w8@0=8090a0b0c0d0e0f',
      ...Array.from({ length: 31 }, (_, i) =>
        expect.stringMatching(new RegExp(`^w8@${((i + 1) * 8).toString(16)}=`)),
      ),
    ]);
    const back = new Uint8Array(0x210);
    expect(as.read(0xfff8n, back)).toBe(MemTxResult.OK);
    expect([...back.subarray(0, 8)]).toEqual([...data.subarray(0, 8)]);
    // MMIO bytes are the device's values in its (big-endian) byte order.
    expect([...back.subarray(8, 16)]).toEqual([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    expect([...back.subarray(0x108)]).toEqual([...data.subarray(0x108)]);
    const direct = new Uint8Array(0x108);
    ramHigh.ram.read(0, direct, 0, 0x108);
    expect([...direct]).toEqual([...data.subarray(0x108)]);
  });

  it('reports an access to nothing as a decode error, reads zeros, and never throws', () => {
    const { as } = machine();
    const buf = new Uint8Array(16).fill(0xaa);
    expect(as.read(0x20100n - 8n, buf)).toBe(MemTxResult.DECODE_ERROR);
    expect([...buf.subarray(8)]).toEqual(new Array(8).fill(0));
    expect(as.write(0x5_0000_0000n, new Uint8Array(4))).toBe(MemTxResult.DECODE_ERROR);
    expect(as.read(0xffff_ffff_ffff_fffcn, new Uint8Array(8))).toBe(MemTxResult.DECODE_ERROR);
  });

  it('loads and stores values in either byte order', () => {
    const { as } = machine();
    expect(as.store(0x100n, 4, 0xdeadbeefn)).toBe(MemTxResult.OK);
    expect(as.load(0x100n, 4).value).toBe(0xdeadbeefn);
    expect(as.load(0x100n, 4, 'little').value).toBe(0xefbeadden);
    expect(as.load(0x100n, 1).value).toBe(0xden);
    expect(as.store(0x200n, 8, 0x0102030405060708n, 'little')).toBe(MemTxResult.OK);
    expect(as.load(0x200n, 8).value).toBe(0x0807060504030201n);
  });

  it('lays out a little-endian device value as little-endian bytes', () => {
    const root = new ContainerRegion('root', 0x1000n);
    const dev = patternMmio('le', 0x10n, { endianness: 'little' });
    root.addSubregion(0n, dev.region);
    const as = new AddressSpace(root, 'as');
    const buf = new Uint8Array(4);
    as.read(0n, buf);
    expect([...buf]).toEqual([0x88, 0x77, 0x66, 0x55]);
    expect(as.load(0n, 4, 'little').value).toBe(0x55667788n);
  });

  it('enforces the access sizes a device accepts and emulates the ones it implements', () => {
    const calls: string[] = [];
    const dev = new MmioRegion('regs', 0x100n, {
      valid: { minAccessSize: 2, maxAccessSize: 4 },
      impl: { minAccessSize: 4, maxAccessSize: 4 },
      read(offset, size) {
        calls.push(`r${size}@${offset}`);
        return 0xa1b2c3d4;
      },
      write(offset, value, size) {
        calls.push(`w${size}@${offset}=${value.toString(16)}`);
        return undefined;
      },
    });
    const root = new ContainerRegion('root', 0x1000n);
    root.addSubregion(0n, dev);
    const as = new AddressSpace(root, 'as');
    // A 1-byte access is below what the device accepts.
    expect(as.load(0n, 1).result).toBe(MemTxResult.DECODE_ERROR);
    // A 2-byte read is served by one 4-byte callback, keeping the first two bytes.
    expect(as.load(4n, 2)).toEqual({ value: 0xa1b2n, result: MemTxResult.OK });
    // A misaligned access is refused.
    expect(as.load(6n, 4).result).toBe(MemTxResult.DECODE_ERROR);
    expect(as.store(8n, 2, 0xbeefn)).toBe(MemTxResult.OK);
    expect(calls).toEqual(['r4@4', 'w4@8=beef0000']);
  });

  it('refuses writes to ROM and leaves it unchanged', () => {
    const root = new ContainerRegion('root', 0x10000n);
    const rom = new RamRegion('rom', 0x1000n, { readonly: true });
    rom.ram.write(0, Uint8Array.of(1, 2, 3, 4), 0, 4);
    root.addSubregion(0n, rom);
    const as = new AddressSpace(root, 'as');
    expect(as.write(0n, Uint8Array.of(9, 9))).toBe(MemTxResult.DECODE_ERROR);
    expect(as.load(0n, 4).value).toBe(0x01020304n);
    expect(as.accessValid(0n, 4n, true)).toBe(false);
    expect(as.accessValid(0n, 4n, false)).toBe(true);
    expect(as.accessValid(0xff0n, 0x20n, false)).toBe(false);
  });
});

describe('sparse RAM', () => {
  it('backs a 1 TiB region with only the chunks that were written', () => {
    const tib = 1n << 40n;
    const ram = new RamRegion('ram', tib);
    const root = new ContainerRegion('system', tib);
    root.addSubregion(0n, ram);
    const as = new AddressSpace(root, 'memory');
    const spots = [0n, 0x23_4567_89abn, tib - 8n];
    for (const [i, addr] of spots.entries())
      expect(as.store(addr, 8, BigInt(i + 1) * 0x0101010101010101n)).toBe(0);
    for (const [i, addr] of spots.entries())
      expect(as.load(addr, 8).value).toBe(BigInt(i + 1) * 0x0101010101010101n);
    expect(ram.ram.residentChunks).toBe(3);
    expect(ram.ram.residentBytes).toBe(3 * RAM_CHUNK_SIZE);
    // Untouched memory reads as zero and costs nothing.
    const buf = new Uint8Array(1 << 20).fill(7);
    expect(as.read(0x80_0000_0000n, buf)).toBe(0);
    expect(buf.every((b) => b === 0)).toBe(true);
    expect(ram.ram.residentChunks).toBe(3);
    // Zero-filling an untouched range allocates nothing.
    ram.ram.fill(0x10_0000, 0, 1 << 20);
    expect(ram.ram.residentChunks).toBe(3);
  });

  it('copies ranges that straddle backing chunks', () => {
    const ram = new RamRegion('ram', 0x100000n);
    const data = Uint8Array.from({ length: RAM_CHUNK_SIZE + 100 }, (_, i) => (i * 7) & 0xff);
    ram.ram.write(RAM_CHUNK_SIZE - 50, data, 0, data.length);
    const back = new Uint8Array(data.length);
    ram.ram.read(RAM_CHUNK_SIZE - 50, back, 0, back.length);
    expect(back).toEqual(data);
    expect(ram.ram.residentChunks).toBe(3);
    expect([...ram.ram.chunks()].map(([offset]) => offset)).toEqual([0, RAM_CHUNK_SIZE, 2 * RAM_CHUNK_SIZE]);
  });

  it('grows within its maximum size only', () => {
    const ram = new RamRegion('ram', 0x1000n, { maxSize: 0x4000n });
    ram.setSize(0x4000n);
    expect(ram.size).toBe(0x4000n);
    expect(() => ram.setSize(0x5000n)).toThrow(/maxSize is 0x4000/);
    expect(() => new RamRegion('huge', 1n << 53n)).toThrow(/larger than the 2\^52 bytes/);
  });
});
