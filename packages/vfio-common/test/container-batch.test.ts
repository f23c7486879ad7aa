/**
 * The container's batch contract: a batch of guest TCE changes reaching the VFIO notifier through
 * its batch handler leaves the host, the messages and the vfio_iommu_map_notify trace exactly as
 * the same pages delivered one notify() call each, and exactly as QEMU's per-page
 * vfio_iommu_map_notify (written out below as the reference) does. Whether the trace is enabled
 * never changes the host state or the messages.
 */

import type { SimulatedSpaprTceHost } from '@ddw/host-linux';
import { MachineTokens } from '@ddw/machine';
import {
  type AddressSpace,
  batchEvent,
  IOMMUAccessFlags,
  type IOMMUBatch,
  IOMMUBatchBuffer,
  type IOMMUNotifier,
  type IOMMUTLBEntry,
  RamRegion,
} from '@ddw/memory';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type HostIommuOp, strerror, type VfioContainer, VfioTokens } from '../src/index.js';
import { BUID, passthrough, rtas } from './helpers.js';

const GiB = 1n << 30n;
const RAM = 2n * GiB;
const U64 = 1n << 64n;

/** QEMU's vfio_iommu_map_notify for one entry (7.2 wording), on the container's public pieces. */
function referenceMapNotify(c: VfioContainer, iommuOffset: bigint, entry: IOMMUTLBEntry): void {
  const deps = c.deps;
  const hex = (v: bigint) => v.toString(16);
  const iova = entry.iova + iommuOffset;
  const t = deps.traces.mapNotify;
  if (t.enabled) t.emit(entry.perm === IOMMUAccessFlags.NONE ? 'UNMAP' : 'MAP', iova, iova + entry.addrMask);
  if (entry.targetAs !== deps.systemMemory) {
    c.report(`Wrong target AS "${entry.targetAs?.name ?? 'none'}", only system memory is allowed`);
    return;
  }
  const size = entry.addrMask + 1n;
  if ((entry.perm & IOMMUAccessFlags.RW) !== IOMMUAccessFlags.NONE) {
    const writable = (entry.perm & IOMMUAccessFlags.WO) !== 0;
    const x = deps.systemMemory.translate(entry.translatedAddr, writable, size);
    if (!(x.mr instanceof RamRegion)) {
      c.report(`iommu map to non memory area ${hex(x.xlat)}`);
      return;
    }
    if ((x.plen & entry.addrMask) !== 0n) {
      c.report('iommu has granularity incompatible with target AS');
      return;
    }
    const vaddr = deps.hostPointer(x.mr, x.xlat);
    if (vaddr === undefined) {
      c.report(`iommu map to non memory area ${hex(x.xlat)}`);
      return;
    }
    const ret = c.dmaMap(iova, size, vaddr, !writable || x.readonly);
    if (ret !== 0) {
      c.report(
        `vfio_dma_map(0x${hex(c.pointer)}, 0x${hex(iova)}, 0x${hex(size)}, 0x${hex(vaddr)}) = ${ret} (${strerror(ret)})`,
      );
    }
  } else {
    const ret = c.dmaUnmap(iova, size);
    if (ret !== 0) {
      c.report(
        `vfio_dma_unmap(0x${hex(c.pointer)}, 0x${hex(iova)}, 0x${hex(size)}) = ${ret} (${strerror(ret)})`,
      );
    }
  }
}

type Delivery = 'batch' | 'pages' | 'reference';

/**
 * A 2G pseries machine with a passed-through function and a 64K-page DDW next to the default
 * window; `log` has its trace lines and host errors in the order they came.
 */
