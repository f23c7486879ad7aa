import { afterEach, describe, expect, it } from 'vitest';
import {
  createMachine,
  loadSnapshot,
  type Machine,
  MachineTokens,
  type Plugin,
  PluginError,
  SNAPSHOT_FORMAT_VERSION,
  SnapshotError,
  saveSnapshot,
  snapshotInfo,
  VarrayView,
  VMState,
  type VMStateDescription,
  type VMStateLoaded,
  VmstateRegistry,
  varrayOf,
} from '../src/index.js';
import { crc32 } from '../src/vmstate/crc.js';
import { RAM_SNAPSHOT_CHUNK } from '../src/vmstate/ram.js';
import { VARRAY_BLOCK_ELEMENTS } from '../src/vmstate/varray/format.js';
import { layout, reseal } from './support/snapshot-layout.js';

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** A device's state: every field kind there is. */
class Toy {
  id = 7;
  u8 = 0;
  u16 = 0;
  u32 = 0;
  u64 = 0n;
  i8 = 0;
  i32 = 0;
  i64 = 0n;
  flag = false;
  count = 0;
  values: ReturnType<typeof varrayOf> | null = null;
  extra = 0; // only in version 2 streams
  sub_a = 0n;
  sub_b = 0;
  /** What post_load applied, and the hooks' calls. */
  applied: VMStateLoaded | undefined;
  calls: string[] = [];
}

function toyDescription(
  version = 2,
  hooks: Partial<VMStateDescription<Toy, unknown>> = {},
): VMStateDescription<Toy, unknown> {
  return {
    name: 'toy',
    version,
    minimumVersion: 1,
    fields: [
      VMState.uint32('id', { equal: true }),
      VMState.uint8('u8'),
      VMState.uint16('u16'),
      VMState.uint32('u32'),
      VMState.uint64('u64'),
      { name: 'i8', type: 'int8' },
      VMState.int32('i32'),
      VMState.int64('i64'),
      VMState.bool('flag'),
      VMState.uint32('count'),
      VMState.varrayUint32Alloc('values', 'count', 'uint64'),
      VMState.uint32('extra', { version: 2 }),
    ],
    subsections: [
      {
        name: 'toy/sub',
        version: 1,
        fields: [VMState.uint64('sub_a'), VMState.uint16('sub_b')],
        needed: (t) => t.sub_a !== 0n,
      },
    ],
    preSave: (t) => void t.calls.push('pre_save'),
    postSave: (t) => void t.calls.push('post_save'),
    validate: (_t, loaded) => {
      if (loaded.fields.u32 === 0xdead) throw new Error('0xdead is not a state a toy can be in');
      return 'prepared';
    },
    postLoad: (t, loaded, prepared) => {
      t.calls.push(`post_load:${String(prepared)}`);
      t.applied = loaded;
    },
    ...hooks,
  };
}

function toyPlugin(
  toys: Toy[],
  description: () => VMStateDescription<Toy, unknown> = toyDescription,
): Plugin {
  return {
    name: 'toys',
    register(ctx) {
      for (const [i, toy] of toys.entries())
        ctx.get(MachineTokens.Vmstate).register(description(), i, toy, ctx.plugin);
    },
  };
}

async function machineWith(toys: Toy[], ram = '1G', description?: () => VMStateDescription<Toy, unknown>) {
  const m = await createMachine([toyPlugin(toys, description)], { ram });
  machines.push(m);
  return m;
}

function snapshotError(fn: () => unknown): SnapshotError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SnapshotError);
    return error as SnapshotError;
  }
  throw new Error('expected a SnapshotError');
}

describe('crc32', () => {
  it('is the IEEE CRC32, also when continued', () => {
    const text = new TextEncoder().encode('123456789');
    expect(crc32(text)).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
    expect(crc32(text.subarray(5), crc32(text.subarray(0, 5)))).toBe(0xcbf43926);
    const big = new Uint8Array(1000).map((_, i) => (i * 31) & 0xff);
    let slow = 0xffffffff;
    for (const b of big) {
      slow ^= b;
      for (let k = 0; k < 8; k++) slow = slow & 1 ? 0xedb88320 ^ (slow >>> 1) : slow >>> 1;
    }
    expect(crc32(big)).toBe((slow ^ 0xffffffff) >>> 0);
  });
});

