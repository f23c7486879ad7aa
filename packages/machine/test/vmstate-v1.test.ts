import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createMachine,
  loadSnapshot,
  type Machine,
  MachineTokens,
  SnapshotError,
  type SnapshotSource,
  saveSnapshot,
  snapshotInfo,
  type VarrayView,
  VMState,
  type VMStateDescription,
  type VMStateLoaded,
} from '../src/index.js';
import { VARRAY_BLOCK_ELEMENTS } from '../src/vmstate/varray/format.js';
import { layout, reseal } from './support/snapshot-layout.js';

/**
 * Format version 1 files, as ddw wrote them before snapshots were streamed, still load.
 * fixtures/toy-v1.snap.gz was written by that ddw (vmstate.ts at bc4a402) from the machine below.
 */

const B = VARRAY_BLOCK_ELEMENTS;
const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

class Old {
  id = 0x51;
  small = 0;
  word = 0;
  big = 0n;
  neg = 0;
  flag = false;
  n = 0;
  table: unknown = null;
  m = 0;
  narrow: unknown = null;
  later = 0;
  ex = 0n;
  loaded: VMStateLoaded | undefined;
}

const description: VMStateDescription<Old> = {
  name: 'old-device',
  version: 2,
  minimumVersion: 1,
  fields: [
    VMState.uint32('id', { equal: true }),
    VMState.uint8('small'),
    VMState.uint32('word'),
    VMState.uint64('big'),
    VMState.int32('neg'),
    VMState.bool('flag'),
    VMState.uint32('n'),
    VMState.varrayUint32Alloc('table', 'n', 'uint64'),
    VMState.uint32('m'),
    VMState.varrayUint32Alloc('narrow', 'm', 'uint32'),
    VMState.uint32('later', { version: 2 }),
  ],
  subsections: [
    { name: 'old-device/ex', version: 1, fields: [VMState.uint64('ex')], needed: (o) => o.ex !== 0n },
  ],
  postLoad: (o, loaded) => {
    o.loaded = loaded;
    Object.assign(o, loaded.fields, loaded.subsections['old-device/ex'] ?? { ex: 0n });
  },
};

async function oldMachine(devices: Old[]): Promise<Machine> {
  const m = await createMachine(
    [
      {
        name: 'old',
        register(ctx) {
          ctx.get(MachineTokens.Vmstate).register(description, 0, devices[0]!, ctx.plugin);
          ctx.get(MachineTokens.Vmstate).register(description, 5, devices[1]!, ctx.plugin);
        },
      },
    ],
    { ram: '1G', type: 'old-1' },
  );
  machines.push(m);
  return m;
}

/** The table the fixture's first device saved. */
function fixtureTable(): bigint[] {
  const values = new Array<bigint>(3 * B + 5).fill(0n);
  for (let i = 0; i < 100; i++) values[i * 7] = 0x1000_0000_0003n + BigInt(i) * 0x1000n;
  values[2 * B + 1] = 0xffff_ffff_ffff_ffffn;
  values[3 * B + 4] = 42n;
  return values;
}

const fixture = () =>
  new Uint8Array(gunzipSync(readFileSync(new URL('./fixtures/toy-v1.snap.gz', import.meta.url))));

