import {
  ConfigError,
  definePlugin,
  type MachineEventBus,
  provideValue,
  resolve,
  type TraceBus,
  token,
} from '@ddw/machine';
import type { AddressSpace, MemoryListener, RamRegion } from '@ddw/memory';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import {
  VfioContainer,
  type VfioContainerDeps,
  type VfioContainerTraces,
  type VfioKvm,
} from './container.js';
import { DEFAULT_HOST_CONFIG, type HostIommu, type HostIommuConfig } from './host/host-iommu.js';
import { HostVirtualMemory } from './host/host-memory.js';
import { hostConfigSchema, parseHostOptions } from './host/options.js';
import { SimulatedSpaprTceHost } from './host/simulated.js';
import { connectKvm, KvmTceTablesToken } from './kvm.js';
import { VFIO_QEMU_VERSIONS, type VfioQemuVersion, vfioTraceEvents } from './traces.js';
import { type VfioConnector, vfioPciDriver } from './vfio-pci.js';

/** Where guest RAM sits in the (simulated) QEMU process: its host pointer. */
export const GUEST_RAM_HOST_BASE = 0x7e00_0000_0000n;

/**
 * The machine's VFIO state: the host IOMMU, the host process memory, the containers (one per PHB
 * address space, more when the host refuses to share one), and the pre-registration hook that
 * @ddw/vfio-prereg fills in.
 */
export class Vfio implements VfioConnector {
  readonly containers: VfioContainer[] = [];
  /** Set by @ddw/vfio-prereg; without it a v2 host cannot be used. */
  preregListener: ((container: VfioContainer) => MemoryListener) | undefined;
  readonly traces: VfioContainerTraces;
  /** The KVM-VFIO device under `-accel kvm` (set by the plugin); undefined under TCG. */
  kvm: VfioKvm | undefined;
  readonly #groups = new Map<string, number>();
  /** Host functions passed through, and the device holding each. */
  readonly #hosts = new Map<string, string>();

  constructor(
    readonly host: HostIommu,
    readonly hostMemory: HostVirtualMemory,
    private readonly systemMemory: AddressSpace,
    private readonly ram: RamRegion,
    trace: TraceBus,
    private readonly events: MachineEventBus,
    /** The QEMU whose VFIO listener the containers follow: its trace events and where they fire. */
    readonly qemu: VfioQemuVersion = '7.2',
  ) {
    const ev = new Map(trace.defineAll(vfioTraceEvents(qemu), 'vfio').map((e) => [e.name, e]));
    const v10 = qemu === '10.0';
    this.traces = {
      mapNotify: ev.get('vfio_iommu_map_notify')!,
      regionAddSkip: ev.get(v10 ? 'vfio_listener_region_skip' : 'vfio_listener_region_add_skip')!,
      regionAddIommu: ev.get('vfio_listener_region_add_iommu')!,
      regionDelSkip: ev.get(v10 ? 'vfio_listener_region_skip' : 'vfio_listener_region_del_skip')!,
      regionDel: ev.get('vfio_listener_region_del')!,
      createWindow: ev.get('vfio_spapr_create_window')!,
      removeWindow: ev.get('vfio_spapr_remove_window')!,
      groupAttach: ev.get('vfio_spapr_group_attach')!,
      ...(v10 ? { regionDelIommu: ev.get('vfio_listener_region_del_iommu')! } : {}),
    };
  }

  /** The host pointer of guest RAM byte `offset` (memory_region_get_ram_ptr); other regions have none here. */
  hostPointer(mr: RamRegion, offset: bigint): bigint | undefined {
    return mr === this.ram ? GUEST_RAM_HOST_BASE + offset : undefined;
  }

  groupNumber(group: string): number {
    let n = this.#groups.get(group);
    if (n === undefined) {
      n = this.#groups.size + 1;
      this.#groups.set(group, n);
    }
    return n;
  }

  claimHost(host: string, id: string): string | undefined {
    const holder = this.#hosts.get(host);
    if (holder !== undefined && holder !== id) return holder;
    this.#hosts.set(host, id);
    return undefined;
  }