describe('VmstateRegistry', () => {
  it('refuses duplicate sections and malformed descriptions, naming the owner', () => {
    const registry = new VmstateRegistry();
    const unregister = registry.register(toyDescription(), 1, new Toy(), 'toys');
    expect(() => registry.register(toyDescription(), 1, new Toy(), 'toys')).toThrow(
      /vmstate section "toy" instance 0x1 is registered twice/,
    );
    unregister();
    expect(registry.find('toy', 1)).toBeUndefined();
    const bad = (d: Partial<VMStateDescription>) =>
      registry.register({ ...toyDescription(), ...d } as VMStateDescription, 2, new Toy(), 'toys');
    expect(() => bad({ minimumVersion: 3 })).toThrow(PluginError);
    expect(() => bad({ name: '' })).toThrow(/name/);
    expect(() => bad({ fields: [VMState.varrayUint32Alloc('v', 'n', 'uint64')] })).toThrow(
      /not an earlier uint32 field/,
    );
    expect(() => bad({ fields: [VMState.uint8('a'), VMState.uint8('a')] })).toThrow(/appears twice/);
    expect(() => registry.register(toyDescription(), -1, new Toy(), 'toys')).toThrow(/not a u32/);
  });

  it('every machine has the guest RAM section, and plugins add theirs through ctx.get(MachineTokens.Vmstate)', async () => {
    const m = await machineWith([new Toy()]);
    expect(
      m
        .get(MachineTokens.Vmstate)
        .list()
        .map((s) => [s.description.name, s.instanceId, s.owner]),
    ).toEqual([
      ['ram', 0, '@ddw/machine'],
      ['toy', 0, 'toys'],
    ]);
  });
});

