/**
 * What one enable_ddw run learnt and did, kept per PE: the data a decision's summary is written
 * from (see ddw-explain.ts).
 */

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

/**
 * How the window was sized: the address RAM must be covered to (ibm,lrdr-capacity for 6.12,
 * the end of RAM otherwise), the block's size, the window's, and whether it is dynamic.
 */
export interface WindowSizing {
  basis: 'lrdr-capacity' | 'ram';
  maxAddress: bigint;
  ramShift: number;
  blockShift: number;
  windowShift: number;
  dynamic: boolean;
}

/** What one enable_ddw run learnt and did: the data a decision's summary is written from. */
export interface NegotiationRecord {
  /** The function whose driver's mask started it ("e1000e 0000:00:00.0"), and the mask. */
  fn: string;
  maskBits: number;
  queries: QueryRecord[];
  /** The IOMMU page shift chosen from the query's mask. */
  pageShift?: number;
  sizing?: WindowSizing;
  /** The default window's removal (0 windows available): its status. */
  removal?: { status: number };
  create?: { pageShift: number; windowShift: number; status: number; liobn?: number; busOffset?: bigint };
  /** reset-pe-dma-windows after a failure (the default window restored). */
  resetStatus?: number;
  failure?: DdwFailureCause;
}
