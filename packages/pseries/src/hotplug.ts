import { DdwError, type DeviceRegistry, type DeviceTree, formatHex, type Machine } from '@ddw/machine';
import { type ContainerRegion, type MemoryRegion, RamRegion } from '@ddw/memory';
import { type PseriesMemoryLayout, SPAPR_MEMORY_BLOCK_SIZE } from './memory-layout.js';
import { HotplugTokens } from './tokens.js';

/**
 * Memory hotplug on a pseries machine, as QEMU's `object_add memory-backend-ram` and `device_add
 * pc-dimm` do it (hw/ppc/spapr.c spapr_memory_pre_plug / spapr_memory_plug / spapr_add_lmbs,
 * hw/mem/pc-dimm.c, hw/mem/memory-device.c, backends/hostmem-ram.c): a backend is a RAM region
 * named after its id; a DIMM maps its backend into the machine's device-memory container at the
 * first free address, one 256 MiB LMB (DRC) per block, and the guest learns of it through
 * ibm,dynamic-reconfiguration-memory and a hotplug event. The checks and their messages are
 * QEMU's (10.0), in QEMU's order.
 */

/** A refusal QEMU answers a hotplug command with; the message is QEMU's text. */
export class HotplugError extends DdwError {
  override name = 'HotplugError';

  constructor(message: string) {
    super('HOTPLUG', message);
  }
}

/** The memory backend types ddw models (QEMU also has memory-backend-file and -memfd). */
export const MEMORY_BACKEND_TYPES = ['memory-backend-ram'] as const;
export type MemoryBackendType = (typeof MEMORY_BACKEND_TYPES)[number];

/** An `object_add memory-backend-ram,id=ID,size=SIZE`. */
export interface MemoryBackend {
  readonly id: string;
  readonly type: MemoryBackendType;
  readonly size: bigint;
  /** The backend's RAM; QEMU names its region after the object id, as `info mtree` shows. */
  readonly region: RamRegion;
  /** The DIMM using it (QEMU's host_memory_backend_is_mapped). */
  usedBy: string | undefined;
}

/** A plugged pc-dimm. */
export interface PluggedDimm {
  /** The device id; undefined for a DIMM added without one. */
  readonly id: string | undefined;
  readonly memdev: string;
  readonly slot: number;
  /** Guest physical address (in the device-memory region). */
  readonly addr: bigint;
  readonly size: bigint;
  readonly node: number;
  /** An unplug was requested and the guest has not released the LMBs yet. */
  unplugPending: boolean;
}

export interface DimmOptions {
  id?: string;
  memdev?: string;
  /** QEMU's `slot` property; the first free slot when absent. */
  slot?: number;
  /** QEMU's `addr` property; the first free aligned address when absent (or 0). */
  addr?: bigint;
  node?: number;
}

/** LMB flags of ibm,dynamic-memory(-v2) (include/hw/ppc/spapr.h). */
export const SPAPR_LMB_FLAGS_ASSIGNED = 0x8;
export const SPAPR_LMB_FLAGS_DRC_INVALID = 0x20;
export const SPAPR_LMB_FLAGS_RESERVED = 0x80;
export const SPAPR_LMB_FLAGS_HOTREMOVABLE = 0x100;
/** DRC indexes are `type << 28 | id`; an LMB DRC's id is its address / 256 MiB. */
const SPAPR_DR_CONNECTOR_TYPE_SHIFT_LMB = 8;
/** The device-tree node QEMU writes (spapr_dt_dynamic_reconfiguration_memory). */
export const DRCONF_MEMORY_NODE = '/ibm,dynamic-reconfiguration-memory';

/** The DRC index of the LMB at `addr`. */
export function lmbDrcIndex(addr: bigint): number {
  return ((SPAPR_DR_CONNECTOR_TYPE_SHIFT_LMB << 28) | Number(addr / SPAPR_MEMORY_BLOCK_SIZE)) >>> 0;
}

/**
 * The pseries memory-hotplug state of one machine: backends, DIMMs, and what the guest sees. Get it
 * with memoryHotplugOf(machine); it is registered in the machine's container under
 * HotplugTokens.MemoryHotplug, so other services can inject it.
 */
