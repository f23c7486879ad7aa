import { definePlugin } from '@ddw/machine';
import { z } from 'zod';
import type { LinuxGeneration } from './api.js';

/** The guest models ddw has, newest first; `none` runs no guest (the machine alone). */
export const LINUX_GENERATIONS: readonly LinuxGeneration[] = ['linux-6.1', 'linux-4.x'];
export const DEFAULT_LINUX_GENERATION: LinuxGeneration = 'linux-6.1';

export type GuestChoice = LinuxGeneration | 'none';

/** The description's `guest` section: which guest model a run boots. */
export const guestSectionSchema = z.strictObject({
  generation: z
    .enum(['linux-6.1', 'linux-4.x', 'none'] as const satisfies readonly GuestChoice[], {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not a guest model; use ${[...LINUX_GENERATIONS, 'none'].join(', ')}`,
    })
    .default(DEFAULT_LINUX_GENERATION),
});

export interface GuestSection {
  generation: GuestChoice;
}

/**
 * Declares the `guest` section of a machine description, so the guest a run boots is chosen
 * through the description like everything else (`--guest` is an overlay on it).
 */
export const linuxGuestSection = definePlugin(() => ({
  name: 'guest-linux',
  sections: { guest: guestSectionSchema.default({ generation: DEFAULT_LINUX_GENERATION }) },
  register() {},
}));

/** The guest section of a built machine's description (its default when absent). */
export function guestOf(description: Record<string, unknown>): GuestSection {
  const section = description.guest as GuestSection | undefined;
  return section ?? { generation: DEFAULT_LINUX_GENERATION };
}
