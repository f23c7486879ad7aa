import type { Endianness } from './constants.js';
import { accessPermission, MemTxResult, UINT64_SPAN } from './constants.js';
import { describeValue, MemoryArgumentError, MemoryConfigError } from './errors.js';
import { type FlatRange, type FlatView, renderFlatView, sameFlatRange } from './flatview.js';
import type { IommuMemoryRegion } from './iommu.js';
import type { MemoryListener, MemoryRegionSection } from './listener.js';
import type { AccessSize, MmioRegion } from './mmio.js';
import { checkAccessSize, loadBytes, storeBytes } from './mmio.js';
import type { RamRegion } from './ram.js';
import { MemoryRegion } from './region.js';
import type { TopologyObserver } from './transaction.js';

/**
 * Where an address leads (address_space_translate): the terminal region, the offset inside it,
 * and how many bytes from there translate contiguously. `mr` is null where nothing decodes or an
 * IOMMU on the way refused the access.
 */
export interface Translation {
  mr: MemoryRegion | null;
  xlat: bigint;
  plen: bigint;
  readonly: boolean;
}

/** A translation past the top of the 64-bit space: nothing there. */
function beyondTop(plen: bigint): Translation {
  return { mr: null, xlat: 0n, plen, readonly: false };
}

/**
 * Addresses are bigints: a number would mix with bigint arithmetic and throw deep inside, or lose
 * precision past 2^53. Negative or too-large bigints are fine: they decode to nothing.
 */
function checkAddress(where: string, addr: unknown): void {
  if (typeof addr !== 'bigint') {
    throw new MemoryArgumentError(
      where,
      `address ${describeValue(addr)} is not a bigint; write it as e.g. 0x1000n`,
    );
  }
}

function checkBuffer(where: string, buf: unknown): void {
  if (!(buf instanceof Uint8Array)) {
    throw new MemoryArgumentError(where, `buffer ${describeValue(buf)} is not a Uint8Array`);
  }
}

function checkEndian(where: string, endian: unknown): void {
  if (endian !== 'big' && endian !== 'little') {
    throw new MemoryArgumentError(where, `endianness ${describeValue(endian)} is neither "big" nor "little"`);
  }
}

/** Result of a load: the value and how the access went. */
export interface LoadResult {
  value: bigint;
  result: MemTxResult;
}

/**
 * Memory as one observer sees it (QEMU's AddressSpace): a root region, its rendered FlatView, and
 * listeners told about every change of that view.
 */
export class AddressSpace implements TopologyObserver {
  #view: FlatView;
  #listeners: MemoryListener[] = [];
  #destroyed = false;
  readonly #scratch = new Uint8Array(8);

  constructor(
    readonly root: MemoryRegion,
    readonly name: string,
  ) {
    if (!(root instanceof MemoryRegion)) {
      throw new MemoryArgumentError(
        `new AddressSpace(root, ${describeValue(name)})`,
        `root is ${describeValue(root)}, not a MemoryRegion; pass the region the address space shows, e.g. a ContainerRegion`,
      );
    }
    if (typeof name !== 'string' || name === '') {
      throw new MemoryArgumentError(
        `new AddressSpace(${describeValue(root.name)}, name)`,
        'name must be a non-empty string, e.g. "memory"',
      );
    }
    this.#view = renderFlatView(root);
    root.addressSpaces.add(this);
  }

  get flatView(): FlatView {
    return this.#view;
  }

  get listeners(): readonly MemoryListener[] {
    return this.#listeners;
  }

