import { definePlugin } from '@ddw/machine';
import { z } from 'zod';
import type { LinuxGeneration } from './api.js';

/** The guest models ddw has, newest first. */
export const LINUX_GENERATIONS = [
  'linux-6.12',
  'linux-6.1',
  'linux-4.x',
] as const satisfies readonly LinuxGeneration[];
export const DEFAULT_LINUX_GENERATION: LinuxGeneration = 'linux-6.12';

export type GuestChoice = LinuxGeneration | 'none';
/** What a description's `guest.generation` (and `--guest`) may say; `none` runs no guest. */
export const GUEST_CHOICES = [...LINUX_GENERATIONS, 'none'] as const satisfies readonly GuestChoice[];

/** The description's `guest` section: which guest model a run boots. */
export const guestSectionSchema = z.strictObject({
  generation: z
    .enum(GUEST_CHOICES, {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not a guest model; use ${GUEST_CHOICES.join(', ')}`,
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
