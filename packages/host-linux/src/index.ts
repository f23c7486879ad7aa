export {
  DEFAULT_HOST_CONFIG,
  formatHostConfig,
  HOST_OPTION_KEYS,
  type HostOptionKey,
  hostConfigSchema,
  hostSectionOverlay,
  parseHostOptions,
} from './host-options.js';
export { type HostLinuxOptions, hostLinux } from './plugin.js';
export { POWERNV_SLOT1_ADDR } from './powernv-table.js';
export { ARGSZ, EBADF, SimulatedSpaprTceContainer } from './simulated-container.js';
export { SimulatedSpaprTceHost } from './simulated-host.js';
export type { SimulatedHostWindow } from './tce-window.js';