  /**
   * Registers `listener` and replays the current view to it as region_add calls, so a listener
   * registered late sees the same sections as one registered first (memory_listener_register).
   */
  addListener(listener: MemoryListener): void {
    if (this.#listeners.includes(listener)) {
      throw new MemoryConfigError(
        this.name,
        `listener ${listener.name ?? '(unnamed)'} is already registered`,
      );
    }
    const priority = listener.priority ?? 0;
    const at = this.#listeners.findIndex((l) => (l.priority ?? 0) > priority);
    if (at < 0) this.#listeners.push(listener);
    else this.#listeners.splice(at, 0, listener);
    listener.begin?.();
    for (const fr of this.#view.ranges) listener.regionAdd?.(this.section(fr));
    listener.commit?.();
  }

  /** Unregisters `listener`, which first sees region_del for every current section. */
  removeListener(listener: MemoryListener): void {
    const at = this.#listeners.indexOf(listener);
    if (at < 0) return;
    this.#listeners.splice(at, 1);
    listener.begin?.();
    for (const fr of this.#view.ranges) listener.regionDel?.(this.section(fr));
    listener.commit?.();
  }

  /** Re-renders the view and tells listeners what changed; called by the transaction machinery. */
  updateTopology(): void {
    if (this.#destroyed) return;
    this.install(renderFlatView(this.root));
  }

  /** Detaches the address space; its listeners see every section removed (address_space_destroy). */
  destroy(): void {
    if (this.#destroyed) return;
    this.install(renderFlatView(null));
    this.#destroyed = true;
    this.root.addressSpaces.delete(this);
  }

  /**
   * Follows `addr` through the view and any IOMMU regions down to a terminal region, as
   * address_space_translate does for an access of `len` bytes.
   */
  translate(addr: bigint, isWrite: boolean, len = 1n): Translation {
    checkAddress('AddressSpace.translate', addr);
    if (typeof len !== 'bigint')
      throw new MemoryArgumentError('AddressSpace.translate', 'len must be a bigint');
    let as: AddressSpace = this;
    let plen = len;
    let readonly = false;
    const need = accessPermission(isWrite);
    for (;;) {
      const view = as.#view;
      const fr = view.lookup(addr);
      if (fr === undefined) {
        const gap = view.nextStartAfter(addr) - addr;
        return { mr: null, xlat: addr, plen: gap < plen ? gap : plen, readonly };
      }
      const xlat = addr - fr.start + fr.offsetInRegion;
      const remain = fr.end - addr;
      if (remain < plen) plen = remain;
      readonly ||= fr.readonly;
      if (fr.mr.kind !== 'iommu') return { mr: fr.mr, xlat, plen, readonly };

      const entry = (fr.mr as IommuMemoryRegion).translate(xlat, need);
      const mask = entry.addrMask;
      addr = (entry.translatedAddr & ~mask) | (xlat & mask);
      const inPage = (addr | mask) - addr + 1n;
      if (inPage < plen) plen = inPage;
      if ((entry.perm & need) === 0 || entry.targetAs === null) {
        return { mr: null, xlat: addr, plen, readonly };
      }
      as = entry.targetAs;
    }
  }

  /** Reads `buf.length` bytes at `addr`; unmapped bytes read as zero and flag a decode error. */
  read(addr: bigint, buf: Uint8Array): MemTxResult {
    checkAddress('AddressSpace.read', addr);
    checkBuffer('AddressSpace.read', buf);
    return this.access(addr, buf, false);
  }

  /** Writes `data` at `addr`; bytes that land nowhere (or on ROM) are dropped and flag an error. */
  write(addr: bigint, data: Uint8Array): MemTxResult {
    checkAddress('AddressSpace.write', addr);
    checkBuffer('AddressSpace.write', data);
    return this.access(addr, data, true);
  }

  /**
   * A byte-range access split into pieces that each translate to one terminal region
   * (flatview_read/write_continue): RAM is copied, MMIO gets the largest accesses the device
   * accepts, and a piece that reaches nothing is dropped (read as zeros) with a decode error.
   */
  private access(addr: bigint, buf: Uint8Array, isWrite: boolean): MemTxResult {
    let result: MemTxResult = MemTxResult.OK;
    const length = buf.length;
    let done = 0;
    while (done < length) {
      const at = addr + BigInt(done);
      const t =
        at < UINT64_SPAN
          ? this.translate(at, isWrite, BigInt(length - done))
          : beyondTop(BigInt(length - done));
      let n = Number(t.plen);
      const mr = t.mr;
      if (mr?.kind === 'ram' && !(isWrite && t.readonly)) {
        const ram = (mr as RamRegion).ram;
        if (isWrite) ram.write(Number(t.xlat), buf, done, n);
        else ram.read(Number(t.xlat), buf, done, n);
      } else if (mr?.kind === 'mmio') {
        const mmio = mr as MmioRegion;
        n = mmio.accessSizeAt(t.xlat, n);
        result |= isWrite
          ? mmio.writeFrom(t.xlat, n as AccessSize, buf, done)
          : mmio.readInto(t.xlat, n as AccessSize, buf, done);
      } else {
        if (!isWrite) buf.fill(0, done, done + n);
        result |= MemTxResult.DECODE_ERROR;
      }
      done += n;
    }
    return result;
  }

  /**
   * Whether an access of `len` bytes at `addr` would reach memory all the way
   * (address_space_access_valid): lets a device check a DMA before touching anything.
   */
  accessValid(addr: bigint, len: bigint, isWrite: boolean): boolean {
    checkAddress('AddressSpace.accessValid', addr);
    if (typeof len !== 'bigint')
      throw new MemoryArgumentError('AddressSpace.accessValid', 'len must be a bigint');
    let done = 0n;
    while (done < len) {
      const at = addr + done;
      if (at >= UINT64_SPAN) return false;
      const t = this.translate(at, isWrite, len - done);
      if (t.mr === null || (isWrite && t.readonly)) return false;
      done += t.plen;
    }
    return true;
  }

  /**
   * Loads a `size`-byte value at `addr` (ldub/lduw/ldl/ldq), big-endian unless told otherwise.
   * On MMIO it is one access of that size, which the device may refuse (size, alignment).
   */
  load(addr: bigint, size: AccessSize, endian: Endianness = 'big'): LoadResult {
    checkAccessSize('AddressSpace.load', size);
    checkAddress('AddressSpace.load', addr);
    checkEndian('AddressSpace.load', endian);
    const buf = this.#scratch.subarray(0, size);
    const mmio = this.singleMmioAccess(addr, size, false);
    const result = mmio ? mmio.region.readInto(mmio.offset, size, buf, 0) : this.read(addr, buf);
    return { value: loadBytes(buf, 0, size, endian), result };
  }

  /** Stores the low `size` bytes of `value` at `addr` (stb/stw/stl/stq), as one access on MMIO. */
  store(addr: bigint, size: AccessSize, value: bigint, endian: Endianness = 'big'): MemTxResult {
    checkAccessSize('AddressSpace.store', size);
    checkAddress('AddressSpace.store', addr);
    checkEndian('AddressSpace.store', endian);
    if (typeof value !== 'bigint') {
      throw new MemoryArgumentError('AddressSpace.store', `value ${describeValue(value)} is not a bigint`);
    }
    const buf = this.#scratch.subarray(0, size);
    storeBytes(buf, 0, size, value, endian);
    const mmio = this.singleMmioAccess(addr, size, true);
    return mmio ? mmio.region.writeFrom(mmio.offset, size, buf, 0) : this.write(addr, buf);
  }

  private singleMmioAccess(
    addr: bigint,
    size: AccessSize,
    isWrite: boolean,
  ): { region: MmioRegion; offset: bigint } | undefined {
    const t = this.translate(addr, isWrite, BigInt(size));
    if (t.mr?.kind !== 'mmio' || t.plen < BigInt(size)) return undefined;
    return { region: t.mr as MmioRegion, offset: t.xlat };
  }

  private section(fr: FlatRange): MemoryRegionSection {
    return {
      mr: fr.mr,
      addressSpace: this,
      offsetWithinAddressSpace: fr.start,
      offsetWithinRegion: fr.offsetInRegion,
      size: fr.size,
      readonly: fr.readonly,
    };
  }

  /**
   * Installs `next` and walks old and new views side by side, as QEMU's two update passes: first
   * every removed range (region_del, listeners in reverse order), then every added or unchanged one.
   */
  private install(next: FlatView): void {
    const old = this.#view;
    this.#view = next;
    const listeners = this.#listeners;
    if (listeners.length === 0) return;
    const errors: unknown[] = [];
    const call = (fn: () => void) => {
      try {
        fn();
      } catch (error) {
        errors.push(error);
      }
    };
    for (const l of listeners) if (l.begin) call(() => l.begin!());
    for (const adding of [false, true]) {
      let iOld = 0;
      let iNew = 0;
      const a = old.ranges;
      const b = next.ranges;
      while (iOld < a.length || iNew < b.length) {
        const frOld = a[iOld];
        const frNew = b[iNew];
        if (
          frOld &&
          (!frNew ||
            frOld.start < frNew.start ||
            (frOld.start === frNew.start && !sameFlatRange(frOld, frNew)))
        ) {
          if (!adding) {
            const section = this.section(frOld);
            for (let i = listeners.length - 1; i >= 0; i--) {
              const l = listeners[i]!;
              if (l.regionDel) call(() => l.regionDel!(section));
            }
          }
          iOld++;
        } else if (frOld && frNew && sameFlatRange(frOld, frNew)) {
          if (adding) {
            const section = this.section(frNew);
            for (const l of listeners) if (l.regionNop) call(() => l.regionNop!(section));
          }
          iOld++;
          iNew++;
        } else {
          if (adding) {
            const section = this.section(frNew!);
            for (const l of listeners) if (l.regionAdd) call(() => l.regionAdd!(section));
          }
          iNew++;
        }
      }
    }
    for (const l of listeners) if (l.commit) call(() => l.commit!());
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `several listeners of ${this.name} failed`);
  }
}
