import {
  AddressSpace,
  ContainerRegion,
  IOMMUAccessFlags,
  type IOMMUTLBEntry,
  IommuMemoryRegion,
  iommuMiss,
  MmioRegion,
  RamRegion,
} from '@ddw/memory';
import { type Benchmark, throughput } from './harness.js';

const KIB64 = 64 * 1024;
const RAM_BYTES = 64 * 1024 * 1024;
const BLOCKS = RAM_BYTES / KIB64;

/** AddressSpace read+write of 64 KiB blocks over RAM vs the same copies between plain typed arrays. */
const asReadWrite: Benchmark = {
  name: 'as-rw-64k',
  unit: 'GiB/s',
  baselineLabel: 'Uint8Array.set of the same blocks',
  target: { ratio: 0.5 },
  setup() {
    const root = new ContainerRegion('system', 1n << 40n);
    root.addSubregion(0n, new RamRegion('ram', BigInt(RAM_BYTES)));
    const as = new AddressSpace(root, 'memory');
    const buf = new Uint8Array(KIB64).fill(0x5a);
    const plain = new Uint8Array(RAM_BYTES).fill(1);
    // Touch all RAM first so the figure is copying, not first-touch allocation.
    for (let i = 0; i < BLOCKS; i++) as.write(BigInt(i * KIB64), buf);
    const gib = (bytes: number) => bytes / 2 ** 30;
    return {
      measure: () =>
        gib(
          throughput(() => {
            for (let i = 0; i < BLOCKS; i++) {
              const addr = BigInt(i * KIB64);
              as.write(addr, buf);
              as.read(addr, buf);
            }
            return 2 * RAM_BYTES;
          }),
        ),
      baseline: () =>
        gib(
          throughput(() => {
            for (let i = 0; i < BLOCKS; i++) {
              const at = i * KIB64;
              plain.set(buf, at);
              buf.set(plain.subarray(at, at + KIB64));
            }
            return 2 * RAM_BYTES;
          }),
        ),
    };
  },
};

/** A flat single-level IOMMU like a TCE table: one entry per 4 KiB page. */
class FlatTableIommu extends IommuMemoryRegion {
  readonly table: Float64Array;
  constructor(
    size: bigint,
    readonly target: AddressSpace,
  ) {
    super('bench-iommu', size);
    this.table = new Float64Array(Number(size >> 12n));
  }
  override translate(addr: bigint): IOMMUTLBEntry {
    const entry = this.table[Number(addr >> 12n)] ?? 0;
    if (entry === 0) return iommuMiss(addr & ~0xfffn);
    const tce = BigInt(entry);
    return {
      targetAs: this.target,
      iova: addr & ~0xfffn,
      translatedAddr: tce & ~0xfffn,
      addrMask: 0xfffn,
      perm: Number(tce & 3n) as IOMMUAccessFlags,
    };
  }
}

/** address_space_translate from a device address space through one IOMMU level down to RAM. */
const iommuTranslate: Benchmark = {
  name: 'iommu-translate-1level',
  unit: 'M/s',
  baselineLabel: 'the IOMMU table lookup alone',
  target: { value: 5 },
  setup() {
    const root = new ContainerRegion('system', 1n << 40n);
    root.addSubregion(0n, new RamRegion('ram', 1n << 30n));
    const memory = new AddressSpace(root, 'memory');
    const pages = 1 << 18; // 1 GiB of 4 KiB pages
    const iommu = new FlatTableIommu(BigInt(pages) << 12n, memory);
    for (let i = 0; i < pages; i++) iommu.table[i] = i * 4096 + IOMMUAccessFlags.RW;
    const busRoot = new ContainerRegion('phb.iommu-root', 1n << 64n);
    busRoot.addSubregion(0n, iommu);
    const bus = new AddressSpace(busRoot, 'bus');
    const addrs = Array.from({ length: 4096 }, (_, i) => BigInt(((i * 7919) % pages) * 4096 + (i & 0xfff)));
    let sink = 0n;
    const batch = (fn: (a: bigint) => void) => () => {
      for (const a of addrs) fn(a);
      return addrs.length;
    };
    const result = {
      measure: () =>
        throughput(
          batch((a) => {
            sink ^= bus.translate(a, true).xlat;
          }),
        ) / 1e6,
      baseline: () =>
        throughput(
          batch((a) => {
            sink ^= iommu.translate(a).translatedAddr;
          }),
        ) / 1e6,
    };
    if (sink === -1n) console.log(sink);
    return result;
  },
};

/** FlatView lookup among 1000 regions at scattered addresses vs a binary search over plain numbers. */
const flatviewLookup: Benchmark = {
  name: 'flatview-lookup-1000',
  unit: 'M/s',
  baselineLabel: 'binary search over a Float64Array',
  setup() {
    const root = new ContainerRegion('system', 1n << 48n);
    const count = 1000;
    const stride = 0x100000;
    for (let i = 0; i < count; i++) {
      root.addSubregion(BigInt(i * stride), new MmioRegion(`dev${i}`, 0x80000n, {}));
    }
    const view = new AddressSpace(root, 'memory').flatView;
    const starts = new Float64Array(view.ranges.map((r) => Number(r.start)));
    const probes = Array.from({ length: 4096 }, (_, i) => ((i * 104729) % count) * stride + (i % 0x80000));
    const bigProbes = probes.map(BigInt);
    let sink = 0;
    const result = {
      measure: () =>
        throughput(() => {
          for (const p of bigProbes) if (view.lookup(p)) sink++;
          return bigProbes.length;
        }) / 1e6,
      baseline: () =>
        throughput(() => {
          for (const p of probes) {
            let lo = 0;
            let hi = starts.length - 1;
            let found = -1;
            while (lo <= hi) {
              const mid = (lo + hi) >>> 1;
              if (starts[mid]! <= p) {
                found = mid;
                lo = mid + 1;
              } else hi = mid - 1;
            }
            if (found >= 0) sink++;
          }
          return probes.length;
        }) / 1e6,
    };
    if (sink < 0) console.log(sink);
    return result;
  },
};

export const benchmarks: Benchmark[] = [asReadWrite, iommuTranslate, flatviewLookup];
