import { formatHex, hexDigits } from '@ddw/machine';
import type {
  DeviceDmaState,
  DmaDirection,
  DmaWindowInfo,
  LinuxGeneration,
  LinuxGuestOptions,
  LinuxGuestPort,
  PciFunction,
  PeDecision,
} from './api.js';
import { explainDecision } from './ddw-explain.js';
import { DdwNegotiation, type EnableDdwResult } from './ddw-negotiation.js';
import type { DdwContext } from './ddw-steps.js';
import { GuestTreeView, parentPath } from './device-tree.js';
import { knownDriver } from './drivers.js';
import { IommuTable } from './iommu-table.js';
import { type PeState, readPeState } from './pe.js';
import {
  addRamRange,
  ddwMaxAddress,
  orderBase2,
  type RamLayout,
  readRamLayout,
  removeRamRange,
} from './ram.js';
import { TCE_READ, TCE_WRITE, TceCalls } from './tce.js';

const DEFAULT_PAGE_SIZE = 0x10000n;
/** Debian's powerpc64le 6.12 kernel is built with 4K pages. */
const DEFAULT_PAGE_SIZE_612 = 0x1000n;
const DEFAULT_TCE_LIST_ADDRESS = 0x2070000n;
/** The default window's IOMMU page size on pseries: always 4 KiB. */
const DEFAULT_WINDOW_PAGE_SHIFT = 12;

interface FunctionDma {
  state: DeviceDmaState;
  /** The table the DMA API maps through; undefined for direct DMA (or when no window is left). */
  table: IommuTable | undefined;
}

/**
 * A pseries Linux guest, as far as DMA goes: it boots (finds PHBs and PCI functions in the
 * device tree, clears each default window), lets drivers set DMA masks (which negotiates a DDW
 * per PE as the chosen kernel generation does), and maps and unmaps buffers through the DMA API,
 * issuing the TCE hypercalls Linux would. It reaches the machine only through its guest port.
 */
export class LinuxGuest {
  readonly generation: LinuxGeneration;
  /** The guest's PAGE_SIZE. */
  readonly pageSize: bigint;
  private readonly port: LinuxGuestPort;
  private readonly options: LinuxGuestOptions;
  private readonly tree: GuestTreeView;
  private readonly listAddress: bigint;
  private tce: TceCalls | undefined;
  private ram: RamLayout = {
    ranges: [],
    hotplugMax: 0n,
    lrdrPresent: false,
    lmbSize: 0x10000000n,
    maxAddress: 0n,
  };
  /** What ddw_memory_hotplug_max() gives this generation (the address a direct window covers). */
  private ddwMax = 0n;
  private fns: PciFunction[] = [];
  private lines: string[] = [];
  private pes = new Map<string, PeState>();
  private dma = new Map<string, FunctionDma>();

  constructor(port: LinuxGuestPort, options: LinuxGuestOptions = {}) {
    this.port = port;
    this.options = options;
    this.generation = options.generation ?? 'linux-6.1';
    this.pageSize =
      options.pageSize ?? (this.generation === 'linux-6.12' ? DEFAULT_PAGE_SIZE_612 : DEFAULT_PAGE_SIZE);
    if (this.pageSize < 0x1000n || (this.pageSize & (this.pageSize - 1n)) !== 0n) {
      throw new RangeError(`pageSize ${formatHex(this.pageSize)} is not a power of two of at least 4 KiB`);
    }
    this.listAddress = options.tceListAddress ?? DEFAULT_TCE_LIST_ADDRESS;
    if ((this.listAddress & 0xfffn) !== 0n) {
      throw new RangeError(`tceListAddress ${formatHex(this.listAddress)} is not 4 KiB aligned`);
    }
    this.tree = new GuestTreeView(port.deviceTree);
  }

  get functions(): readonly PciFunction[] {
    return this.fns;
  }

  get log(): readonly string[] {
    return this.lines;
  }

  /** Whether the hypervisor advertised hcall-multi-tce (known after boot). */
  get multiTce(): boolean {
    return this.calls().multiTce;
  }

  /** How many TCE hypercalls of each kind the guest made since boot. */
  hypercallCounts(): { H_PUT_TCE: number; H_PUT_TCE_INDIRECT: number; H_STUFF_TCE: number } {
    return { ...this.calls().counts };
  }

  /**
   * The device-tree changes the guest made to its own copy of the tree: the window-info
   * properties it adds after a DDW, and ibm,dma-window when it removed the default window.
   */
  deviceTreeEdits(): { path: string; name: string; value: Uint8Array | undefined }[] {
    return this.tree.edits();
  }

