import type { DmaWindowInfo, PeDecision } from './api.js';
import type { IommuTable } from './iommu-table.js';

/** A PE's default (32-bit) window, from ibm,dma-window. */
export interface DefaultWindow {
  liobn: number;
  busOffset: bigint;
  size: bigint;
}

/** The DDW a PE got: the window, whether RAM is mapped 1:1 in it, and its table when dynamic. */
export interface PeWindow {
  info: DmaWindowInfo;
  direct: boolean;
  /** The table the DMA API allocates from (dynamic windows only). */
  table: IommuTable | undefined;
  /** The property the guest added to the PE node. */
  propName: string;
  /** For a dynamic window: the function whose DMA was switched to it (the one that asked). */
  owner: string | undefined;
}

/** What the guest keeps per PE (Linux: per device node holding ibm,dma-window). */
export interface PeState {
  node: string;
  buid: bigint;
  /** The PCI domain the guest numbers the PHB with (PHBs in BUID order). */
  domain: number;
  defaultWindow: DefaultWindow | undefined;
  /** The 4K-page table on the default window; undefined once the guest removed that window. */
  defaultTable: IommuTable | undefined;
  window: PeWindow | undefined;
  /** enable_ddw ran for this PE (success or failure); it never runs twice. */
  negotiated: boolean;
  /** On the failed-PE list: never retried until reboot. */
  failed: boolean;
  /**
   * 6.12's table_group->max_dynamic_windows_supported, set by the query at PCI device setup:
   * 0 not yet set up, -1 no DDW (no tokens or the query failed), 1 or 2 windows.
   */
  maxDynamicWindows: number;
  /** Order in which PEs got their window (Linux's window list is newest first). */
  windowSeq: number;
  decision: PeDecision;
}

export const DIRECT64_PROP = 'linux,direct64-ddr-window-info';
export const DMA64_PROP = 'linux,dma64-ddr-window-info';

/**
 * The 24-byte window-info property: be32 liobn, 4 bytes of alignment padding, be64 bus address,
 * be32 TCE shift, be32 window shift.
 */
export function windowInfoProperty(info: DmaWindowInfo): Uint8Array {
  const bytes = new Uint8Array(24);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, info.liobn);
  view.setBigUint64(8, info.busOffset);
  view.setUint32(16, info.pageShift);
  view.setUint32(20, info.windowShift);
  return bytes;
}