describe('format version 1 files', () => {
  it('a file the previous ddw wrote: snapshotInfo reads it, and it loads', async () => {
    const bytes = fixture();
    const info = snapshotInfo(bytes);
    expect(info.formatVersion).toBe(1);
    expect(info.machine).toEqual({ type: 'old-1', ram: 1n << 30n, maxmem: null });
    expect(info.sections.map((s) => [s.name, s.instanceId, s.version])).toEqual([
      ['ram', 0, 1],
      ['old-device', 0, 2],
      ['old-device', 5, 2],
    ]);
    // v1 sections follow the 16-byte preamble and the header.
    expect(info.sections[0]!.offset).toBe(layout(bytes).payloadAt);
    expect(info.sections[0]!.offset).toBeGreaterThan(16);

    const [a, b] = [new Old(), new Old()];
    const m = await oldMachine([a, b]);
    loadSnapshot(m, bytes);
    const { table, narrow, ...scalars } = a.loaded!.fields;
    expect(scalars).toEqual({
      id: 0x51,
      small: 0xab,
      word: 0xdeadbeef,
      big: 0x0123456789abcdefn,
      neg: -42,
      flag: true,
      n: 3 * B + 5,
      m: 10,
      later: 77,
    });
    expect((table as VarrayView).toArray()).toEqual(fixtureTable());
    expect((narrow as VarrayView).toArray()).toEqual([0n, 1n, 2n, 0xffffffffn, 0n, 0n, 7n, 0n, 0n, 9n]);
    expect(a.loaded!.subsections).toEqual({ 'old-device/ex': { ex: 0x8000_0000_0000_0000n } });
    expect(b.loaded!.fields.table).toBeNull();
    const ram = new Uint8Array(4);
    m.memory.read(0x12_3456n, ram);
    expect([...ram]).toEqual([1, 2, 3, 4]);

    // Saved again, it is a version 2 file of the same machine state: the device sections are the
    // same bytes; RAM is now written in 4 KiB pages (section version 2), and loads back the same.
    const again = saveSnapshot(m);
    expect(snapshotInfo(again).formatVersion).toBe(2);
    const sectionBytes = (file: Uint8Array) => {
      const info = snapshotInfo(file);
      return info.sections.map((s) => [
        s.name,
        s.version,
        Buffer.from(file.subarray(s.offset, s.offset + s.size)).toString('hex'),
      ]);
    };
    const [ramBefore, ...devicesBefore] = sectionBytes(bytes);
    const [ramAfter, ...devicesAfter] = sectionBytes(again);
    expect(devicesAfter).toEqual(devicesBefore);
    expect([ramBefore![1], ramAfter![1]]).toEqual([1, 2]);
    const [c, d] = [new Old(), new Old()];
    const reloaded = await oldMachine([c, d]);
    loadSnapshot(reloaded, again);
    reloaded.memory.read(0x12_3456n, ram);
    expect([...ram]).toEqual([1, 2, 3, 4]);
    expect((c.loaded!.fields.table as VarrayView).toArray()).toEqual(fixtureTable());
  });

  it('loads from a SnapshotSource too, and is checked as before', async () => {
    const bytes = fixture();
    const source: SnapshotSource = { size: bytes.length, read: (o, n) => bytes.slice(o, o + n) };
    const [a, b] = [new Old(), new Old()];
    loadSnapshot(await oldMachine([a, b]), source);
    expect((a.loaded!.fields.table as VarrayView).get(2 * B + 1)).toBe(0xffff_ffff_ffff_ffffn);
    expect(snapshotInfo(source).formatVersion).toBe(1);

    const m = await oldMachine([new Old(), new Old()]);
    const error = (file: Uint8Array) => {
      try {
        loadSnapshot(m, file);
      } catch (e) {
        expect(e).toBeInstanceOf(SnapshotError);
        expect(snapshotInfo.bind(null, file)).toThrow((e as Error).message);
        return (e as Error).message;
      }
      throw new Error('loaded');
    };
    const info = snapshotInfo(bytes);
    const s = info.sections[1]!;
    // Truncated in a section: v1 names it.
    expect(error(bytes.subarray(0, s.offset + 10))).toBe(
      `snapshot section "old-device" (instance 0x0): truncated: the file ends 10 bytes into this section of ${s.size}`,
    );
    const longer = new Uint8Array(bytes.length + 1);
    longer.set(bytes);
    longer[bytes.length] = 1;
    expect(error(longer)).toBe('snapshot header: 1 unexpected bytes after the end of the stream');
    const flipped = bytes.slice();
    flipped[s.offset + 30] ^= 4;
    expect(error(flipped)).toBe(
      'snapshot section "old-device" (instance 0x0): checksum mismatch: the section is corrupted',
    );
    const header = bytes.slice();
    header[20] ^= 4;
    expect(error(header)).toBe('snapshot header: checksum mismatch: the header is corrupted');
    // Every byte flipped is refused.
    for (let i = 0; i < bytes.length; i += 997) {
      const damaged = bytes.slice();
      damaged[i] ^= 0x80;
      error(damaged);
    }
  });

  it('a version 1 file has no affine VARRAY blocks: their tag is unknown there', async () => {
    const a = new Old();
    a.n = 2 * B;
    a.table = {
      length: 2 * B,
      forEachNonZero() {
        throw new Error('saved from runs');
      },
      forEachRun(fn: (first: number, count: number, high: number, low: number, stride: number) => void) {
        fn(0, 2 * B, 0, 0x1000, 0x1000);
      },
    };
    const src = await oldMachine([a, new Old()]);
    const v2 = saveSnapshot(src);
    const dst = await oldMachine([new Old(), new Old()]);
    const b = new Old();
    loadSnapshot(await oldMachine([b, new Old()]), v2);
    expect((b.loaded!.fields.table as VarrayView).get(2 * B - 1)).toBe(0x1000n * BigInt(2 * B));
    expect(() => loadSnapshot(dst, reseal(v2, undefined, undefined, 1))).toThrow(
      'snapshot section "old-device" (instance 0x0): VARRAY table: unknown block tag 0x2 at block 0',
    );
  });
});
