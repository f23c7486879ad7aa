import {
  createMachine,
  loadSnapshot,
  type Machine,
  MachineTokens,
  SnapshotError,
  saveSnapshot,
  snapshotInfo,
} from '@ddw/machine';
import { IOMMUNotifier, IOMMUNotifierFlag, type IOMMUTLBEntry } from '@ddw/memory';
import { afterEach, describe, expect, it } from 'vitest';
import { reseal } from '../../machine/test/support/snapshot-layout.js';
import { H_PUT_TCE, SpaprIommuTokens, type SpaprTceTable, spaprIommu } from '../src/index.js';

const W0 = 0x80000000;
const W1 = 0x80000001;
const WINDOW1_BUS = 0x800000000000000n; // 2^59

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** A machine with a "PHB" of two tables: the default window enabled, window 1 optionally (T5). */
async function machine(options: { window1?: boolean; migrationVersion?: number; accel?: 'kvm' } = {}) {
  let w0!: SpaprTceTable;
  let w1!: SpaprTceTable;
  const m = await createMachine(
    [
      spaprIommu({
        ...(options.migrationVersion !== undefined ? { migrationVersion: options.migrationVersion } : {}),
        ...(options.accel ? { accel: options.accel } : {}),
      }),
      {
        name: 'test-phb',
        requires: ['spapr-iommu'],
        register(ctx) {
          const tables = ctx.get(SpaprIommuTokens.Tables);
          w0 = tables.create(W0, 'test-phb');
          w1 = tables.create(W1, 'test-phb');
          w0.enable(12, 0n, 0x40000);
          w0.defWin = true;
          if (options.window1) w1.enable(16, WINDOW1_BUS, 0x80000);
        },
      },
    ],
    { ram: '4G' },
  );
  machines.push(m);
  const lines = m.trace.collect();
  m.trace.enable('spapr_iommu_pre_save');
  m.trace.enable('spapr_iommu_post_load');
  return { m, w0, w1, lines: lines.lines };
}

/** Every non-zero entry of a table, with its window. */
function state(t: SpaprTceTable) {
  const entries: [number, bigint][] = [];
  t.storage?.forEachNonZero((i, high, low) => entries.push([i, (BigInt(high) << 32n) | BigInt(low)]));
  return {
    enabled: t.enabled,
    nb: t.nbTable,
    bus: t.busOffset,
    ps: t.pageShift,
    defWin: t.defWin,
    bypass: t.bypass,
    region: t.iommu.container ? [t.iommu.addr, t.iommu.size] : null,
    entries,
  };
}

/** Where each section's bytes start in a snapshot. */
function sectionOffsets(bytes: Uint8Array): { name: string; instanceId: number; at: number; size: number }[] {
  return snapshotInfo(bytes).sections.map((s) => ({
    name: s.name,
    instanceId: s.instanceId,
    at: s.offset,
    size: s.size,
  }));
}

/**
 * The "spapr_iommu" section of one LIOBN decoded independently, field by field as QEMU lays it
 * out, expanding the zero-block runs and the affine blocks (progressions) of the entries.
 */
