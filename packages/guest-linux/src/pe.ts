import type { DmaWindowInfo, PeDecision } from './api.js';
import { cellsToBigint, type GuestTreeView } from './device-tree.js';
import type { IommuTable } from './iommu-table.js';
import type { NegotiationRecord } from './negotiation-record.js';

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

/**
 * A PE as boot finds it: a node holding ibm,dma-window, its BUID from reg and its default window
 * from ibm,dma-window (with the node's DMA cell counts); no DDW asked for yet.
 */
export function readPeState(tree: GuestTreeView, node: string): PeState {
  const reg = tree.getCells(node, 'reg') ?? [];
  const buid = cellsToBigint(reg, 0, 2);
  const cells = tree.getCells(node, 'ibm,dma-window') ?? [];
  const addrCells =
    tree.getCells(node, 'ibm,#dma-address-cells')?.[0] ?? tree.getCells(node, '#address-cells')?.[0] ?? 2;
  const sizeCells =
    tree.getCells(node, 'ibm,#dma-size-cells')?.[0] ?? tree.getCells(node, '#size-cells')?.[0] ?? 2;
  const defaultWindow =
    cells.length >= 1 + addrCells + sizeCells
      ? {
          liobn: cells[0]!,
          busOffset: cellsToBigint(cells, 1, addrCells),
          size: cellsToBigint(cells, 1 + addrCells, sizeCells),
        }
      : undefined;
  return {
    node,
    buid,
    domain: 0,
    defaultWindow,
    defaultTable: undefined,
    window: undefined,
    negotiated: false,
    failed: false,
    maxDynamicWindows: 0,
    windowSeq: 0,
    masks: new Map(),
    negotiation: undefined,
    decision: {
      peNode: node,
      buid,
      outcome: 'not-attempted',
      reasons: [],
      rtas: [],
      defaultWindowRemoved: false,
    },
  };
}