  /** A property as the guest now sees it (its own edits over the machine's tree). */
  getProp(path: string, name: string): Uint8Array | undefined {
    return this.tree.getProp(path, name);
  }

  /**
   * Boot: finds the PEs (nodes with ibm,dma-window) and the PCI functions below them, sets up a
   * 4K table on each default window and clears it, as the kernel's IOMMU init does.
   */
  boot(): void {
    this.lines = [];
    this.fns = [];
    this.pes = new Map();
    this.dma = new Map();
    const hypertas = this.tree.getStrings('/rtas', 'ibm,hypertas-functions') ?? [];
    const multiTce = hypertas.includes('hcall-multi-tce');
    this.tce = new TceCalls(this.port, this.generation, multiTce, this.listAddress, (l) =>
      this.lines.push(l),
    );
    this.ram = readRamLayout(this.tree);
    this.ddwMax = ddwMaxAddress(this.generation, this.ram);
    this.lines.push(
      `Linux (${this.generation}) boot: RAM ${this.ram.ranges.map((r) => `[${formatHex(r.start)}-${formatHex(r.end - 1n)}]`).join(' ')}, ` +
        `DMA windows sized for RAM up to ${formatHex(this.ddwMax)}, ${multiTce ? 'multi-TCE' : 'no multi-TCE'}`,
    );

    const nodes = this.tree.nodes();
    // PHBs get PCI domains in BUID order (QEMU's PHB index order) whatever order the tree lists
    // them in, and a bus is scanned by device and function number.
    const pes = nodes
      .filter((n) => this.tree.getProp(n, 'ibm,dma-window') !== undefined)
      .map((node) => readPeState(this.tree, node))
      .sort((a, b) => (a.buid < b.buid ? -1 : a.buid > b.buid ? 1 : 0));
    for (const [domain, pe] of pes.entries()) {
      pe.domain = domain;
      this.pes.set(pe.node, pe);
    }
    for (const node of nodes) {
      if (this.pes.has(node)) continue;
      const peNode = this.peNodeOf(node);
      if (peNode === undefined) continue;
      const reg = this.tree.getCells(node, 'reg');
      const vendorId = this.tree.getCells(node, 'vendor-id')?.[0];
      const deviceId = this.tree.getCells(node, 'device-id')?.[0];
      if (!reg?.length || vendorId === undefined || deviceId === undefined) continue;
      const pe = this.pes.get(peNode)!;
      this.fns.push({
        node,
        peNode,
        cfgAddr: reg[0]!,
        buid: pe.buid,
        vendorId,
        deviceId,
        driver: knownDriver(vendorId, deviceId)?.name,
      });
    }
    const domainOf = (fn: PciFunction) => this.pes.get(fn.peNode)!.domain;
    this.fns.sort((a, b) => domainOf(a) - domainOf(b) || a.cfgAddr - b.cfgAddr);
    for (const pe of this.pes.values()) this.initDefaultTable(pe);
    // 6.12's PCI device setup: the first function of each PE queries the PE for its table group.
    if (this.generation === 'linux-6.12') {
      for (const fn of this.fns)
        new DdwNegotiation(this.ddwContext('pci'), this.peOf(fn), fn).initTableGroup();
    }
  }