function qemuSection(bytes: Uint8Array, liobn: number) {
  const s = sectionOffsets(bytes).find((x) => x.name === 'spapr_iommu' && x.instanceId === liobn)!;
  const v = new DataView(bytes.buffer, bytes.byteOffset);
  let p = s.at;
  const u8 = () => bytes[p++]!;
  const u32 = () => {
    p += 4;
    return v.getUint32(p - 4);
  };
  const u64 = () => {
    p += 8;
    return v.getBigUint64(p - 8);
  };
  const name = () => {
    const n = bytes[p]!;
    p += 1 + n;
    return String.fromCharCode(...bytes.subarray(p - n, p));
  };
  expect(u8()).toBe(0x04);
  const index = u32();
  expect(name()).toBe('spapr_iommu');
  expect(u32()).toBe(liobn);
  const version = u32();
  const fields: Record<string, unknown> = { liobn: u32(), mig_nb_table: u32(), bypass: u8() };
  const nb = fields.mig_nb_table as number;
  const entries = new Map<number, bigint>();
  let block = 0;
  while (block < Math.ceil(nb / 16384)) {
    const tag = u8();
    if (tag === 0) {
      block += u32();
      continue;
    }
    if (tag === 2) {
      // b whole blocks, element i (from the first of the first block) is first + i*stride mod 2^64.
      const count = u32();
      const first = u64();
      const stride = u64();
      expect(count).toBeGreaterThanOrEqual(1);
      expect(stride < 1n << 36n).toBe(true);
      const from = block * 16384;
      for (let i = from; i < Math.min(nb, (block + count) * 16384); i++) {
        const e = BigInt.asUintN(64, first + BigInt(i - from) * stride);
        if (e !== 0n) entries.set(i, e);
      }
      block += count;
      continue;
    }
    expect(tag).toBe(1);
    for (let i = block * 16384; i < Math.min(nb, (block + 1) * 16384); i++) {
      const e = u64();
      if (e !== 0n) entries.set(i, e);
    }
    block++;
  }
  expect(block).toBe(Math.ceil(nb / 16384));
  if (version >= 3) fields.def_win = u8();
  const subsections: Record<string, unknown> = {};
  while (bytes[p] === 0x05) {
    p++;
    const sub = name();
    subsections[sub] = { version: u32(), bus_offset: u64(), page_shift: u32() };
  }
  expect(u8()).toBe(0x7e);
  expect(u32()).toBe(index);
  expect(p).toBe(s.at + s.size);
  return { version, fields, entries, subsections };
}

/** Patches bytes of a section and fixes the checksums, as a writer with other values would. */
function patched(bytes: Uint8Array, liobn: number, patch: (view: DataView, at: number) => void): Uint8Array {
  const i = snapshotInfo(bytes).sections.findIndex((x) => x.name === 'spapr_iommu' && x.instanceId === liobn);
  expect(i).toBeGreaterThanOrEqual(0);
  return reseal(bytes, undefined, (payload, sectionAt) =>
    patch(new DataView(payload.buffer, payload.byteOffset, payload.byteLength), sectionAt(i)),
  );
}

/** Offset of the liobn field in a section: marker, index, name (1 + 11), instance id, version. */
const LIOBN_AT = 1 + 4 + 12 + 4 + 4;

