import type { GuestPort } from '@ddw/machine';

/**
 * The guest model's public shapes. A LinuxGuest drives a machine only through its GuestPort
 * (device tree, RTAS, hypercalls, guest RAM), as a pseries Linux kernel would.
 */

/**
 * Which kernel's algorithm: 6.12 (as Debian's 6.12.y runs it: windows sized from
 * ibm,lrdr-capacity alone, a query at PCI device setup, masks over 32 bits, 4K pages by default),
 * 6.1 (dynamic windows, default-window removal, nret 6) or 4.x (2016: direct map or nothing).
 */
export type LinuxGeneration = 'linux-6.12' | 'linux-6.1' | 'linux-4.x';

export interface LinuxGuestOptions {
  /** Default 'linux-6.1'. */
  generation?: LinuxGeneration;
  /**
   * The guest's PAGE_SIZE: 64 KiB by default for linux-6.1 and linux-4.x (ppc64 distributions of
   * their time), 4 KiB for linux-6.12 (Debian's powerpc64le 6.12 kernel).
   */
  pageSize?: bigint;
  /** The kernel's `disable_ddw`: never negotiate, every device stays on the default window. */
  disableDdw?: boolean;
  /** Guest physical address of the page the guest builds TCE lists in (default 0x2070000, as in the public traces). */
  tceListAddress?: bigint;
  /** DMA mask bits a driver sets for a device, by PCI IDs; default: the built-in driver table. */
  dmaMaskBits?: (fn: PciFunction) => number | undefined;
}

/** A PCI function found in the device tree. */
export interface PciFunction {
  /** Its device-tree node, e.g. "/pci@800000020000000/ethernet@0". */
  node: string;
  /** The PE node holding ibm,dma-window (the PHB node on QEMU's pseries). */
  peNode: string;
  /** (bus << 16) | (devfn << 8), from reg[0]. */
  cfgAddr: number;
  buid: bigint;
  vendorId: number;
  deviceId: number;
  /** The Linux driver the model binds, e.g. "e1000e", or undefined when none is known. */
  driver: string | undefined;
}

/** How a function does DMA after negotiation. */
export type DmaMode = 'direct' | 'dynamic' | 'default';

/** The window a function's DMA goes through. */
export interface DmaWindowInfo {
  liobn: number;
  /** Bus address of the window's start. */
  busOffset: bigint;
  pageShift: number;
  /** log2 of the window size in bytes. */
  windowShift: number;
}

/** A function's DMA set-up, with the reasons, as dmesg would tell them. */
export interface DeviceDmaState {
  fn: PciFunction;
  mode: DmaMode;
  window: DmaWindowInfo;
  /** Direct: device address = guest physical + dmaOffset; otherwise 0 (addresses come from dmaMap). */
  dmaOffset: bigint;
  /** The DMA mask the driver set (bits). */
  maskBits: number;
}

/** What the guest decided for one PE (shared by all its functions), and why. */
export interface PeDecision {
  peNode: string;
  buid: bigint;
  outcome: 'direct' | 'dynamic' | 'failed' | 'not-attempted';
  /**
   * One line a user can act on: what the guest got and, when it got no DDW or a dynamic one,
   * why (what was queried, returned, removed) and what to change. Written from the negotiation's
   * data, not from `reasons`.
   */
  summary: string;
  /** Human-readable steps and reasons: query results, page size chosen and why, window size, fallbacks. */
  reasons: string[];
  /** The RTAS calls made, in order: name, arguments and returned cells. */
  rtas: { call: string; args: number[]; rets: number[] }[];
  defaultWindowRemoved: boolean;
  window?: DmaWindowInfo;
}

export type DmaDirection = 'to-device' | 'from-device' | 'bidirectional';

/** What the guest uses of a machine's guest port (a GuestPort, or a wrapper around one in tests). */
export type LinuxGuestPort = Pick<GuestPort, 'hcall' | 'rtasCall' | 'deviceTree' | 'memory'>;

/** A driver the model knows: the name Linux binds and the DMA mask it sets. */
export interface KnownDriver {
  name: string;
  dmaMaskBits: number;
}
