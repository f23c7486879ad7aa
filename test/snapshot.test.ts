import { createHash } from 'node:crypto';
import {
  H_PUT_TCE,
  loadSnapshot,
  type Machine,
  MachineTokens,
  SnapshotError,
  saveSnapshot,
  snapshotInfo,
} from '@ddw/machine';
import { buildPseries } from '@ddw/pseries';
import { H_PUT_TCE_INDIRECT, H_STUFF_TCE, SpaprIommuTokens } from '@ddw/spapr-iommu';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { VfioTokens } from '@ddw/vfio-common';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { layout, reseal } from '../packages/machine/test/support/snapshot-layout.js';
import {
  applyGuestOps,
  guestOpArb,
  vfioMappings as guestOpMappings,
  phbWindows,
} from './support/guest-ops.js';

const BUID = [0x08000000, 0x20000000];
const LIST = 0x3ff00000n; // a guest page for TCE lists, inside 1 GiB of RAM
const _HOST_PAGE = 0x10000n;
const VFIO_MACHINE = '-M pseries -m 1G -device vfio-pci,host=0000:01:00.0 -device e1000e';

const machines: Machine[] = [];
async function build(args = VFIO_MACHINE): Promise<Machine> {
  const m = await buildPseries(args);
  machines.push(m);
  return m;
}
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

const sha = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex').slice(0, 16);

/**
 * Everything a guest can observe, as one string: guest RAM, every TCE table (window, flags,
 * entries, where its region sits) and the device tree.
 */
function digest(m: Machine): string {
  const ram: string[] = [];
  for (const [offset, chunk] of m.get(MachineTokens.GuestRam).ram.chunks()) {
    if (chunk.some((b) => b !== 0)) ram.push(`${offset.toString(16)}:${sha(chunk)}`);
  }
  const tables = m
    .get(SpaprIommuTokens.Tables)
    .list()
    .map((t) => {
      const entries: string[] = [];
      t.storage?.forEachNonZero((i, high, low) => entries.push(`${i}=${high}:${low}`));
      return {
        liobn: t.liobn,
        nb: t.nbTable,
        bus: t.busOffset.toString(16),
        ps: t.pageShift,
        defWin: t.defWin,
        bypass: t.bypass,
        region: t.iommu.container ? `${t.iommu.addr.toString(16)}+${t.iommu.size.toString(16)}` : null,
        entries: sha(entries.join(',')),
      };
    });
  const dt = m
    .get(MachineTokens.DeviceTree)
    .nodes()
    .map((node) => ({
      node,
      props: m
        .get(MachineTokens.DeviceTree)
        .props(node)
        .map((p) => `${p}=${Buffer.from(m.get(MachineTokens.DeviceTree).getProp(node, p)!).toString('hex')}`),
    }));
  return JSON.stringify({ ram, tables, dt });
}

/**
 * VFIO's host mappings against the guest's valid TCEs in the windows the host knows (the invariant
 * of test/vfio.property.test.ts), or undefined when it does not apply: the container stopped
 * working (QEMU's hw_error), or a valid TCE points outside RAM (QEMU refuses to map it and leaves
 * whatever the host had there).
 */
/** VFIO's expected and actual host mappings, unless the container stopped (QEMU's hw_error). */
function vfioMappings(m: Machine) {
  const container = m.get(VfioTokens.Vfio).containers[0]!;
  if (container.broken !== undefined) return undefined;
  return guestOpMappings(m);
}

/** Byte equality of two snapshots (without vitest's element-wise diff of large arrays). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

/** The host IOMMU's mappings as they are, for before/after comparisons. */
function hostMappings(m: Machine): string[] {
  const container = m.get(VfioTokens.Vfio).containers[0]!;
  return container.fd.mappings().map((mp) => `${mp.iova}+${mp.size}=${mp.vaddr}:${mp.read}:${mp.write}`);
}

function expectVfioConsistent(m: Machine): void {
  const mappings = vfioMappings(m);
  if (mappings) expect(mappings.actual).toEqual(mappings.expected);
}

/** The TCE tables of the machine's PHB (window 0, the default, and window 1). */
const windows = phbWindows;

/** A running machine with a DDW, TCEs in both windows and data in RAM, as Linux leaves it. */
async function populated(args = VFIO_MACHINE): Promise<Machine> {
  const m = await build(args);
  m.run();
  const r = m.guest.rtasCall('ibm,create-pe-dma-window', [0, ...BUID, 16, 35], 4);
  expect(r.status).toBe(0);
  const ddw = windows(m)[1]!;
  const list = new Uint8Array(512 * 8);
  const view = new DataView(list.buffer);
  for (let k = 0; k < 512; k++) view.setBigUint64(k * 8, (BigInt(k) << 16n) | 3n);
  m.memory.write(LIST, list);
  m.guest.hcall(H_PUT_TCE_INDIRECT, BigInt(ddw.liobn), ddw.busOffset + (0x100n << 16n), LIST, 512n);
  m.guest.hcall(H_PUT_TCE, 0x80000000n, 0x5000n, 0x0123_0001n);
  m.guest.hcall(H_STUFF_TCE, 0x80000000n, 0x20000n, 0x0456_0002n, 7n);
  m.memory.write(0x0123_0000n, new TextEncoder().encode('data a device reads'));
  m.memory.write(0x3000_0000n, new Uint8Array(100_000).fill(0x5a));
  return m;
}