  /**
   * A driver sets its DMA mask. A 64-bit mask makes the guest negotiate a DDW for the function's
   * PE (once; later functions reuse the outcome); smaller masks stay on the default window.
   */
  setDmaMask(fn: PciFunction, bits: number): DeviceDmaState {
    const pe = this.peOf(fn);
    pe.masks.set(fn.node, { name: this.devName(fn), bits });
    let mode: 'direct' | 'dynamic' | 'default' = 'default';
    let table: IommuTable | undefined = pe.defaultTable;
    // 6.12 tries a DDW for any mask over 32 bits (below 64 in limited-address mode); older
    // kernels only for a 64-bit mask.
    const wantsDdw = this.generation === 'linux-6.12' ? bits > 32 : bits >= 64;
    if (wantsDdw && this.options.disableDdw) {
      pe.decision.reasons.push(`${this.devName(fn)}: disable_ddw is set, no DDW`);
    } else if (this.generation === 'linux-6.12' && wantsDdw) {
      // dma_set_mask_and_coherent: iommu_bypass_supported runs for the streaming mask, then for
      // the coherent one, and the second answer decides (the first can say "direct" for a PE
      // whose create just failed: enable_ddw returns the mapping it had decided on).
      this.enableDdw612(pe, fn, bits);
      const direct = this.enableDdw612(pe, fn, bits).direct;
      const window = pe.window;
      if (direct && window) {
        mode = 'direct';
        table = undefined;
      } else if (window && !window.direct && window.owner === fn.node) {
        mode = 'dynamic';
        table = window.table;
      }
    } else if (wantsDdw) {
      if (!pe.negotiated) this.negotiate(pe, fn);
      const window = pe.window;
      // 4.x takes a window address of 0 for "no window" and keeps the device on the IOMMU.
      if (window?.direct && (this.generation !== 'linux-4.x' || window.info.busOffset !== 0n)) {
        mode = 'direct';
        table = undefined;
      } else if (window && !window.direct && window.owner === fn.node) {
        mode = 'dynamic';
        table = window.table;
      } else if (window && !window.direct) {
        // Linux switches only the function that created a dynamic window to it; the others
        // learn that the PE's window is not direct and keep the table they had.
        pe.decision.reasons.push(
          `${this.devName(fn)}: the PE's window is dynamic and belongs to another function; this one stays on the default window`,
        );
      }
    }
    const window = pe.window;
    const info: DmaWindowInfo =
      mode === 'default' ? this.defaultWindowInfo(pe) : (window?.info ?? this.defaultWindowInfo(pe));
    const state: DeviceDmaState = {
      fn,
      mode,
      window: info,
      dmaOffset: mode === 'direct' ? info.busOffset : 0n,
      maskBits: bits,
    };
    this.dma.set(fn.node, { state, table });
    this.lines.push(
      `${this.devName(fn)}: ${bits}-bit DMA mask: ${describeMode(state)} (LIOBN ${formatHex(info.liobn)})`,
    );
    return state;
  }

  private negotiate(pe: PeState, fn: PciFunction, bits = 64): EnableDdwResult {
    return new DdwNegotiation(this.ddwContext(), pe, fn, bits).run();
  }

  /** One 6.12 enable_ddw call: reuse the PE's window, stop on a failed PE, or negotiate. */
  private enableDdw612(pe: PeState, fn: PciFunction, bits: number): EnableDdwResult {
    let result: EnableDdwResult = { direct: false, lsaRequired: false, lsaEnabled: false };
    if (pe.window) result = { ...result, direct: pe.window.direct };
    else if (!pe.failed) result = this.negotiate(pe, fn, bits);
    this.lines.push(
      `${this.devName(fn)}: lsa_required: ${flag(result.lsaRequired)}, lsa_enabled: ${flag(result.lsaEnabled)}, ` +
        `direct mapping: ${flag(result.direct)}`,
    );
    return result;
  }

  /** What negotiation needs; `driverName` replaces the bound driver in dmesg prefixes. */
  private ddwContext(driverName?: string): DdwContext {
    return {
      port: this.port,
      tree: this.tree,
      tce: this.calls(),
      generation: this.generation,
      pageSize: this.pageSize,
      ram: this.ram,
      ddwMax: this.ddwMax,
      log: (f: PciFunction, line: string) => this.lines.push(`${this.devName(f, driverName)}: ${line}`),
      name: (f: PciFunction) => this.devName(f),
    };
  }

  /**
   * Memory hot-add (DLPAR): [base, base + size) came online, one memory block (LMB, from
   * ibm,lrdr-capacity) at a time, and the memory notifier maps each block into the direct windows:
   * H_PUT_TCE_INDIRECT lists (up to 512 TCEs, in the one list page), no RTAS. 6.12 maps into
   * direct windows only, and only blocks below the hotplug maximum; 6.1 and 4.x map into every
   * window the guest created (a 6.1 dynamic window included). Returns false when a hypercall
   * failed (the kernel then refuses to online the block: NOTIFY_BAD).
   */
  memoryAdded(base: bigint, size: bigint): boolean {
    return this.memoryBlocks(base, size, 'online');
  }

  /** Memory hot-remove: each block going offline is cleared from the windows with H_STUFF_TCE. */
  memoryRemoved(base: bigint, size: bigint): boolean {
    return this.memoryBlocks(base, size, 'offline');
  }

