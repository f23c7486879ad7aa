import { definePlugin } from '@ddw/machine';
import { type HostIommu, type HostIommuConfig, type HostVirtualMemory, VfioTokens } from '@ddw/vfio-common';
import { DEFAULT_HOST_CONFIG, hostConfigSchema, parseHostOptions } from './host-options.js';
import { SimulatedSpaprTceHost } from './simulated-host.js';

export interface HostLinuxOptions {
  /**
   * Host capabilities, as the CLI's `--host` text or as data, over DEFAULT_HOST_CONFIG. The
   * description's `host` section, when present, wins.
   */
  host?: string | Partial<HostIommuConfig>;
  /**
   * Builds the host IOMMU from the resolved configuration and the host process memory instead of
   * a plain SimulatedSpaprTceHost: one prepared with faults, or one wrapping it.
   */
  hostIommu?: (config: HostIommuConfig, memory: HostVirtualMemory) => HostIommu;
}

/**
 * The simulated Linux host: a SimulatedSpaprTceHost over the host process memory vfio-common
 * provides (VfioTokens.HostMemory), registered as the machine's VfioTokens.HostIommu. Description
 * section `host` (see README). It registers after vfio-common, so its host replaces the stand-in
 * vfio-common registers for the token; the host is built, over vfio-common's host memory, when the
 * machine is assembled.
 */
export const hostLinux = definePlugin((options: HostLinuxOptions = {}) => ({
  name: 'host-linux',
  requires: ['vfio-common'],
  sections: { host: hostConfigSchema.optional() },
  register(ctx) {
    const described = ctx.description.host as HostIommuConfig | undefined;
    const base =
      typeof options.host === 'string'
        ? parseHostOptions(options.host)
        : { ...DEFAULT_HOST_CONFIG, ...(options.host ?? {}) };
    const config: HostIommuConfig = described ?? base;
    ctx.provide(VfioTokens.HostIommu, {
      useFactory: (get) => {
        const memory = get(VfioTokens.HostMemory);
        return options.hostIommu
          ? options.hostIommu(config, memory)
          : new SimulatedSpaprTceHost(config, memory);
      },
    });
  },
}));
