import { token } from '@ddw/machine';
import type { PseriesMemoryHotplug } from './hotplug.js';
import type { PseriesMemoryLayout } from './memory-layout.js';

export const PseriesTokens = {
  /** Where RAM and hotpluggable memory live. */
  MemoryLayout: token<PseriesMemoryLayout>('pseries', 'MemoryLayout'),
} as const;

export const HotplugTokens = {
  /** Backends and DIMMs plugged at run time (the monitor's object_add / device_add). */
  MemoryHotplug: token<PseriesMemoryHotplug>('pseries', 'MemoryHotplug'),
} as const;