  private memoryBlocks(base: bigint, size: bigint, action: 'online' | 'offline'): boolean {
    const tce = this.calls();
    if (size <= 0n) return true;
    const block = this.ram.lmbSize;
    const windows = [...this.pes.values()]
      .filter((pe) => pe.window !== undefined)
      .sort((a, b) => b.windowSeq - a.windowSeq)
      .map((pe) => pe.window!);
    let ok = true;
    for (let start = base; start < base + size; start += block) {
      const end = start + block < base + size ? start + block : base + size;
      if (action === 'online') addRamRange(this.ram, start, end);
      for (const w of windows) {
        if (this.generation === 'linux-6.12' && (!w.direct || start >= this.ddwMax)) continue;
        const { info } = w;
        const T = 1n << BigInt(info.pageShift);
        const aligned = start & ~(T - 1n);
        const count = (end - start + (start - aligned)) >> BigInt(info.pageShift);
        const rc =
          action === 'online'
            ? tce.populate(info.liobn, info.busOffset, aligned, info.pageShift, Number(count))
            : tce.clearRange(info.liobn, info.busOffset + aligned, info.pageShift, count);
        if (rc !== 0n) {
          ok = false;
          this.lines.push(
            `memory ${action} [${formatHex(start)}-${formatHex(end - 1n)}]: LIOBN ${formatHex(info.liobn)} returned ${rc}`,
          );
        }
      }
      if (action === 'offline') removeRamRange(this.ram, start, end);
    }
    this.lines.push(
      `memory ${action}: [${formatHex(base)}-${formatHex(base + size - 1n)}] in blocks of ${formatHex(block)}${ok ? '' : ' (refused)'}`,
    );
    return ok;
  }

  /** Every function with a known driver sets that driver's mask, in device-tree order. */
  probeAll(): DeviceDmaState[] {
    this.calls();
    const out: DeviceDmaState[] = [];
    for (const fn of this.fns) {
      const bits = this.options.dmaMaskBits
        ? this.options.dmaMaskBits(fn)
        : fn.driver !== undefined
          ? knownDriver(fn.vendorId, fn.deviceId)?.dmaMaskBits
          : undefined;
      if (bits !== undefined) out.push(this.setDmaMask(fn, bits));
    }
    return out;
  }

  state(fn: PciFunction): DeviceDmaState | undefined {
    return this.dma.get(fn.node)?.state;
  }

  decisions(): PeDecision[] {
    return [...this.pes.values()].map((pe) => ({
      ...pe.decision,
      summary: explainDecision(pe, {
        generation: this.generation,
        ram: this.ram,
        disableDdw: this.options.disableDdw === true,
        functions: this.fns
          .filter((f) => f.peNode === pe.node)
          .map((f) => ({ node: f.node, name: this.devName(f), driver: f.driver })),
      }),
      reasons: [...pe.decision.reasons],
      rtas: pe.decision.rtas.map((r) => ({ call: r.call, args: [...r.args], rets: [...r.rets] })),
    }));
  }

  /**
   * Maps [gpa, gpa + length) for the device. Direct: gpa + the window's address, no hypercall.
   * Otherwise bus pages come from the function's table and the TCEs are set with hypercalls;
   * undefined when the table is full, there is no window, or the hypervisor ran out of resources.
   */
  dmaMap(fn: PciFunction, gpa: bigint, length: number, direction: DmaDirection): bigint | undefined {
    const { state, table } = this.dmaOf(fn);
    if (!Number.isSafeInteger(length) || length <= 0) return undefined;
    if (state.mode === 'direct') return gpa + state.dmaOffset;
    const name = this.devName(fn);
    if (!table) {
      this.lines.push(`${name}: dma_map of ${formatHex(length)} bytes failed: no DMA window left`);
      return undefined;
    }
    const shift = BigInt(table.pageShift);
    const pageSize = 1n << shift;
    const inPage = gpa & (pageSize - 1n);
    const npages = Number((inPage + BigInt(length) + pageSize - 1n) >> shift);
    // Buffers of a guest page or more start on a guest-page boundary of the bus space too.
    const guestShift = orderBase2(this.pageSize);
    const align =
      table.pageShift < guestShift && BigInt(length) >= this.pageSize && gpa % this.pageSize === 0n
        ? 2 ** (guestShift - table.pageShift)
        : 1;
    const entry = table.alloc(npages, align);
    if (entry === undefined) {
      this.lines.push(
        `${name}: iommu_alloc failed, LIOBN ${formatHex(table.liobn)}, ${npages} pages: the window is full`,
      );
      return undefined;
    }
    const ioba = table.busOffset + (BigInt(entry) << shift);
    const tce = (gpa - inPage) | TCE_READ | (direction === 'to-device' ? 0n : TCE_WRITE);
    const r = this.calls().mapPages(table.liobn, ioba, table.pageShift, tce, npages);
    if (r.failed) {
      table.free(entry, npages);
      this.lines.push(`${name}: dma_map failed: the hypervisor answered ${r.rc}`);
      return undefined;
    }
    return ioba + inPage;
  }

