import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createMachine,
  loadSnapshot,
  type Machine,
  MachineTokens,
  SNAPSHOT_FORMAT_VERSION,
  SnapshotError,
  type SnapshotSource,
  saveSnapshot,
  snapshotInfo,
  type VarraySource,
  type VarrayView,
  VMState,
  type VMStateDescription,
  type VMStateLoaded,
  writeSnapshot,
} from '../src/index.js';
import { crc32, crc32Table, nativeCrc32 } from '../src/vmstate/crc.js';
import { encodeTrailer, parseV2 } from '../src/vmstate/format-v2.js';
import { SNAPSHOT_READ_PIECE, SNAPSHOT_WRITE_BUFFER, SourceReader } from '../src/vmstate/streams.js';
import { VARRAY_BLOCK_ELEMENTS } from '../src/vmstate/varray/format.js';
import { layout, writeV2 } from './support/snapshot-layout.js';

/** Format version 2: streamed to a sink, read from a source, every byte checked. */

const B = VARRAY_BLOCK_ELEMENTS;
const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

class Dev {
  id = 1;
  word = 0;
  n = 0;
  table: unknown = null;
  loaded: VMStateLoaded | undefined;
  applied = 0;
}

const devDescription: VMStateDescription<Dev> = {
  name: 'dev',
  version: 1,
  fields: [
    VMState.uint32('id', { equal: true }),
    VMState.uint32('word'),
    VMState.uint32('n'),
    VMState.varrayUint32Alloc('table', 'n', 'uint64'),
  ],
  postLoad: (o, loaded) => {
    o.loaded = loaded;
    o.applied++;
  },
};

async function devMachine(devs: Dev[], ram = '1G'): Promise<Machine> {
  const m = await createMachine(
    [
      {
        name: 'devs',
        register(ctx) {
          for (const [i, d] of devs.entries())
            ctx.get(MachineTokens.Vmstate).register(devDescription, i, d, ctx.plugin);
        },
      },
    ],
    { ram, type: 'dev-1' },
  );
  machines.push(m);
  return m;
}

/** A table of `n` elements: a progression over blocks 1-2, scattered literal elements, zeros. */
function mixedTable(n: number): VarraySource {
  return {
    length: n,
    forEachNonZero() {
      throw new Error('saved from runs');
    },
    forEachRun(fn) {
      fn(3, 1, 0, 0x77, 0);
      fn(B, 2 * B, 0x1, 0x3, 0x1000);
      for (let i = 3 * B + 1; i < n; i += 1001) fn(i, 1, i, i * 3, 0);
    },
  };
}

/** A sink that keeps copies of its chunks (the writer reuses its buffer). */
function collect(): { chunks: Uint8Array[]; sink: { write(chunk: Uint8Array): void }; bytes(): Uint8Array } {
  const chunks: Uint8Array[] = [];
  return {
    chunks,
    sink: { write: (chunk) => void chunks.push(chunk.slice()) },
    bytes: () => new Uint8Array(Buffer.concat(chunks)),
  };
}

function sourceOf(bytes: Uint8Array, reads: [number, number][] = []): SnapshotSource {
  return {
    size: bytes.length,
    read(offset, length) {
      reads.push([offset, length]);
      return bytes.slice(offset, offset + length);
    },
  };
}

