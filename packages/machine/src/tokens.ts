import type { AddressSpace, ContainerRegion, RamRegion } from '@ddw/memory';
import type { AddressSpaceList } from './address-spaces.js';
import type { DeviceTree } from './devicetree.js';
import { token } from './di.js';
import type { MachineEventBus } from './events.js';
import type { GuestPort } from './guest-port.js';
import type { HypercallRegistry } from './hcall.js';
import type { DeviceRegistry } from './lifecycle.js';
import type { Machine } from './machine.js';
import type { RtasRegistry } from './rtas.js';
import type { TraceBus } from './trace/index.js';
import type { VmstateRegistry } from './vmstate/index.js';

/**
 * The services every machine holds, by token: the only way to reach one (`machine.get(token)`,
 * `ctx.get(token)` in a plugin, `@inject(token)` in a service's constructor). Plugins add their
 * own under their package name (`token('spapr-iommu', 'Tables')`).
 */
export const MachineTokens = {
  Machine: token<Machine>('machine', 'Machine'),
  /** The root of guest physical memory, 2^64 bytes ("system"). */
  SystemMemory: token<ContainerRegion>('machine', 'SystemMemory'),
  /** Guest RAM, mapped at guest physical address 0. */
  GuestRam: token<RamRegion>('machine', 'GuestRam'),
  /** Guest physical memory as an address space ("memory"). */
  SystemAddressSpace: token<AddressSpace>('machine', 'SystemAddressSpace'),
  /** The address spaces `info mtree` shows: guest memory, then what plugins add (a PHB's DMA space). */
  AddressSpaces: token<AddressSpaceList>('machine', 'AddressSpaces'),
  /** Migration sections: what a snapshot carries. */
  Vmstate: token<VmstateRegistry>('machine', 'Vmstate'),
  Hypercalls: token<HypercallRegistry>('machine', 'Hypercalls'),
  Rtas: token<RtasRegistry>('machine', 'Rtas'),
  Trace: token<TraceBus>('machine', 'Trace'),
  Events: token<MachineEventBus>('machine', 'Events'),
  DeviceTree: token<DeviceTree>('machine', 'DeviceTree'),
  Devices: token<DeviceRegistry>('machine', 'Devices'),
  /** The validated machine description (plain data, sizes as bigint). */
  Description: token<Record<string, unknown>>('machine', 'Description'),
  GuestPort: token<GuestPort>('machine', 'GuestPort'),
} as const;