describe('a whole machine round trip', () => {
  it('loads into a fresh machine of the same description: guest-visible state identical, VFIO mappings rebuilt', async () => {
    const src = await populated();
    const bytes = saveSnapshot(src);
    const dst = await build();
    const before = vfioMappings(dst)!;
    expect(before.actual.size).toBe(0);
    loadSnapshot(dst, bytes);
    expect(digest(dst)).toBe(digest(src));
    const after = vfioMappings(dst)!;
    expect(after.actual.size).toBe(512 + 1 + 7);
    expect(after.actual).toEqual(after.expected);
    expect(after.actual).toEqual(vfioMappings(src)!.actual);
    // A device's DMA reads the same bytes through the restored window.
    const dev = (m: Machine) =>
      m.get(SpaprPciTokens.Phbs).list[0]!.devices.find((d) => d.driver === 'e1000e')!;
    expect(dev(dst).dmaRead(0x5000n, 19)).toEqual(dev(src).dmaRead(0x5000n, 19));
    expect(new TextDecoder().decode(dev(dst).dmaRead(0x5000n, 19).data)).toBe('data a device reads');
    // Nothing was lost: saving the destination gives the same bytes.
    expect(sameBytes(saveSnapshot(dst), bytes)).toBe(true);
    // And the guest carries on as on the source: removing the DDW restores the same state.
    for (const m of [src, dst]) m.guest.rtasCall('ibm,remove-pe-dma-window', [0x80000001], 1);
    expect(digest(dst)).toBe(digest(src));
    expectVfioConsistent(dst);
  });

  it('is proportional to what is written: a 1 TiB guest with nothing touched is small', async () => {
    const m = await build('-M pseries -m 1T');
    expect(saveSnapshot(m).length).toBeLessThan(2000);
  });

  it('pseries-2.7 writes version 2 TCE sections and round-trips', async () => {
    const args = '-M pseries-2.7 -m 1G -device vfio-pci,host=0000:01:00.0';
    const src = await populated(args);
    const bytes = saveSnapshot(src);
    expect(
      snapshotInfo(bytes)
        .sections.filter((s) => s.name === 'spapr_iommu')
        .map((s) => s.version),
    ).toEqual([2, 2]);
    const dst = await build(args);
    loadSnapshot(dst, bytes);
    expect(digest(dst)).toBe(digest(src));
    expectVfioConsistent(dst);
  });

  it('refuses a snapshot of another machine before changing anything', async () => {
    const bytes = saveSnapshot(await populated());
    const cases: [string, RegExp][] = [
      [
        '-M pseries-2.7 -m 1G -device vfio-pci,host=0000:01:00.0 -device e1000e',
        /is of a "pseries-10.0" machine, this one is "pseries-2.7"/,
      ],
      [
        '-M pseries -m 2G -device vfio-pci,host=0000:01:00.0 -device e1000e',
        /0x40000000 bytes of RAM, this one 0x80000000/,
      ],
      [
        `${VFIO_MACHINE} -device spapr-pci-host-bridge,index=1,id=pci1`,
        /snapshot section "spapr_iommu" \(instance 0x80000100\): missing from the snapshot/,
      ],
    ];
    for (const [args, message] of cases) {
      const m = await build(args);
      const before = digest(m);
      expect(() => loadSnapshot(m, bytes)).toThrow(message);
      expect(digest(m)).toBe(before);
    }
  });

  it('refuses every truncation, naming the section cut, and leaves the machine unchanged', async () => {
    const bytes = saveSnapshot(await populated());
    const target = await populated();
    target.guest.hcall(H_PUT_TCE, 0x80000000n, 0x7000n, 0x0999_0003n);
    const before = digest(target);
    const mappings = hostMappings(target);
    const info = snapshotInfo(bytes);
    const cuts = new Set<number>([0, 1, 15, 16, 17, bytes.length - 1]);
    let at = bytes.length - 1 - info.sections.reduce((n, s) => n + s.size, 0);
    for (const s of info.sections) {
      for (const d of [0, 1, 5, 30, s.size - 1]) cuts.add(at + d);
      at += s.size;
    }
    for (const cut of cuts) {
      let error: unknown;
      try {
        loadSnapshot(target, bytes.subarray(0, cut));
      } catch (e) {
        error = e;
      }
      expect(error, `cut at ${cut}`).toBeInstanceOf(SnapshotError);
      expect((error as Error).message).toMatch(
        /^snapshot (header|section "\w+" \(instance 0x[0-9a-f]+\)): truncated/,
      );
    }
    expect(digest(target)).toBe(before);
    expect(hostMappings(target)).toEqual(mappings);
  });
});