describe('T25: the "spapr_iommu" section', () => {
  it('carries a 64K window at 2^59 to a fresh destination, with its subsection and identical entries', async () => {
    const src = await machine({ window1: true });
    src.m.guest.hcall(H_PUT_TCE, BigInt(W1), WINDOW1_BUS + 0x10000n, 0xabcd0001n);
    src.m.guest.hcall(H_PUT_TCE, BigInt(W1), WINDOW1_BUS + (0x7ffffn << 16n), 0x1_2345_0003n);
    src.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x3000n, 0x5002n);
    const bytes = saveSnapshot(src.m);
    expect(src.lines).toEqual([
      'spapr_iommu_pre_save liobn=80000000 40000 bus_offset=0x0 ps=12',
      'spapr_iommu_pre_save liobn=80000001 80000 bus_offset=0x800000000000000 ps=16',
    ]);

    const s1 = qemuSection(bytes, W1);
    expect(s1.version).toBe(3);
    expect(s1.fields).toEqual({ liobn: W1, mig_nb_table: 0x80000, bypass: 0, def_win: 0 });
    expect([...s1.entries]).toEqual([
      [1, 0xabcd0001n],
      [0x7ffff, 0x1_2345_0003n],
    ]);
    expect(s1.subsections).toEqual({
      spapr_iommu_ex: { version: 1, bus_offset: WINDOW1_BUS, page_shift: 16 },
    });
    // The default window sends no subsection; def_win travels in version 3.
    const s0 = qemuSection(bytes, W0);
    expect(s0.fields).toEqual({ liobn: W0, mig_nb_table: 0x40000, bypass: 0, def_win: 1 });
    expect(s0.subsections).toEqual({});
    expect([...s0.entries]).toEqual([[3, 0x5002n]]);

    const dst = await machine();
    expect(dst.w1.enabled).toBe(false);
    loadSnapshot(dst.m, bytes);
    expect(state(dst.w1)).toEqual(state(src.w1));
    expect(state(dst.w0)).toEqual(state(src.w0));
    expect(state(dst.w1).region).toEqual([WINDOW1_BUS, 0x80000n << 16n]);
    expect(dst.lines).toEqual([
      'spapr_iommu_post_load liobn=80000000 40000 => 0x40000 bus_offset=0x0 ps=12',
      'spapr_iommu_post_load liobn=80000001 0 => 0x80000 bus_offset=0x800000000000000 ps=16',
    ]);
    // The guest sees the same entries through the hypercalls.
    expect(dst.m.guest.hcall(0x1c, BigInt(W1), WINDOW1_BUS + 0x10000n).outputs?.[0]).toBe(0xabcd0001n);
  });

  it('fails the load when the LIOBN field differs, leaving the destination as it was', async () => {
    const src = await machine({ window1: true });
    const bytes = patched(saveSnapshot(src.m), W0, (v, at) => v.setUint32(at + LIOBN_AT, W1));
    const dst = await machine();
    dst.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x7003n);
    const before = [state(dst.w0), state(dst.w1)];
    let error: unknown;
    try {
      loadSnapshot(dst.m, bytes);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SnapshotError);
    expect((error as SnapshotError).message).toMatch(
      /^snapshot section "spapr_iommu" \(instance 0x80000000\): field liobn: 0x80000001 != 0x80000000/,
    );
    expect([state(dst.w0), state(dst.w1)]).toEqual(before);
    expect(dst.lines).toEqual([]);
  });

  it('version 2 (pseries-2.7) carries no def_win; a version 3 machine loads it, a version 2 one refuses version 3', async () => {
    const old = await machine({ window1: true, migrationVersion: 2 });
    const v2 = saveSnapshot(old.m);
    expect(
      snapshotInfo(v2)
        .sections.filter((s) => s.name === 'spapr_iommu')
        .map((s) => s.version),
    ).toEqual([2, 2]);
    const s0 = qemuSection(v2, W0);
    expect(s0.version).toBe(2);
    expect(s0.fields).toEqual({ liobn: W0, mig_nb_table: 0x40000, bypass: 0 });

    const dst = await machine();
    dst.w0.defWin = false;
    loadSnapshot(dst.m, v2);
    expect(dst.w1.enabled).toBe(true);
    expect(dst.w0.defWin).toBe(false); // not in the stream: the destination keeps its own

    const v3 = saveSnapshot((await machine()).m);
    const older = await machine({ migrationVersion: 2 });
    expect(() => loadSnapshot(older.m, v3)).toThrow(
      'snapshot section "spapr_iommu" (instance 0x80000000): version 3 is not supported (this machine loads versions 2..2)',
    );
    await expect(machine({ migrationVersion: 4 })).rejects.toThrow(/migrationVersion/);
  });
});