async function rig(trace: boolean) {
  const r = await passthrough('-M pseries -m 2G', {}, trace ? ['vfio_iommu_map_notify'] : []);
  expect(rtas(r.m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4)[0]).toBe(0);
  const log: string[] = [];
  r.m.trace.addSink({ write: (l) => void log.push(l) });
  r.m
    .get(MachineTokens.Events)
    .on('host-error', (e) => void log.push(`${e.fatal ? 'fatal: ' : ''}${e.message}`));
  const vfio = r.m.get(VfioTokens.Vfio);
  const container = vfio.containers[0]!;
  // The default window (4K pages) and the DDW (64K pages), each with VFIO's notifier.
  const windows = container.guestIommus
    .map((g) => ({ ...g, notifier: g.mr.notifiers.find((n) => n.notifyBatch !== undefined)! }))
    .sort((a, b) => (a.iommuOffset < b.iommuOffset ? -1 : 1));
  expect(windows).toHaveLength(2);
  r.lines.length = 0;
  r.hostErrors.length = 0;
  return { ...r, log, host: vfio.host as SimulatedSpaprTceHost, container, windows };
}

type Rig = Awaited<ReturnType<typeof rig>>;

function deliver(
  rigged: Rig,
  how: Delivery,
  w: { notifier: IOMMUNotifier; iommuOffset: bigint },
  batch: IOMMUBatch,
): void {
  const n = w.notifier;
  if (how === 'batch') {
    n.notifyBatch!(batch, n);
    return;
  }
  for (let s = 0; s < batch.length; s++) {
    for (let k = 0; k < batch.pages[s]!; k++) {
      const { entry } = batchEvent(batch, s, k);
      if (how === 'pages') n.notify(entry, n);
      else referenceMapNotify(rigged.container, w.iommuOffset, entry);
    }
  }
}

/** Lines with the container's pointer (different per machine) blanked out. */
function normalized(r: Rig, lines: string[]): string[] {
  const pointer = r.container.pointer.toString(16);
  return lines.map((l) => l.replaceAll(pointer, 'PTR'));
}

/** Host state and messages, with the container's pointer blanked out. */
function outcome(r: Rig): { host: string; messages: string[] } {
  const pointer = r.container.pointer.toString(16);
  const pages = r.container.fd
    .mappings()
    .map((m) => `${m.iova.toString(16)}=${m.vaddr.toString(16)}${m.read ? 'r' : ''}${m.write ? 'w' : ''}`);
  const regions = r.host.regions().map((x) => `${x.vaddr.toString(16)}:${x.mapped}`);
  return {
    host: [pages.join(' '), regions.join(' '), r.host.lockedBytes, r.container.fd.mappedCount()].join(' | '),
    messages: r.hostErrors.map((e) => `${e.fatal ? 'fatal: ' : ''}${e.message.replaceAll(pointer, 'PTR')}`),
  };
}

const segment = fc.record({
  gap: fc.oneof(fc.constant(0), fc.nat(40), fc.nat(5000)),
  pages: fc.oneof(
    { arbitrary: fc.integer({ min: 1, max: 40 }), weight: 3 },
    fc.integer({ min: 1, max: 700 }),
  ),
  // Where the pages lead: RAM, the end of RAM, past it, far past it, wrapping past 2^64.
  addr: fc.oneof(
    { arbitrary: fc.bigInt({ min: 0n, max: RAM - 1n }), weight: 6 },
    fc.bigInt({ min: RAM - 0x40000n, max: RAM + 0x10000n }),
    fc.bigInt({ min: RAM, max: 1n << 40n }),
    fc.constantFrom(1n << 60n, U64 - 0x20000n),
  ),
  step: fc.constantFrom(0, 1, 1, 1, 2, 7),
  perm: fc.constantFrom(0, 0, 1, 2, 3, 3),
});

const fault = fc.option(
  fc.record({
    op: fc.constantFrom<HostIommuOp>('mapDma', 'unmapDma'),
    errno: fc.constantFrom(16, 12, 22),
    count: fc.integer({ min: 1, max: 3 }),
  }),
  { nil: undefined },
);

