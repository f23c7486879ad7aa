import { definePlugin, MachineTokens, token } from '@ddw/machine';
import type { MemoryListener } from '@ddw/memory';
import { type VfioContainer, VfioTokens } from '@ddw/vfio-common';
import { preregListener } from './prereg.js';

/** Makes the listener that pre-registers guest RAM for one container. */
export type PreregListenerFactory = (container: VfioContainer) => MemoryListener;

export const VfioPreregTokens = {
  /** The hook the plugin installs on the machine's VFIO state (`Vfio.preregListener`). */
  Listener: token<PreregListenerFactory>('vfio-prereg', 'Listener'),
} as const;

/**
 * Guest RAM pre-registration for SPAPR TCE v2 hosts: every VFIO container on a v2 host registers
 * guest RAM through this listener before it maps anything.
 */
export const vfioPrereg = definePlugin(() => ({
  name: 'vfio-prereg',
  requires: ['vfio-common'],
  register(ctx) {
    ctx.provide(VfioPreregTokens.Listener, {
      useFactory: (get) => {
        const trace = get(MachineTokens.Trace);
        const event = (name: string) => trace.event(name)!;
        const traces = {
          addSkip: event('vfio_prereg_listener_region_add_skip'),
          delSkip: event('vfio_prereg_listener_region_del_skip'),
          register: event('vfio_prereg_register'),
          unregister: event('vfio_prereg_unregister'),
        };
        const listener: PreregListenerFactory = (container) => preregListener(container, traces);
        get(VfioTokens.Vfio).preregListener = listener;
        return listener;
      },
    });
  },
}));
