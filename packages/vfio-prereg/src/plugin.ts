import { definePlugin, resolve } from '@ddw/machine';
import { VfioTokens } from '@ddw/vfio-common';
import { preregListener } from './prereg.js';

/**
 * Guest RAM pre-registration for SPAPR TCE v2 hosts: every VFIO container on a v2 host registers
 * guest RAM through this listener before it maps anything.
 */
export const vfioPrereg = definePlugin(() => ({
  name: 'vfio-prereg',
  requires: ['vfio-common'],
  register(ctx) {
    const vfio = resolve(ctx.container, VfioTokens.Vfio);
    const event = (name: string) => ctx.trace.event(name)!;
    const traces = {
      addSkip: event('vfio_prereg_listener_region_add_skip'),
      delSkip: event('vfio_prereg_listener_region_del_skip'),
      register: event('vfio_prereg_register'),
      unregister: event('vfio_prereg_unregister'),
    };
    vfio.preregListener = (container) => preregListener(container, traces);
  },
}));
