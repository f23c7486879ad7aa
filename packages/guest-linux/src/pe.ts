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
  /** The decision so far; its summary is written when decisions() is asked. */
  decision: Omit<PeDecision, 'summary'>;
  /** The DMA mask each function's driver set, by function node ("e1000e 0000:00:00.0": name). */
  masks: Map<string, { name: string; bits: number }>;
  /** What enable_ddw learnt and did (undefined until it ran). */
  negotiation: NegotiationRecord | undefined;
}

/** Why enable_ddw gave up: the step that failed, with what it was told. */
export type DdwFailureCause =
  /** No ibm,ddw-applicable (or fewer than 3 tokens): the PHB offers no DDW. */
  | { kind: 'no-ddw' }
  | { kind: 'query'; status: number; nret: number }
  /**
   * The query said 0 windows available and none could be freed: 4.x never removes the default
   * window; 6.x could not (live mappings, no ibm,dma-window, no reset extension), or removed it
   * and the query still said 0.
   */
  | {
      kind: 'no-window';
      why: 'no-removal' | 'live-mappings' | 'no-default-window' | 'no-reset-extension' | 'still-none';
    }
  /** No page size in the query's mask that the kernel uses. */
  | { kind: 'page-size'; mask: number }
  /** 4.x: the largest block holds fewer TCEs than RAM needs (and 4.x has no dynamic windows). */
  | { kind: 'block-too-small'; block: bigint; needed: bigint; pageShift: number; maxAddress: bigint }
  | { kind: 'create'; status: number }
  | { kind: 'populate'; rc: bigint }
  /** 6.12, a mask of 33-63 bits: limited-address mode is missing (errno) or its reset failed (status). */
  | { kind: 'limited-address'; errno?: number; status?: number };

/** One query's answer. */
export interface QueryRecord {
  nret: number;
  status: number;
  windowsAvailable: number;
  largestBlock: bigint;
  pageMask: number;
}

/** What one enable_ddw run learnt and did: the data a decision's summary is written from. */
export interface NegotiationRecord {
  /** The function whose driver's mask started it ("e1000e 0000:00:00.0"), and the mask. */
  fn: string;
  maskBits: number;
  queries: QueryRecord[];
  /** The IOMMU page shift chosen from the query's mask. */
  pageShift?: number;
  /**
   * How the window was sized: the address RAM must be covered to (ibm,lrdr-capacity for 6.12,
   * the end of RAM otherwise), the block's size, the window's, and whether it is dynamic.
   */
  sizing?: {
    basis: 'lrdr-capacity' | 'ram';
    maxAddress: bigint;
    ramShift: number;
    blockShift: number;
    windowShift: number;
    dynamic: boolean;
  };
  /** The default window's removal (0 windows available): its status. */
  removal?: { status: number };
  create?: { pageShift: number; windowShift: number; status: number; liobn?: number; busOffset?: bigint };
  /** reset-pe-dma-windows after a failure (the default window restored). */
  resetStatus?: number;
  failure?: DdwFailureCause;
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
