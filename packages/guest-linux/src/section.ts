import { definePlugin } from '@ddw/machine';
import * as z from 'zod';
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

/** The kernel page sizes ppc64 Linux builds with. */
export const GUEST_PAGE_SIZES = ['4K', '64K'] as const;

/** The description's `guest` section: which guest model a run boots. */
export const guestSectionSchema = z.strictObject({
  generation: z
    .enum(GUEST_CHOICES, {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not a guest model; use ${GUEST_CHOICES.join(', ')}`,
    })
    .default(DEFAULT_LINUX_GENERATION),
  /**
   * The kernel's PAGE_SIZE: it shapes how default-window mappings are made (H_PUT_TCE per page
   * vs 16-TCE indirect runs), not the negotiation. Default: the generation's (6.12: 4K, Debian's
   * powerpc64le; older: 64K).
   */
  page: z
    .enum(GUEST_PAGE_SIZES, {
      error: (issue) => `${JSON.stringify(issue.input)} is not a kernel page size; use 4K or 64K`,
    })
    .optional(),
});

export interface GuestSection {
  generation: GuestChoice;
  page?: (typeof GUEST_PAGE_SIZES)[number];
}

/** A guest section's page size in bytes, or undefined for the generation's default. */
export function guestPageSize(section: GuestSection): bigint | undefined {
  return section.page === undefined ? undefined : section.page === '4K' ? 0x1000n : 0x10000n;
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