describe('crc32', () => {
  it("is Node's zlib.crc32 here, and the JavaScript table gives the same values, also continued", () => {
    expect(typeof nativeCrc32).toBe('function');
    const text = new TextEncoder().encode('123456789'.repeat(10));
    expect(crc32Table(text.subarray(0, 9))).toBe(0xcbf43926);
    expect(nativeCrc32!(text.subarray(0, 9))).toBe(0xcbf43926);
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 100 }), fc.uint8Array({ maxLength: 3000 })),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.nat(),
        (bytes, seed, cut) => {
          const at = bytes.length <= 1 ? 0 : 1 + (cut % (bytes.length - 1));
          const table = crc32Table(bytes, seed);
          expect(crc32(bytes, seed)).toBe(table);
          expect(crc32(bytes.subarray(at), crc32(bytes.subarray(0, at), seed))).toBe(table);
          // zlib gives 0 for no bytes, whatever the seed (crc32 never asks it about short inputs).
          if (bytes.length === 0) return;
          expect(nativeCrc32!(bytes, seed)).toBe(table);
          // Continued from a seed, in two pieces, either way: the same.
          expect(crc32Table(bytes.subarray(at), nativeCrc32!(bytes.subarray(0, at), seed))).toBe(table);
          expect(nativeCrc32!(bytes.subarray(at), crc32Table(bytes.subarray(0, at)))).toBe(crc32Table(bytes));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('writeSnapshot', () => {
  it('streams the file through a bounded buffer: the chunks are what saveSnapshot returns', async () => {
    const a = new Dev();
    a.n = 64 * B; // 8 MiB of literal elements and more
    a.table = {
      length: a.n,
      forEachNonZero(fn: (i: number, h: number, l: number) => void) {
        for (let i = 0; i < a.n; i++) fn(i, i, ~i >>> 0);
      },
    };
    const m = await devMachine([a, new Dev()]);
    m.memory.write(0x1000n, new Uint8Array(3 << 20).fill(9));
    const out = collect();
    const { bytes } = writeSnapshot(m, out.sink);
    expect(out.chunks.length).toBeGreaterThan(8);
    for (const c of out.chunks) expect(c.length).toBeLessThanOrEqual(SNAPSHOT_WRITE_BUFFER);
    const file = out.bytes();
    expect(file.length).toBe(bytes);
    expect(Buffer.from(saveSnapshot(m)).equals(file)).toBe(true);
    const info = snapshotInfo(file);
    expect(info.formatVersion).toBe(SNAPSHOT_FORMAT_VERSION);
    expect(info.formatVersion).toBe(2);
    expect(info.sections.map((s) => [s.name, s.instanceId, s.offset])).toEqual([
      ['ram', 0, 8],
      ['dev', 0, 8 + info.sections[0]!.size],
      ['dev', 1, 8 + info.sections[0]!.size + info.sections[1]!.size],
    ]);
    // Preamble, payload, index, trailer.
    expect([...file.subarray(0, 8)]).toEqual([0x44, 0x44, 0x57, 0x53, 0, 0, 0, 2]);
    expect(new TextDecoder().decode(file.subarray(-4))).toBe('DDWE');
    expect(layout(file).index.machine).toEqual({ type: 'dev-1', ram: '0x40000000', maxmem: null });

    const b = new Dev();
    const dst = await devMachine([b, new Dev()]);
    const reads: [number, number][] = [];
    loadSnapshot(dst, sourceOf(file, reads));
    const table = b.loaded!.fields.table as VarrayView;
    expect(table.get(12345)).toBe((12345n << 32n) | BigInt(~12345 >>> 0));
    const ram = new Uint8Array(2);
    dst.memory.read(0x1000n + (3n << 20n) - 1n, ram);
    expect([...ram]).toEqual([9, 0]);
    // The checksum pass reads at most SNAPSHOT_READ_PIECE at a time; decoding reads one section at a time.
    const sectionReads = reads.filter(([, n]) => n > SNAPSHOT_READ_PIECE);
    expect(sectionReads.map(([o, n]) => [o, n])).toEqual([
      [info.sections[0]!.offset, info.sections[0]!.size],
      [info.sections[1]!.offset, info.sections[1]!.size],
    ]);
    reads.length = 0;
    snapshotInfo(sourceOf(file, reads));
    expect(Math.max(...reads.map(([, n]) => n))).toBe(SNAPSHOT_READ_PIECE);
  });

  it('a reused buffer is cleared where a sparse literal block is reserved in it', async () => {
    const a = new Dev();
    a.n = 40 * B;
    a.table = {
      length: a.n,
      forEachNonZero(fn: (i: number, h: number, l: number) => void) {
        for (let b = 0; b < 40; b++) fn(b * B + b, b, 1);
      },
    };
    const m = await devMachine([a]);
    // RAM first: the writer's buffer is full of 0xff before the literal blocks are reserved in it.
    m.memory.write(0n, new Uint8Array(5 << 20).fill(0xff));
    const out = collect();
    writeSnapshot(m, out.sink);
    const file = out.bytes();
    expect(Buffer.from(saveSnapshot(m)).equals(file)).toBe(true);
    const b = new Dev();
    loadSnapshot(await devMachine([b]), file);
    let count = 0;
    (b.loaded!.fields.table as VarrayView).forEachNonZero((i, h, l) => {
      expect([i, h, l]).toEqual([h * B + h, h, 1]);
      count++;
    });
    expect(count).toBe(40);
  });

  it('what a sink or a source throws comes out as it was thrown, and the machine is unchanged', async () => {
    const a = new Dev();
    a.word = 5;
    const m = await devMachine([a]);
    const failure = new Error('disk full');
    let calls = 0;
    expect(() =>
      writeSnapshot(m, {
        write() {
          calls++;
          throw failure;
        },
      }),
    ).toThrow(failure);
    expect(calls).toBe(1);
    const bytes = saveSnapshot(m);
    const b = new Dev();
    const dst = await devMachine([b]);
    const unreadable = new Error('EIO');
    // Reads: preamble, trailer, index, end marker, the two sections' checksums, then (a load) the two sections.
    for (const failAt of [0, 1, 2, 3, 4, 5, 6, 7]) {
      let n = 0;
      const source: SnapshotSource = {
        size: bytes.length,
        read(offset, length) {
          if (n++ === failAt) throw unreadable;
          return bytes.subarray(offset, offset + length);
        },
      };
      expect(() => loadSnapshot(dst, source), `read ${failAt}`).toThrow(unreadable);
      n = 0;
      if (failAt < 6) expect(() => snapshotInfo(source)).toThrow(unreadable);
    }
    // A source that gives less than asked: the file changed under it.
    const short: SnapshotSource = { size: bytes.length, read: (o, l) => bytes.subarray(o, o + l - 1) };
    expect(() => loadSnapshot(dst, short)).toThrow(SnapshotError);
    expect(() => loadSnapshot(dst, { size: -1, read: () => bytes } as SnapshotSource)).toThrow(
      'snapshot header: a snapshot is a Uint8Array of bytes or a SnapshotSource',
    );
    expect(() => snapshotInfo('DDWS' as unknown as Uint8Array)).toThrow(
      /a Uint8Array of bytes or a SnapshotSource/,
    );
    expect(b.applied).toBe(0);
    loadSnapshot(dst, sourceOf(bytes));
    expect(b.loaded!.fields.word).toBe(5);
  });

  it('a section that changes between the checksum pass and decoding is refused', async () => {
    const m = await devMachine([new Dev()]);
    const bytes = saveSnapshot(m);
    const b = new Dev();
    const dst = await devMachine([b]);
    const dev = snapshotInfo(bytes).sections[1]!;
    let checked = false;
    const source: SnapshotSource = {
      size: bytes.length,
      read(offset, length) {
        const out = bytes.slice(offset, offset + length);
        if (offset === dev.offset && checked) out[length - 10] ^= 1;
        if (offset === dev.offset) checked = true;
        return out;
      },
    };
    expect(() => loadSnapshot(dst, source)).toThrow(
      'snapshot section "dev" (instance 0x0): checksum mismatch: the section changed while it was read',
    );
    expect(b.applied).toBe(0);
  });
});

describe('a damaged version 2 file', () => {
  /** Loads `bytes` into `m`: the SnapshotError (the same as snapshotInfo's), or null if it loaded. */
  function refusal(m: Machine, bytes: Uint8Array): string | null {
    let message: string | null = null;
    try {
      loadSnapshot(m, bytes);
    } catch (error) {
      if (!(error instanceof SnapshotError)) throw error;
      message = error.message;
    }
    let info: string | null = null;
    try {
      snapshotInfo(bytes);
    } catch (error) {
      if (!(error instanceof SnapshotError)) throw error;
      info = error.message;
    }
    if (message !== null && info !== null) expect(info).toBe(message);
    return message;
  }

  it('every byte flipped, every truncation: a SnapshotError, and nothing applied', async () => {
    const a = new Dev();
    a.word = 0x1234;
    a.n = 5;
    a.table = [0, 1, 2, 0, 4];
    const src = await devMachine([a, new Dev()]);
    const bytes = saveSnapshot(src);
    expect(bytes.length).toBeLessThan(1000);
    const b = new Dev();
    const dst = await devMachine([b, new Dev()]);
    for (let i = 0; i < bytes.length; i++) {
      for (const xor of [0x01, 0x80, 0xff]) {
        const damaged = bytes.slice();
        damaged[i]! ^= xor;
        expect(refusal(dst, damaged), `byte ${i} ^ ${xor}`).toMatch(
          /^snapshot (header|section "\w+" \(instance 0x\d\)): /,
        );
      }
    }
    for (let cut = 0; cut < bytes.length; cut++) {
      expect(refusal(dst, bytes.subarray(0, cut)), `cut at ${cut}`).toMatch(/^snapshot header: truncated/);
    }
    expect(b.applied).toBe(0);
    expect(refusal(dst, bytes)).toBeNull();
    expect(b.applied).toBe(1);
  });

  it('random flips, cuts and appended bytes in a file with RAM, literal, zero and affine blocks', async () => {
    const a = new Dev();
    a.n = 4 * B + 10;
    a.table = mixedTable(a.n);
    const src = await devMachine([a]);
    src.memory.write(0x10000n, new Uint8Array(100).fill(3));
    const bytes = saveSnapshot(src);
    const b = new Dev();
    const dst = await devMachine([b]);
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ at: fc.nat({ max: bytes.length - 1 }), xor: fc.integer({ min: 1, max: 255 }) }),
          {
            maxLength: 3,
          },
        ),
        fc.option(fc.nat({ max: bytes.length - 1 }), { nil: undefined }),
        fc.uint8Array({ maxLength: 40 }),
        (flips, cut, extra) => {
          const damaged = new Uint8Array(Buffer.concat([bytes.subarray(0, cut), extra]));
          for (const { at, xor } of flips) if (at < damaged.length) damaged[at]! ^= xor;
          if (Buffer.from(damaged).equals(bytes)) return;
          const message = refusal(dst, damaged);
          expect(message).toMatch(/^snapshot (header|section "\w+" \(instance 0x0\)): ./);
          if (cut === undefined && flips.length === 0)
            expect(message).toBe(
              `snapshot header: ${extra.length} unexpected bytes after the end of the snapshot`,
            );
        },
      ),
      { numRuns: 300 },
    );
    expect(b.applied).toBe(0);
  });

  it('names the section whose checksum fails, and the index or trailer when they are damaged', async () => {
    const src = await devMachine([new Dev(), new Dev()]);
    const bytes = saveSnapshot(src);
    const dst = await devMachine([new Dev(), new Dev()]);
    const info = snapshotInfo(bytes);
    const flip = (at: number) => {
      const d = bytes.slice();
      d[at]! ^= 0x20;
      return refusal(dst, d);
    };
    expect(flip(info.sections[2]!.offset + 3)).toBe(
      'snapshot section "dev" (instance 0x1): checksum mismatch: the section is corrupted',
    );
    expect(flip(0)).toBe('snapshot header: not a ddw snapshot (bad magic)');
    expect(flip(7)).toBe('snapshot header: format version 34 is not supported (this ddw reads 1 and 2)');
    expect(flip(layout(bytes).indexAt - 1)).toBe('snapshot header: the stream does not end with QEMU_VM_EOF');
    expect(flip(layout(bytes).indexAt)).toBe('snapshot header: checksum mismatch: the index is corrupted');
    for (const back of [24, 20, 16, 12, 9, 8, 5]) expect(flip(bytes.length - back)).toMatch(/trailer/);
    // Resealed with a wrong size or an extra section, the index no longer fills the payload.
    const index = layout(bytes).index;
    const payload = bytes.slice(8, layout(bytes).indexAt);
    index.sections[1]!.size += 1;
    expect(refusal(dst, writeV2(index, payload))).toBe(
      `snapshot header: the sections (${payload.length} bytes) and the end-of-stream marker do not fill the payload (${payload.length} bytes)`,
    );
    index.sections[1]!.size = 2 ** 53;
    expect(refusal(dst, writeV2(index, payload))).toBe(
      'snapshot header: sections[1].size is not a size (an integer from 0 to 2^53 - 1)',
    );
  });
});