describe('spapr_iommu post_load', () => {
  it('disables a window the source had disabled (whose section carries bus 0, ps 0)', async () => {
    const src = await machine();
    src.w0.disable();
    const bytes = saveSnapshot(src.m);
    expect(qemuSection(bytes, W0).subsections).toEqual({
      spapr_iommu_ex: { version: 1, bus_offset: 0n, page_shift: 0 },
    });
    const dst = await machine();
    loadSnapshot(dst.m, bytes);
    expect(state(dst.w0)).toEqual(state(src.w0));
    expect(dst.lines[0]).toBe('spapr_iommu_post_load liobn=80000000 40000 => 0x0 bus_offset=0x0 ps=0');
  });

  it('re-creates a window of another size, and one of the same size elsewhere', async () => {
    const src = await machine({ window1: true });
    src.w0.disable();
    src.w0.enable(16, 0n, 0x4000);
    src.w1.disable();
    // Same number of entries as the destination's window 1 would have... and its default window.
    src.w1.enable(12, WINDOW1_BUS, 0x40000);
    src.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x20000n, 0x10003n);
    src.m.guest.hcall(H_PUT_TCE, BigInt(W1), WINDOW1_BUS, 0x20001n);
    const bytes = saveSnapshot(src.m);

    const dst = await machine();
    dst.w1.enable(12, 0x1000_0000n, 0x40000); // same size as the source's, other place
    loadSnapshot(dst.m, bytes);
    expect(state(dst.w0)).toEqual(state(src.w0));
    expect(state(dst.w1)).toEqual(state(src.w1));
    expect(dst.lines).toEqual([
      'spapr_iommu_post_load liobn=80000000 40000 => 0x4000 bus_offset=0x0 ps=16',
      'spapr_iommu_post_load liobn=80000001 40000 => 0x40000 bus_offset=0x800000000000000 ps=12',
    ]);
  });

  it('tells notifiers of a window that stays about each entry that changes, and nothing else', async () => {
    const src = await machine();
    src.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x11003n); // same on both sides
    src.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x2000n, 0x22001n); // differs
    src.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x4000n, 0x44002n); // only here
    const bytes = saveSnapshot(src.m);

    const dst = await machine();
    dst.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x11003n);
    dst.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x2000n, 0x99003n);
    dst.m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x3000n, 0x33003n); // only there
    const seen: IOMMUTLBEntry[] = [];
    dst.w0.iommu.registerNotifier(new IOMMUNotifier((e) => seen.push(e), IOMMUNotifierFlag.MAP_UNMAP));
    loadSnapshot(dst.m, bytes);
    expect(seen.map((e) => [e.iova, e.translatedAddr, e.perm])).toEqual([
      [0x2000n, 0x22000n, 1],
      [0x3000n, 0n, 0],
      [0x4000n, 0x44000n, 2],
    ]);
    expect(state(dst.w0).entries).toEqual(state(src.w0).entries);
  });

  it('refuses a window its table could not hold, before changing anything', async () => {
    const src = await machine({ window1: true });
    const bytes = saveSnapshot(src.m);
    const at = sectionOffsets(bytes).find((s) => s.instanceId === W1)!;
    // The subsection's fields are the section's last 12 bytes before the 5-byte footer.
    const subAt = at.size - 5 - 12;
    const dst = await machine();
    const before = [state(dst.w0), state(dst.w1)];
    const shift64 = patched(bytes, W1, (v, a) => v.setUint32(a + subAt + 8, 64));
    expect(() => loadSnapshot(dst.m, shift64)).toThrow(
      'snapshot section "spapr_iommu" (instance 0x80000001): refused: the window\'s page shift 64 is 64 or more',
    );
    const beyond = patched(bytes, W1, (v, a) => v.setBigUint64(a + subAt, 0xffff_ffff_0000_0000n));
    expect(() => loadSnapshot(dst.m, beyond)).toThrow(/ends beyond 2\^64/);
    expect([state(dst.w0), state(dst.w1)]).toEqual(before);
  });

  it('restores bypass and works with in-kernel (KVM) tables', async () => {
    const src = await machine({ window1: true, accel: 'kvm' });
    src.w1.bypass = true;
    src.m.guest.hcall(H_PUT_TCE, BigInt(W1), WINDOW1_BUS + 0x30000n, 0x77003n);
    const dst = await machine({ accel: 'kvm' });
    loadSnapshot(dst.m, saveSnapshot(src.m));
    expect(state(dst.w1)).toEqual(state(src.w1));
    expect(dst.w1.inKernel).toBe(true);
  });

  it('a deleted table takes its section with it', async () => {
    const { m, w1 } = await machine();
    expect(m.get(MachineTokens.Vmstate).find('spapr_iommu', W1)).toBeDefined();
    m.get(SpaprIommuTokens.Tables).delete(w1);
    expect(m.get(MachineTokens.Vmstate).find('spapr_iommu', W1)).toBeUndefined();
  });
});