  releaseHost(host: string, id: string): void {
    if (this.#hosts.get(host) === id) this.#hosts.delete(host);
  }

  /** vfio_get_group + vfio_connect_container: share a container of the same address space if the host lets the group join it. */
  connect(phb: SpaprPhb, group: string): VfioContainer {
    this.groupNumber(group);
    const as = phb.dmaAddressSpace;
    for (const c of this.containers) {
      if (c.as === as && c.groups.size > 0 && c.attachGroup(group)) return c;
    }
    const container = VfioContainer.create(as, group, this.containerDeps());
    this.containers.push(container);
    return container;
  }

  private containerDeps(): VfioContainerDeps {
    const config = this.host.config;
    return {
      host: this.host,
      systemMemory: this.systemMemory,
      hostPointer: (mr, offset) => this.hostPointer(mr, offset),
      hostPageSize: config.pageSize,
      ramPageSize: config.ramPageSize,
      traces: this.traces,
      events: this.events,
      ...(this.preregListener ? { preregListener: this.preregListener } : {}),
      qemu: this.qemu,
      ...(this.kvm ? { kvm: this.kvm } : {}),
    };
  }
}

export const VfioTokens = {
  Vfio: token<Vfio>('vfio-common', 'Vfio'),
} as const;

export interface VfioCommonOptions {
  /**
   * Host capabilities, as the CLI's `--host` text or as data, over DEFAULT_HOST_CONFIG. The
   * description's `host` section, when present, wins.
   */
  host?: string | Partial<HostIommuConfig>;
  /** A host IOMMU other than the simulated Linux one (it is given the host process memory). */
  hostIommu?: (config: HostIommuConfig, memory: HostVirtualMemory) => HostIommu;
  /**
   * The QEMU version whose VFIO side the machine reproduces: its hw/vfio/trace-events declarations
   * (names, arguments, formats), where each event fires, and its error texts. '7.2' (default) or
   * '10.0'. The description section is untouched: this is a property of the preset, like the
   * machine types it offers.
   */
  qemuVersion?: VfioQemuVersion;
}

/**
 * VFIO passthrough for sPAPR: the `vfio-pci` device, its containers, and the host IOMMU it talks
 * to (by default a simulated Linux SPAPR TCE IOMMU). Description section `host` (see README).
 */
export const vfioCommon = definePlugin((options: VfioCommonOptions = {}) => ({
  name: 'vfio-common',
  requires: ['spapr-iommu', 'spapr-pci'],
  sections: { host: hostConfigSchema.optional() },
  register(ctx) {
    const described = ctx.description.host as HostIommuConfig | undefined;
    const base =
      typeof options.host === 'string'
        ? parseHostOptions(options.host)
        : { ...DEFAULT_HOST_CONFIG, ...(options.host ?? {}) };
    const config: HostIommuConfig = described ?? base;
    const qemu = options.qemuVersion ?? '7.2';
    if (!VFIO_QEMU_VERSIONS.includes(qemu)) {
      throw new ConfigError(
        'vfio-common.qemuVersion',
        `${JSON.stringify(qemu)} is not a QEMU version whose VFIO side ddw models`,
        `use one of ${VFIO_QEMU_VERSIONS.join(', ')}`,
      );
    }
    const hostMemory = new HostVirtualMemory();
    const ram = ctx.memory.ram;
    hostMemory.add({
      name: ram.name,
      vaddr: GUEST_RAM_HOST_BASE,
      size: ram.size,
      pageSize: config.ramPageSize,
      hugetlb: config.ramPageSize > config.pageSize,
      read: (offset, out) => ram.ram.read(Number(offset), out, 0, out.length),
      write: (offset, data) => ram.ram.write(Number(offset), data, 0, data.length),
    });
    const host = options.hostIommu
      ? options.hostIommu(config, hostMemory)
      : new SimulatedSpaprTceHost(config, hostMemory);
    const vfio = new Vfio(host, hostMemory, ctx.memory.addressSpace, ram, ctx.trace, ctx.events, qemu);
    // The simulated KVM learns its host; under -accel kvm the containers get the KVM-VFIO device.
    vfio.kvm = connectKvm(
      resolve(ctx.container, KvmTceTablesToken),
      config.kvmTceVfio === true,
      ctx.memory.addressSpace,
      (mr, offset) => vfio.hostPointer(mr, offset),
      (group) => vfio.groupNumber(group),
    );
    provideValue(ctx.container, VfioTokens.Vfio, vfio);
    resolve(ctx.container, SpaprPciTokens.Drivers).register(vfioPciDriver(vfio));
  },
}));