describe('saveSnapshot / loadSnapshot', () => {
  it('round-trips every field kind, VARRAY_ALLOC and a needed subsection, after pre_save', async () => {
    const a = new Toy();
    Object.assign(a, {
      u8: 0xfe,
      u16: 0xbeef,
      u32: 0xfedcba98,
      u64: 0xfedcba9876543210n,
      i8: -5,
      i32: -123456,
      i64: -(1n << 62n),
      flag: true,
      count: 3 * VARRAY_BLOCK_ELEMENTS + 5,
      extra: 99,
      sub_a: 0x1234n,
      sub_b: 7,
    });
    const values = new Array<bigint>(a.count).fill(0n);
    values[1] = 0xffffffffffffffffn;
    values[2 * VARRAY_BLOCK_ELEMENTS + 3] = 0x1_0000_0000n;
    values[a.count - 1] = 42n;
    a.values = varrayOf(values);
    const src = await machineWith([a]);
    const bytes = saveSnapshot(src);
    expect(a.calls).toEqual(['pre_save', 'post_save']);

    const b = new Toy();
    const dst = await machineWith([b]);
    loadSnapshot(dst, bytes);
    expect(b.calls).toEqual(['post_load:prepared']);
    const loaded = b.applied!;
    expect(loaded.version).toBe(2);
    const { values: got, ...scalars } = loaded.fields;
    expect(scalars).toEqual({
      id: 7,
      u8: 0xfe,
      u16: 0xbeef,
      u32: 0xfedcba98,
      u64: 0xfedcba9876543210n,
      i8: -5,
      i32: -123456,
      i64: -(1n << 62n),
      flag: true,
      count: a.count,
      extra: 99,
    });
    expect(got).toBeInstanceOf(VarrayView);
    expect((got as VarrayView).toArray()).toEqual(values);
    expect((got as VarrayView).get(2 * VARRAY_BLOCK_ELEMENTS + 3)).toBe(0x1_0000_0000n);
    expect(loaded.subsections).toEqual({ 'toy/sub': { sub_a: 0x1234n, sub_b: 7 } });

    // The two all-zero middle block cost a 5-byte run, not 2 x 128 KiB.
    const toy = snapshotInfo(bytes).sections.find((s) => s.name === 'toy')!;
    expect(toy.size).toBeLessThan(2 * VARRAY_BLOCK_ELEMENTS * 8 + 200);
    expect(toy.size).toBeGreaterThan(2 * VARRAY_BLOCK_ELEMENTS * 8);
  });

  it('a VARRAY_ALLOC of count 0 loads as null, and a subsection not needed is not sent', async () => {
    const a = new Toy();
    const src = await machineWith([a]);
    const b = new Toy();
    const dst = await machineWith([b]);
    loadSnapshot(dst, saveSnapshot(src));
    expect(b.applied!.fields.values).toBeNull();
    expect(b.applied!.subsections).toEqual({});
  });

  it('writes a header that snapshotInfo reads back', async () => {
    const src = await createMachine([toyPlugin([new Toy(), new Toy()])], { ram: '2G', type: 'toy-1' });
    machines.push(src);
    const info = snapshotInfo(saveSnapshot(src));
    expect(info.formatVersion).toBe(SNAPSHOT_FORMAT_VERSION);
    expect(info.machine).toEqual({ type: 'toy-1', ram: 2n << 30n, maxmem: null });
    expect(info.sections.map(({ name, instanceId, version }) => [name, instanceId, version])).toEqual([
      ['ram', 0, 2],
      ['toy', 0, 2],
      ['toy', 1, 2],
    ]);
    for (const s of info.sections) expect(s.size).toBeGreaterThan(0);
  });

  it('loads an older version it supports, without the fields added since', async () => {
    const a = new Toy();
    a.extra = 5;
    const src = await machineWith([a], '1G', () => toyDescription(1));
    const b = new Toy();
    const dst = await machineWith([b]);
    loadSnapshot(dst, saveSnapshot(src));
    expect(b.applied!.version).toBe(1);
    expect('extra' in b.applied!.fields).toBe(false);
  });

  it('refuses a version newer than it loads, naming the section', async () => {
    const src = await machineWith([new Toy()], '1G', () => ({ ...toyDescription(3), name: 'toy' }));
    const b = new Toy();
    const dst = await machineWith([b]);
    const e = snapshotError(() => loadSnapshot(dst, saveSnapshot(src)));
    expect(e.section).toBe('toy');
    expect(e.message).toMatch(/snapshot section "toy" \(instance 0x0\): version 3 is not supported/);
    expect(b.calls).toEqual([]);
  });

  it('refuses an EQUAL field that differs', async () => {
    const a = new Toy();
    a.id = 8;
    const src = await machineWith([a]);
    const dst = await machineWith([new Toy()]);
    expect(() => loadSnapshot(dst, saveSnapshot(src))).toThrow(/field id: 0x8 != 0x7/);
  });

  it('is all or nothing: a section refused by validate leaves every section unapplied', async () => {
    const [a1, a2] = [new Toy(), new Toy()];
    a2.u32 = 0xdead;
    const src = await machineWith([a1, a2]);
    src.memory.write(0x1000n, new Uint8Array([1, 2, 3]));
    const [b1, b2] = [new Toy(), new Toy()];
    const dst = await machineWith([b1, b2]);
    dst.memory.write(0x2000n, new Uint8Array([9]));
    const e = snapshotError(() => loadSnapshot(dst, saveSnapshot(src)));
    expect(e.message).toBe(
      'snapshot section "toy" (instance 0x1): refused: 0xdead is not a state a toy can be in',
    );
    expect(b1.calls).toEqual([]);
    expect(b2.calls).toEqual([]);
    const ram = new Uint8Array(4);
    dst.memory.read(0x1fffn, ram);
    expect([...ram]).toEqual([0, 9, 0, 0]);
  });

  it('refuses another machine: RAM size, type, missing and extra sections', async () => {
    const src = await machineWith([new Toy()], '1G');
    const bytes = saveSnapshot(src);
    const big = await machineWith([new Toy()], '2G');
    expect(() => loadSnapshot(big, bytes)).toThrow(
      /snapshot header: the snapshot's machine has 0x40000000 bytes of RAM, this one 0x80000000/,
    );
    const typed = await createMachine([toyPlugin([new Toy()])], { ram: '1G', type: 'other' });
    machines.push(typed);
    expect(() => loadSnapshot(typed, bytes)).toThrow(/is of a null machine, this one is "other"/);
    const two = await machineWith([new Toy(), new Toy()]);
    expect(() => loadSnapshot(two, bytes)).toThrow(
      /snapshot section "toy" \(instance 0x1\): missing from the snapshot/,
    );
    const none = await machineWith([]);
    expect(() => loadSnapshot(none, bytes)).toThrow(
      /snapshot section "toy" \(instance 0x0\): this machine has no such section/,
    );
  });

  it('refuses what is not a snapshot of this format, and a corrupted or truncated one', async () => {
    const src = await machineWith([new Toy()]);
    src.memory.write(0x123456n, new Uint8Array([0xaa]));
    const bytes = saveSnapshot(src);
    const dst = await machineWith([new Toy()]);
    expect(() => loadSnapshot(dst, new Uint8Array(3))).toThrow(/snapshot header: truncated/);
    const magic = bytes.slice();
    magic[0] = 0;
    expect(() => loadSnapshot(dst, magic)).toThrow(/bad magic/);
    const format = bytes.slice();
    new DataView(format.buffer).setUint32(4, 99);
    expect(() => loadSnapshot(dst, format)).toThrow(/format version 99 is not supported/);
    const index = bytes.slice();
    index[layout(bytes).indexAt + 5] ^= 1;
    expect(() => loadSnapshot(dst, index)).toThrow(
      /snapshot header: checksum mismatch: the index is corrupted/,
    );
    const trailer = bytes.slice();
    trailer[bytes.length - 10] ^= 1;
    expect(() => loadSnapshot(dst, trailer)).toThrow(
      /snapshot header: checksum mismatch: the trailer is corrupted/,
    );
    const toy = snapshotInfo(bytes).sections[1]!;
    const body = bytes.slice();
    body[toy.offset + toy.size - 20] ^= 0x40;
    expect(() => loadSnapshot(dst, body)).toThrow(
      /snapshot section "toy" \(instance 0x0\): checksum mismatch/,
    );
    const ram = snapshotInfo(bytes).sections[0]!;
    expect(() => loadSnapshot(dst, bytes.subarray(0, bytes.length - ram.size))).toThrow(
      /snapshot header: truncated: the file does not end with the snapshot trailer/,
    );
    const longer = new Uint8Array(bytes.length + 3);
    longer.set(bytes);
    expect(() => loadSnapshot(dst, longer)).toThrow(/3 unexpected bytes after the end of the snapshot/);
  });

  it('snapshotInfo verifies the file as a load does: every corruption and truncation, the same error', async () => {
    const a = new Toy();
    a.count = 3;
    a.values = varrayOf([1n, 2n, 3n]);
    a.sub_a = 5n;
    const src = await machineWith([a, new Toy()]);
    src.memory.write(0x2000n, new Uint8Array([1, 2, 3]));
    const bytes = saveSnapshot(src);
    const dst = await machineWith([new Toy(), new Toy()]);
    const loadError = (b: Uint8Array) => snapshotError(() => loadSnapshot(dst, b)).message;
    const infoError = (b: Uint8Array) => snapshotError(() => snapshotInfo(b)).message;
    // Every byte of the preamble, the index and the trailer, and bytes all over each section and
    // the end marker, flipped: both refuse it, alike.
    const positions = new Set<number>();
    for (let i = 0; i < 8; i++) positions.add(i);
    for (let i = layout(bytes).indexAt - 1; i < bytes.length; i++) positions.add(i);
    for (const s of snapshotInfo(bytes).sections) {
      for (let i = 0; i < s.size; i += Math.max(1, Math.floor(s.size / 40))) positions.add(s.offset + i);
      positions.add(s.offset + s.size - 1);
    }
    const checked = new Set<string>();
    for (const at of positions) {
      const damaged = bytes.slice();
      damaged[at] ^= 0x10;
      const message = loadError(damaged);
      expect(infoError(damaged), `byte ${at}`).toBe(message);
      checked.add(message.replace(/: .*/, ''));
    }
    // Each section's corruption was reported as such, naming it.
    expect([...checked].sort()).toEqual([
      'snapshot header',
      'snapshot section "ram" (instance 0x0)',
      'snapshot section "toy" (instance 0x0)',
      'snapshot section "toy" (instance 0x1)',
    ]);
    const last = snapshotInfo(bytes).sections[2]!;
    const at = last.offset + last.size - 30;
    expect(infoError(Uint8Array.from(bytes, (b, i) => (i === at ? b ^ 1 : b)))).toBe(
      'snapshot section "toy" (instance 0x1): checksum mismatch: the section is corrupted',
    );
    for (const cut of [...positions, bytes.length - 1]) {
      expect(infoError(bytes.subarray(0, cut)), `cut at ${cut}`).toBe(loadError(bytes.subarray(0, cut)));
    }
    // What needs a machine to check is a load's business: info describes a snapshot of any machine.
    const other = await machineWith([new Toy()], '2G');
    expect(() => loadSnapshot(other, bytes)).toThrow(/RAM/);
    expect(snapshotInfo(bytes).sections).toHaveLength(3);
  });

  it('names the section and field of a malformed stream even when its checksum is right', async () => {
    const src = await machineWith([new Toy()]);
    const dst = await machineWith([new Toy()]);
    const bytes = saveSnapshot(src);
    // The flag byte of the toy section: marker(1) index(4) name(1+3) instance(4) version(4),
    // then id(4) u8(1) u16(2) u32(4) u64(8) i8(1) i32(4) i64(8).
    const flagAt = 1 + 4 + 4 + 4 + 4 + 4 + 1 + 2 + 4 + 8 + 1 + 4 + 8;
    const bad = reseal(
      bytes,
      () => {},
      (p, at) => {
        p[at(1) + flagAt] = 2;
      },
    );
    expect(() => loadSnapshot(dst, bad)).toThrow(
      'snapshot section "toy" (instance 0x0): field flag: bool byte 0x2 is neither 0 nor 1',
    );
    const unknown = reseal(bytes, (h) => {
      h.sections[1]!.name = 'tox';
    });
    expect(() => loadSnapshot(dst, unknown)).toThrow(
      /"tox" \(instance 0x0\): this machine has no such section/,
    );
  });

  it('saves RAM sparsely: untouched and zeroed chunks cost nothing', async () => {
    const src = await machineWith([], '1T');
    const empty = snapshotInfo(saveSnapshot(src)).sections[0]!.size;
    expect(empty).toBeLessThan(100);
    src.memory.write(0x40_0000_0000n, new Uint8Array([1]));
    src.memory.write(
      0x100_0000_0000n - BigInt(RAM_SNAPSHOT_CHUNK),
      new Uint8Array(RAM_SNAPSHOT_CHUNK).fill(7),
    );
    src.memory.write(0x20_0000n, new Uint8Array(16).fill(1));
    src.memory.write(0x20_0000n, new Uint8Array(16)); // allocated, but all zero again
    const bytes = saveSnapshot(src);
    expect(snapshotInfo(bytes).sections[0]!.size).toBe(empty + 2 * (8 + RAM_SNAPSHOT_CHUNK));

    const dst = await machineWith([], '1T');
    dst.memory.write(0x1234n, new Uint8Array([5])); // replaced: RAM is all the snapshot's
    loadSnapshot(dst, bytes);
    const read = (addr: bigint, n: number) => {
      const out = new Uint8Array(n);
      dst.memory.read(addr, out);
      return [...out];
    };
    expect(read(0x40_0000_0000n, 2)).toEqual([1, 0]);
    expect(read(0xff_ffff_fffen, 2)).toEqual([7, 7]);
    expect(read(0x1234n, 1)).toEqual([0]);
    expect(dst.get(MachineTokens.GuestRam).ram.residentChunks).toBe(2);
  });

  it('needs a live machine', async () => {
    const m = await machineWith([]);
    const bytes = saveSnapshot(m);
    m.dispose();
    expect(() => saveSnapshot(m)).toThrow(/cannot save a machine that is disposed/);
    expect(() => loadSnapshot(m, bytes)).toThrow(/disposed/);
  });
});