  /** Unmaps what dmaMap returned: TCEs cleared by hypercall (nothing for direct DMA). */
  dmaUnmap(fn: PciFunction, busAddr: bigint, length: number): void {
    const { state, table } = this.dmaOf(fn);
    if (state.mode === 'direct' || !table) return;
    const shift = BigInt(table.pageShift);
    const pageSize = 1n << shift;
    const inPage = busAddr & (pageSize - 1n);
    const entryBig = (busAddr - table.busOffset) >> shift;
    const npages = Number((inPage + BigInt(length) + pageSize - 1n) >> shift);
    const entry = Number(entryBig);
    if (entryBig < 0n || !table.free(entry, npages)) {
      this.lines.push(
        `${this.devName(fn)}: dma_unmap of ${formatHex(busAddr)} (+${formatHex(length)}) does not match a mapping; ignored`,
      );
      return;
    }
    this.calls().freePages(table.liobn, busAddr - inPage, table.pageShift, npages);
  }

  private calls(): TceCalls {
    if (!this.tce) throw new Error('LinuxGuest: call boot() first');
    return this.tce;
  }

  private dmaOf(fn: PciFunction): FunctionDma {
    const known = this.dma.get(fn.node);
    if (known) return known;
    // A function whose driver never set a mask has the 32-bit default.
    const pe = this.peOf(fn);
    const state: DeviceDmaState = {
      fn,
      mode: 'default',
      window: this.defaultWindowInfo(pe),
      dmaOffset: 0n,
      maskBits: 32,
    };
    const entry = { state, table: pe.defaultTable };
    this.dma.set(fn.node, entry);
    return entry;
  }

  private peOf(fn: PciFunction): PeState {
    this.calls();
    const pe = this.pes.get(fn.peNode);
    if (!pe) throw new Error(`LinuxGuest: ${fn.node} is not a PCI function found at boot`);
    return pe;
  }

  /** The nearest ancestor carrying ibm,dma-window, as the kernel searches upward. */
  private peNodeOf(node: string): string | undefined {
    let at = parentPath(node);
    while (true) {
      if (this.pes.has(at)) return at;
      if (at === '/') return undefined;
      at = parentPath(at);
    }
  }

  private initDefaultTable(pe: PeState): void {
    const w = pe.defaultWindow;
    if (!w) return;
    const entries = Number(w.size >> BigInt(DEFAULT_WINDOW_PAGE_SHIFT));
    pe.defaultTable = new IommuTable(w.liobn, w.busOffset, DEFAULT_WINDOW_PAGE_SHIFT, entries);
    this.lines.push(
      `pci ${hexDigits(pe.domain, 4)}:00: default DMA window LIOBN ${formatHex(w.liobn)} at ${formatHex(w.busOffset)}, ` +
        `${entries} x 4K TCEs: clearing`,
    );
    this.calls().freePages(w.liobn, w.busOffset, DEFAULT_WINDOW_PAGE_SHIFT, entries);
  }

  private defaultWindowInfo(pe: PeState): DmaWindowInfo {
    const w = pe.defaultWindow;
    return {
      liobn: w?.liobn ?? 0,
      busOffset: w?.busOffset ?? 0n,
      pageShift: DEFAULT_WINDOW_PAGE_SHIFT,
      windowShift: w ? orderBase2(w.size) : 0,
    };
  }

  /** "e1000e 0000:00:01.0", as dev_info prefixes a line. */
  private devName(fn: PciFunction, driverName = fn.driver): string {
    const pe = this.pes.get(fn.peNode);
    const bus = (fn.cfgAddr >>> 16) & 0xff;
    const devfn = (fn.cfgAddr >>> 8) & 0xff;
    const name = `${hexDigits(pe?.domain ?? 0, 4)}:${hexDigits(bus, 2)}:${hexDigits(devfn >> 3, 2)}.${devfn & 7}`;
    return `${driverName ?? 'pci'} ${name}`;
  }
}

function describeMode(state: DeviceDmaState): string {
  switch (state.mode) {
    case 'direct':
      return `direct DMA, bus = phys + ${formatHex(state.dmaOffset)}`;
    case 'dynamic':
      return `dynamic window at ${formatHex(state.window.busOffset)}, mapped per request`;
    default:
      return 'default window, mapped per request';
  }
}

function flag(value: boolean): string {
  return value ? '1' : '0';
}