// ---------------------------------------------------------------------------------------------
// Random machine states

const opArb = guestOpArb({ ram: true });
const apply = applyGuestOps;

describe('random machine states', () => {
  it('save -> load into a machine with its own state -> equal, with VFIO mappings matching the TCEs', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 25 }),
        fc.array(opArb, { maxLength: 10 }),
        async (sourceOps, targetOps) => {
          const src = await buildPseries(VFIO_MACHINE);
          const dst = await buildPseries(VFIO_MACHINE);
          try {
            apply(src, sourceOps);
            apply(dst, targetOps);
            const bytes = saveSnapshot(src);
            loadSnapshot(dst, bytes);
            expect(digest(dst)).toBe(digest(src));
            if (vfioMappings(src) !== undefined) expectVfioConsistent(dst);
            expect(sameBytes(saveSnapshot(dst), bytes)).toBe(true);
          } finally {
            src.dispose();
            dst.dispose();
          }
        },
      ),
      { numRuns: 100 },
    );
  }, 120_000);
});

describe('fuzzed snapshots', () => {
  /** A machine to load into whose state must survive every refused load. */
  async function fixture() {
    const src = await populated();
    apply(src, [{ kind: 'ram', addr: 0x100, bytes: [1, 2, 3] }]);
    const bytes = saveSnapshot(src);
    const target = await build();
    apply(target, [
      { kind: 'put', window: 0, page: 3, target: 77, perm: 3 },
      { kind: 'ram', addr: 0x200, bytes: [9] },
    ]);
    return { src, bytes, target };
  }

  /** Loads `bytes`: a SnapshotError and no change, or (checksums intact) a complete load. */
  function tryLoad(target: Machine, bytes: Uint8Array, srcDigest: string | undefined): 'refused' | 'loaded' {
    const before = digest(target);
    const mappings = hostMappings(target);
    try {
      loadSnapshot(target, bytes);
    } catch (error) {
      expect(error).toBeInstanceOf(SnapshotError);
      expect((error as SnapshotError).message).toMatch(
        /^snapshot (header|section "[^"]+"( \(instance 0x[0-9a-f]+\))?): ./,
      );
      expect(digest(target)).toBe(before);
      expect(hostMappings(target)).toEqual(mappings);
      return 'refused';
    }
    if (srcDigest !== undefined) expect(digest(target)).toBe(srcDigest);
    expectVfioConsistent(target);
    return 'loaded';
  }

  it('random byte flips and truncations: a SnapshotError and an unchanged machine', async () => {
    const { src, bytes, target } = await fixture();
    const srcDigest = digest(src);
    let loaded = 0;
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ at: fc.nat({ max: bytes.length - 1 }), xor: fc.integer({ min: 1, max: 255 }) }),
          {
            minLength: 1,
            maxLength: 4,
          },
        ),
        fc.option(fc.nat({ max: bytes.length }), { nil: undefined }),
        (flips, cut) => {
          const mutated = bytes.slice(0, cut);
          for (const { at, xor } of flips) if (at < mutated.length) mutated[at]! ^= xor;
          if (tryLoad(target, mutated, srcDigest) === 'loaded') loaded++;
        },
      ),
      { numRuns: 300 },
    );
    // Only an unchanged file (the flips all beyond a cut at the very end) loads.
    expect(loaded).toBeLessThan(300);
  }, 60_000);

  it('mutations behind the checksums: never another error, never half a load', async () => {
    const { bytes, target } = await fixture();
    const { sections } = snapshotInfo(bytes);
    // The independent parse of the layout agrees with the reader on where each section starts.
    expect(layout(bytes).starts).toEqual(sections.map((s) => s.offset));
    /** The file with its checksums recomputed after `mutate` changed the payload in place. */
    const resealed = (mutate: (payload: Uint8Array, sectionAt: (i: number) => number) => void) =>
      // Section sizes stay, as the index says.
      reseal(bytes, undefined, mutate);
    let refused = 0;
    let loaded = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: sections.length - 1 }),
        fc.array(fc.record({ offset: fc.nat({ max: 200 }), value: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 3,
        }),
        async (section, writes) => {
          const size = sections[section]!.size;
          const mutated = resealed((payload, sectionAt) => {
            const base = sectionAt(section);
            for (const { offset, value } of writes) payload[base + (offset % size)] = value;
          });
          if (tryLoad(target, mutated, undefined) === 'refused') {
            refused++;
            return;
          }
          // A load that succeeds is complete: the machine is what a fresh one loads from the same
          // bytes (for the first few; each needs a machine of its own).
          if (++loaded > 15) return;
          const fresh = await buildPseries(VFIO_MACHINE);
          try {
            loadSnapshot(fresh, mutated);
            expect(digest(target)).toBe(digest(fresh));
          } finally {
            fresh.dispose();
          }
        },
      ),
      { numRuns: 300 },
    );
    expect(refused).toBeGreaterThan(0);
    expect(loaded).toBeGreaterThan(0);
  }, 60_000);
});