describe('sizes beyond 4 GiB', () => {
  it('the trailer and the index place sections past 2^32', () => {
    // A virtual 6 GiB file: a 6 GiB section (never read here), the end marker, the index, the trailer.
    const big = 6 * 2 ** 30;
    const index = new TextEncoder().encode(
      JSON.stringify({
        machine: { type: null, ram: '0x40000000', maxmem: null },
        sections: [
          { name: 'ram', instanceId: 0, version: 1, size: big, crc: 1 },
          { name: 'dev', instanceId: 0, version: 1, size: 40, crc: 2 },
        ],
      }),
    );
    const indexOffset = 8 + big + 40 + 1;
    const trailer = encodeTrailer(indexOffset, index.length, crc32(index));
    const size = indexOffset + index.length + trailer.length;
    const source: SnapshotSource = {
      size,
      read(offset, length) {
        const out = new Uint8Array(length);
        for (let i = 0; i < length; i++) {
          const p = offset + i;
          if (p < 4) out[i] = 'DDWS'.charCodeAt(p);
          else if (p === 7) out[i] = 2;
          else if (p === indexOffset - 1) out[i] = 1;
          else if (p >= indexOffset && p < indexOffset + index.length) out[i] = index[p - indexOffset]!;
          else if (p >= size - trailer.length) out[i] = trailer[p - (size - trailer.length)]!;
        }
        return out;
      },
    };
    const parsed = parseV2(new SourceReader(source));
    expect(parsed.sections.map((s) => [s.offset, s.size])).toEqual([
      [8, big],
      [8 + big, 40],
    ]);
    expect(new DataView(trailer.buffer).getUint32(0)).toBe(1);
  });
});