const step = fc.record({
  window: fc.nat(1),
  target: fc.constantFrom('system', 'system', 'system', 'system', 'none', 'other'),
  fault,
  segments: fc.array(segment, { minLength: 1, maxLength: 6 }),
});

/** The batch a step describes, for the window's page size and the machine's address spaces. */
function batchOf(r: Rig, s: typeof step extends fc.Arbitrary<infer T> ? T : never): IOMMUBatch {
  const w = r.windows[s.window]!;
  const shift = s.window === 0 ? 12 : 16;
  const entries = Number(w.mr.size >> BigInt(shift));
  const other: AddressSpace = r.phb.dmaAddressSpace;
  const target = s.target === 'system' ? r.container.deps.systemMemory : s.target === 'other' ? other : null;
  const batch = new IOMMUBatchBuffer().reset(target, shift);
  let index = 0;
  for (const seg of s.segments) {
    index += seg.gap;
    const pages = Math.min(seg.pages, entries - index);
    if (pages <= 0) break;
    const addr = seg.addr & ~((1n << BigInt(shift)) - 1n);
    batch.push(index, pages, Number(addr >> 32n), Number(addr & 0xffffffffn), seg.step, seg.perm);
    index += pages;
  }
  return batch;
}

describe('VfioContainer: a batch acts exactly as its pages one by one (the container contract)', () => {
  it('same host state, messages and traces through notifyBatch, notify per page and QEMU per page', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()),
        fc.array(step, { minLength: 1, maxLength: 5 }),
        async (traced, steps) => {
          const hows: Delivery[] = ['batch', 'pages', 'reference'];
          const rigs = await Promise.all(traced.map((t) => rig(t)));
          try {
            for (const s of steps) {
              for (const [i, r] of rigs.entries()) {
                if (s.fault) r.host.injectFault(s.fault.op, s.fault.errno, s.fault.count);
                deliver(r, hows[i]!, r.windows[s.window]!, batchOf(r, s));
              }
              const [a, ...others] = rigs.map(outcome);
              for (const o of others) {
                expect(o.host).toBe(a!.host);
                expect(o.messages).toEqual(a!.messages);
              }
              // Trace lines and messages interleave as QEMU's page loop emits them.
              const logs = rigs.filter((_r, i) => traced[i]).map((r) => normalized(r, r.log).join('\n'));
              for (const l of logs) expect(l).toBe(logs[0]);
            }
            // Nothing was delivered without a trace line for it.
            for (const [i, r] of rigs.entries()) {
              if (traced[i]) expect(r.lines.length).toBeGreaterThan(0);
            }
          } finally {
            for (const r of rigs) r.m.dispose();
          }
        },
      ),
      { numRuns: 40 },
    );
  }, 300_000);

  it('a direct window of 512-page segments reaches the host as runs and leaves it the same', async () => {
    const [a, b] = [await rig(false), await rig(true)];
    for (const r of [a, b]) {
      const w = r.windows[1]!;
      const batch = new IOMMUBatchBuffer();
      // 2 GiB of RAM in 64K pages: 32768 pages, as H_PUT_TCE_INDIRECT calls of 512.
      for (let first = 0; first < 32768; first += 512) {
        const addr = BigInt(first) << 16n;
        batch.reset(r.container.deps.systemMemory, 16).push(first, 512, 0, Number(addr), 1, 3);
        w.notifier.notifyBatch!(batch, w.notifier);
      }
    }
    expect(outcome(a)).toEqual(outcome(b));
    expect(a.container.fd.mappedCount()).toBe(32768);
    expect(b.lines).toHaveLength(32768);
    expect(b.lines[1]).toBe('vfio_iommu_map_notify iommu MAP @ 0x800000000010000 - 0x80000000001ffff');
    const runs: number[] = [];
    a.container.fd.forEachMapping((_iova, pages) => void runs.push(pages));
    expect(runs).toEqual([32768]);
    expect(a.hostErrors).toEqual([]);
  });
});
