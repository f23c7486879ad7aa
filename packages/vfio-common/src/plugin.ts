import {
  ConfigError,
  definePlugin,
  type MachineEventBus,
  MachineTokens,
  PluginError,
  type TraceBus,
  token,
} from '@ddw/machine';
import type { AddressSpace, MemoryListener, RamRegion } from '@ddw/memory';
import { type PciBus, PciTokens } from '@ddw/pci';
import { VfioContainer, type VfioContainerDeps, type VfioContainerTraces } from './container.js';
import type { HostIommu } from './host/host-iommu.js';
import { HostVirtualMemory } from './host/host-memory.js';
import { connectKvm, KvmTceTablesToken, type VfioKvm } from './kvm.js';
import { VFIO_QEMU_VERSIONS, type VfioQemuVersion, vfioTraceEvents } from './traces.js';
import { type VfioConnector, vfioPciDriver } from './vfio-pci.js';

/** Where guest RAM sits in the (simulated) QEMU process: its host pointer. */
export const GUEST_RAM_HOST_BASE = 0x7e00_0000_0000n;

/**
 * The machine's VFIO state: the host IOMMU, the host process memory, the containers (one per PCI
 * bus DMA address space, more when the host refuses to share one), and the pre-registration hook that
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
  connect(bus: PciBus, group: string): VfioContainer {
    this.groupNumber(group);
    const as = bus.dmaAddressSpace;
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
  /**
   * The host kernel's IOMMU the containers talk to. vfio-common registers only a stand-in that
   * fails, naming the fix: a host plugin registers the real one after vfio-common (hostLinux()
   * from @ddw/host-linux, or another backend), which replaces it.
   */
  HostIommu: token<HostIommu>('vfio-common', 'HostIommu'),
  /**
   * The QEMU process's memory as the host kernel sees it: what a host pins, maps and lets devices
   * read and write. vfio-common provides it (guest RAM is put in it at GUEST_RAM_HOST_BASE, on the
   * host's RAM pages); a host plugin is given it.
   */
  HostMemory: token<HostVirtualMemory>('vfio-common', 'HostMemory'),
} as const;

export interface VfioCommonOptions {
  /**
   * The QEMU version whose VFIO side the machine reproduces: its hw/vfio/trace-events declarations
   * (names, arguments, formats), where each event fires, and its error texts. '7.2' (default) or
   * '10.0'. The description section is untouched: this is a property of the preset, like the
   * machine types it offers.
   */
  qemuVersion?: VfioQemuVersion;
}

/**
 * VFIO passthrough for sPAPR: the `vfio-pci` device and its containers. The host IOMMU they talk
 * to comes from a host plugin registering VfioTokens.HostIommu after this one (hostLinux() from
 * @ddw/host-linux: a simulated Linux SPAPR TCE IOMMU), given the host process memory
 * (VfioTokens.HostMemory). The machine's VFIO state (VfioTokens.Vfio) is built once every plugin
 * has registered, from whichever host was registered last.
 */
export const vfioCommon = definePlugin((options: VfioCommonOptions = {}) => ({
  name: 'vfio-common',
  // spapr-iommu provides the simulated KVM's TCE tables (KvmTceTablesToken); spapr-pci the
  // PciTokens this plugin registers its driver in.
  requires: ['spapr-iommu', 'spapr-pci'],
  register(ctx) {
    const qemu = options.qemuVersion ?? '7.2';
    if (!VFIO_QEMU_VERSIONS.includes(qemu)) {
      throw new ConfigError(
        'vfio-common.qemuVersion',
        `${JSON.stringify(qemu)} is not a QEMU version whose VFIO side ddw models`,
        `use one of ${VFIO_QEMU_VERSIONS.join(', ')}`,
      );
    }
    ctx.provide(VfioTokens.HostMemory, { useValue: new HostVirtualMemory() });
    ctx.provide(VfioTokens.HostIommu, {
      useFactory: () => {
        throw new PluginError(
          'vfio-common',
          'missing-requirement',
          'vfio-common has no host IOMMU to pass devices through: add hostLinux() from @ddw/host-linux, or a plugin that registers VfioTokens.HostIommu (requires: ["vfio-common"])',
        );
      },
    });
    ctx.provide(VfioTokens.Vfio, {
      useFactory: (get) => {
        const host = get(VfioTokens.HostIommu);
        const hostMemory = get(VfioTokens.HostMemory);
        const ram = get(MachineTokens.GuestRam);
        const systemMemory = get(MachineTokens.SystemAddressSpace);
        const config = host.config;
        // Guest RAM is backed as the host is set up: on its RAM pages (hugetlbfs above the host page).
        hostMemory.add({
          name: ram.name,
          vaddr: GUEST_RAM_HOST_BASE,
          size: ram.size,
          pageSize: config.ramPageSize,
          hugetlb: config.ramPageSize > config.pageSize,
          read: (offset, out) => ram.ram.read(Number(offset), out, 0, out.length),
          write: (offset, data) => ram.ram.write(Number(offset), data, 0, data.length),
        });
        const vfio = new Vfio(
          host,
          hostMemory,
          systemMemory,
          ram,
          get(MachineTokens.Trace),
          get(MachineTokens.Events),
          qemu,
        );
        // The simulated KVM learns its host; under -accel kvm the containers get the KVM-VFIO device.
        vfio.kvm = connectKvm(
          get(KvmTceTablesToken),
          config.kvmTceVfio === true,
          systemMemory,
          (mr, offset) => vfio.hostPointer(mr, offset),
          (group) => vfio.groupNumber(group),
        );
        get(PciTokens.Drivers).register(vfioPciDriver(vfio));
        return vfio;
      },
    });
  },
}));