export class PseriesMemoryHotplug {
  readonly #backends = new Map<string, MemoryBackend>();
  readonly #dimms: PluggedDimm[] = [];
  readonly #regions = new Map<PluggedDimm, RamRegion>();
  readonly #container: MemoryRegion | undefined;

  #published = false;

  constructor(
    readonly layout: PseriesMemoryLayout,
    systemMemory: ContainerRegion,
    private readonly devices: DeviceRegistry,
    private readonly deviceTree: DeviceTree,
  ) {
    this.#container = systemMemory.subregions.find((r) => r.name === 'device-memory');
  }

  /** Publishes /ibm,dynamic-reconfiguration-memory the first time hotplug is used, as QEMU's first plug does. */
  publish(): void {
    if (this.#published) return;
    this.#published = true;
    this.writeDeviceTree();
  }

  backends(): MemoryBackend[] {
    return [...this.#backends.values()];
  }

  backend(id: string): MemoryBackend | undefined {
    return this.#backends.get(id);
  }

  /** Plugged DIMMs by address (QEMU's memory-device list order). */
  dimms(): PluggedDimm[] {
    return [...this.#dimms].sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
  }

  dimm(id: string): PluggedDimm | undefined {
    return this.#dimms.find((d) => d.id === id);
  }

  /** `object_add memory-backend-ram,id=ID,size=SIZE` (qom/object_interfaces.c, backends/hostmem*.c). */
  addBackend(options: { id: string; type: string; size: bigint }): MemoryBackend {
    const { id, type, size } = options;
    if (!(MEMORY_BACKEND_TYPES as readonly string[]).includes(type)) {
      throw new HotplugError(`invalid object type: ${type}`);
    }
    if (this.#backends.has(id)) {
      throw new HotplugError(`attempt to add duplicate property '${id}' to object (type 'container')`);
    }
    if (size === 0n) throw new HotplugError("can't create backend with size 0");
    const region = new RamRegion(id, size);
    const backend: MemoryBackend = { id, type: type as MemoryBackendType, size, region, usedBy: undefined };
    this.#backends.set(id, backend);
    return backend;
  }

  /** `object_del ID`: a backend a DIMM uses cannot go (user_creatable_del). */
  deleteBackend(id: string): void {
    const backend = this.#backends.get(id);
    if (!backend) throw new HotplugError(`object '${id}' not found`);
    if (backend.usedBy !== undefined) {
      throw new HotplugError(`object '${id}' is in use, can not be deleted`);
    }
    this.#backends.delete(id);
  }

  /**
   * `device_add pc-dimm,...`: QEMU's pre-plug checks (memdev, size a multiple of 256 MiB, slot,
   * device memory, space left, a free aligned address), realize (memdev not already used), then
   * plug: the backend's RAM mapped into device-memory, one LMB per 256 MiB attached, and the
   * device tree updated. Throws a HotplugError with QEMU's message; nothing changes then.
   */
  plugDimm(options: DimmOptions): PluggedDimm {
    if (options.id !== undefined && (this.devices.get(options.id) || this.dimm(options.id))) {
      throw new HotplugError(`Duplicate device ID '${options.id}'`);
    }
    // spapr_memory_pre_plug: the size comes from the backend (pc_dimm_get_memory_region).
    if (options.memdev === undefined) throw new HotplugError("'memdev' property must be set");
    const backend = this.#backends.get(options.memdev);
    if (!backend) throw new HotplugError(`Device '${options.memdev}' not found`);
    const size = backend.size;
    if (size % SPAPR_MEMORY_BLOCK_SIZE !== 0n) {
      throw new HotplugError(
        `Hotplugged memory size must be a multiple of ${SPAPR_MEMORY_BLOCK_SIZE >> 20n} MB`,
      );
    }
    // pc_dimm_pre_plug: the slot, then memory_device_pre_plug.
    const slot = this.freeSlot(options.slot);
    const dm = this.layout.deviceMemory;
    if (!dm || !this.#container) {
      throw new HotplugError(
        'the configuration is not prepared for memory devices (e.g., for memory hotplug), consider specifying the maxmem option',
      );
    }
    const used = this.#dimms.reduce((n, d) => n + d.size, 0n);
    const total = this.layout.maxmem - this.layout.ram;
    if (used + size > total) {
      throw new HotplugError(
        `not enough space, currently ${formatHex(used)} in use of total space for memory devices ${formatHex(total)}`,
      );
    }
    const addr = this.freeAddress(options.addr, size, dm);
    // pc_dimm_realize.
    if (backend.usedBy !== undefined) throw new HotplugError(`can't use already busy memdev: ${backend.id}`);
    const node = options.node ?? 0;
    if (node !== 0) {
      throw new HotplugError(
        `'DIMM property node has value ${node}' which exceeds the number of numa nodes: 1`,
      );
    }
    // Plug (memory_device_plug, spapr_add_lmbs).
    const dimm: PluggedDimm = {
      id: options.id,
      memdev: backend.id,
      slot,
      addr,
      size,
      node,
      unplugPending: false,
    };
    backend.usedBy = options.id ?? '';
    this.#container.addSubregion(addr - dm.base, backend.region);
    this.#dimms.push(dimm);
    this.#regions.set(dimm, backend.region);
    this.writeDeviceTree();
    return dimm;
  }

  /** spapr_memory_unplug_request: refuses a second request while one is pending. */
  requestUnplug(dimm: PluggedDimm): void {
    if (dimm.unplugPending) {
      throw new HotplugError(`Memory unplug already in progress for device ${dimm.id ?? ''}`);
    }
    dimm.unplugPending = true;
  }

  /** The guest refused to release the LMBs (spapr_memory_unplug_rollback): the DIMM stays. */
  rollbackUnplug(dimm: PluggedDimm): void {
    dimm.unplugPending = false;
  }

  /**
   * The guest released every LMB (spapr_lmb_release -> spapr_memory_unplug): the backend's RAM
   * leaves device-memory, the backend is free again, and the device tree no longer lists it.
   */
  completeUnplug(dimm: PluggedDimm): void {
    const at = this.#dimms.indexOf(dimm);
    if (at < 0) return;
    const region = this.#regions.get(dimm)!;
    this.#container?.removeSubregion(region);
    this.#dimms.splice(at, 1);
    this.#regions.delete(dimm);
    const backend = this.#backends.get(dimm.memdev);
    if (backend) backend.usedBy = undefined;
    this.writeDeviceTree();
  }

  /**
   * ibm,dynamic-reconfiguration-memory as QEMU writes it for a guest that negotiated
   * dynamic-memory v2 at CAS (Linux does): lmb-size, memory-flags-mask, preservation time, and
   * ibm,dynamic-memory-v2 — one reserved entry for boot RAM and the gap, then free and assigned
   * runs of LMBs up to the end of device memory. Nothing without device memory.
   */
  writeDeviceTree(): void {
    writeDrconfMemory(this.deviceTree, this.layout, this.dimms());
  }

  /** pc_dimm_get_free_slot. */
  private freeSlot(hint: number | undefined): number {
    const max = this.layout.slots;
    if (max <= 0) throw new HotplugError("no slots where allocated, please specify the 'slots' option");
    const taken = new Set(this.#dimms.map((d) => d.slot));
    if (hint !== undefined) {
      if (hint < 0 || hint >= max) {
        throw new HotplugError(`invalid slot number ${hint}, valid range is [0-${max - 1}]`);
      }
      if (taken.has(hint)) throw new HotplugError(`slot ${hint} is busy`);
      return hint;
    }
    for (let slot = 0; slot < max; slot++) if (!taken.has(slot)) return slot;
    throw new HotplugError('no free slots available');
  }

  /**
   * memory_device_get_free_addr: a hint must be aligned and inside device memory and clash with
   * nothing; otherwise the lowest address from the region's start that fits between the plugged
   * DIMMs (sorted by address), each candidate aligned up past the one it overlaps.
   */
  private freeAddress(
    hint: bigint | undefined,
    size: bigint,
    dm: { readonly base: bigint; readonly size: bigint },
  ): bigint {
    // A RAM backend's alignment is the host page size; device memory starts 1 GiB aligned, so
    // 64 KiB (a POWER host's page) never fragments it.
    const align = 0x10000n;
    const end = dm.base + dm.size;
    const alignUp = (v: bigint) => ((v + align - 1n) / align) * align;
    const useHint = hint !== undefined && hint !== 0n;
    if (useHint && hint % align !== 0n) {
      throw new HotplugError(`address must be aligned to ${formatHex(align)} bytes`);
    }
    let start: bigint;
    if (useHint) {
      if (hint < dm.base || hint + size > end) {
        throw new HotplugError(
          `can't add memory device [${formatHex(hint)}:${formatHex(size)}], usable range for memory devices [${formatHex(dm.base)}:${formatHex(dm.size)}]`,
        );
      }
      start = hint;
    } else {
      start = alignUp(dm.base);
    }
    for (const d of this.dimms()) {
      const overlaps = d.addr < start + size && start < d.addr + d.size;
      if (overlaps) {
        if (useHint) {
          throw new HotplugError(`address range conflicts with memory device id='${d.id ?? '(unnamed)'}'`);
        }
        start = alignUp(d.addr + d.size);
      } else if (d.addr >= start + size) {
        break;
      }
    }
    if (start + size > end) {
      throw new HotplugError(
        'could not find position in guest address space for memory device - memory fragmented due to alignments',
      );
    }
    return start;
  }
}

/**
 * Writes (or, without device memory, removes) /ibm,dynamic-reconfiguration-memory for `dimms`
 * (sorted by address), as QEMU's spapr_dt_dynamic_memory_v2: each ibm,dynamic-memory-v2 entry is
 * (number of LMBs, 64-bit base address, DRC index, associativity index, flags), after a count.
 */
export function writeDrconfMemory(
  dt: DeviceTree,
  layout: PseriesMemoryLayout,
  dimms: readonly Pick<PluggedDimm, 'addr' | 'size' | 'node'>[],
): void {
  const dm = layout.deviceMemory;
  if (!dm) {
    dt.removeNode(DRCONF_MEMORY_NODE);
    return;
  }
  const lmb = SPAPR_MEMORY_BLOCK_SIZE;
  const node = DRCONF_MEMORY_NODE;
  dt.ensureNode(node);
  dt.setPropU32Cells(node, 'ibm,lmb-size', [Number(lmb >> 32n), Number(lmb & 0xffffffffn)]);
  dt.setPropU32Cells(node, 'ibm,memory-flags-mask', [0xff]);
  dt.setPropU32Cells(node, 'ibm,memory-preservation-time', [0]);
  const entries: number[][] = [];
  const entry = (count: bigint, base: bigint, drc: number, aa: number, flags: number) =>
    entries.push([Number(count), Number(base >> 32n), Number(base & 0xffffffffn), drc, aa >>> 0, flags]);
  entry(dm.base / lmb, 0n, 0, -1, SPAPR_LMB_FLAGS_RESERVED | SPAPR_LMB_FLAGS_DRC_INVALID);
  let at = dm.base;
  for (const d of dimms) {
    if (at < d.addr) entry((d.addr - at) / lmb, at, lmbDrcIndex(at), -1, 0);
    entry(
      d.size / lmb,
      d.addr,
      lmbDrcIndex(d.addr),
      d.node,
      SPAPR_LMB_FLAGS_ASSIGNED | SPAPR_LMB_FLAGS_HOTREMOVABLE,
    );
    at = d.addr + d.size;
  }
  const end = dm.base + dm.size;
  if (at < end) entry((end - at) / lmb, at, lmbDrcIndex(at), -1, 0);
  dt.setPropU32Cells(node, 'ibm,dynamic-memory-v2', [entries.length, ...entries.flat()]);
}

/**
 * The memory-hotplug service of a pseries machine (HotplugTokens.MemoryHotplug). Its first use
 * publishes /ibm,dynamic-reconfiguration-memory when the machine has device memory.
 */
export function memoryHotplugOf(machine: Machine): PseriesMemoryHotplug {
  const service = machine.get(HotplugTokens.MemoryHotplug);
  service.publish();
  return service;
}
