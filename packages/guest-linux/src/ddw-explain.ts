/**
 * The one-line summary of a PE's DDW decision (PeDecision.summary): what the guest got and, when
 * it got no DDW or a dynamic one, why and what to change.
 */
import {
  formatHex,
  formatPageShift,
  formatSize,
  H_HARDWARE,
  H_NOT_ENOUGH_RESOURCES,
  H_PARAMETER,
  RTAS_OUT_HW_ERROR,
  RTAS_OUT_PARAM_ERROR,
} from '@ddw/machine';
import type { LinuxGeneration } from './api.js';
import { EOVERFLOW, EPROTO, isRtasBusy } from './ddw-failure.js';
import { cellHex } from './device-tree.js';
import type { NegotiationRecord } from './negotiation-record.js';
import type { PeState } from './pe.js';
import type { RamLayout } from './ram.js';
import { pageShiftsIn } from './window-sizing.js';

/** What a decision's summary needs besides the PE's own record. */
export interface ExplainContext {
  generation: LinuxGeneration;
  ram: RamLayout;
  /** The kernel's disable_ddw. */
  disableDdw: boolean;
  /** The PE's functions, as dmesg names them, with the driver bound (if any). */
  functions: readonly { node: string; name: string; driver: string | undefined }[];
}

const GENERATION_NAMES: Record<LinuxGeneration, string> = {
  'linux-6.12': 'Linux 6.12',
  'linux-6.1': 'Linux 6.1',
  'linux-4.x': 'Linux 4.x',
};

/** The page sizes a generation picks from, largest first (4.x: the first of 16M, 64K, 4K). */
const KNOWN_PAGES: Record<LinuxGeneration, string> = {
  'linux-6.12': '16G, 256M, 128M, 64M, 32M, 16M, 2M, 64K or 4K',
  'linux-6.1': '16G, 256M, 128M, 64M, 32M, 16M, 2M, 64K or 4K',
  'linux-4.x': '16M, 64K or 4K',
};

/** A PHB pgsz every generation and QEMU version can use: 4K, 64K and 16M. */
const PORTABLE_PGSZ = '-global spapr-pci-host-bridge.pgsz=0x1011000';

/**
 * The one-line summary of a PE's decision: what the guest got and, for no DDW or a dynamic
 * window, why and what to change. Written from the negotiation record (what was queried,
 * returned, removed), the masks the drivers set and the guest's memory layout.
 */
export function explainDecision(pe: PeState, ctx: ExplainContext): string {
  const g = GENERATION_NAMES[ctx.generation];
  const rec = pe.negotiation;
  const fallback = pe.defaultWindow
    ? `the devices use the ${formatSize(pe.defaultWindow.size)} default window`
    : 'the devices have no DMA window';
  if (pe.decision.outcome === 'not-attempted' || !rec) return notAttempted(pe, ctx, fallback);
  const query = rec.queries.at(-1);
  const offered = query ? pageList(query.pageMask) : '';
  const fiveOutputs =
    ctx.generation !== 'linux-4.x' && query?.nret === 5
      ? ' (a 5-output query: no 64-bit largest-block extension, as QEMU 2.7 answers)'
      : '';
  const win = pe.decision.window;
  if (pe.decision.outcome === 'direct' && win) {
    const sizing = rec.sizing;
    const upTo = sizing
      ? `RAM up to ${formatSize(sizing.maxAddress)}${sizing.basis === 'lrdr-capacity' ? ' (ibm,lrdr-capacity: maxmem)' : ''}`
      : 'RAM';
    const window =
      `LIOBN 0x${cellHex(win.liobn)} at ${formatHex(win.busOffset)}: ${windowSize(win.windowShift)} in ` +
      `${pageName(win.pageShift)} pages, the largest of ${offered} the query offers${fiveOutputs}`;
    const direct = `device address = guest address + ${formatHex(win.busOffset)}`;
    if (rec.removal) {
      const stranded = smallMasks(pe, ctx);
      return (
        `direct window, default window removed: the query said 0 windows available (the PHB has ` +
        `one DMA window, as with x-ddw-windows=1), so ${g} removed the ${defaultSize(pe)} default ` +
        `window (remove returned ${rec.removal.status}) and mapped ${upTo} into ${window}; ${direct}` +
        (stranded.length > 0
          ? `; ${stranded.join(', ')} ${stranded.length === 1 ? 'has' : 'have'} no DMA window left (mask under 64 bits)`
          : '')
      );
    }
    return `direct window: ${g} mapped ${upTo} 1:1 into ${window}; ${direct}`;
  }
  if (pe.decision.outcome === 'dynamic' && win && rec.sizing && query) {
    const sz = rec.sizing;
    const capped =
      rec.maskBits < sz.blockShift ? `, capped to the ${rec.maskBits}-bit mask: 2^${sz.windowShift}` : '';
    const others = ctx.functions.filter((f) => f.name !== rec.fn && pe.masks.has(f.node)).length;
    return (
      `dynamic window: the query's largest block (${formatHex(query.largestBlock)} x ${pageName(win.pageShift)} ` +
      `pages = 2^${sz.blockShift} bytes${capped}) is smaller than RAM (up to ${formatSize(sz.maxAddress)}, ` +
      `2^${sz.ramShift}${query.nret === 5 ? '; a 5-output query gives the block as a 32-bit count' : ''}), ` +
      `so ${g} uses LIOBN 0x${cellHex(win.liobn)} at ${formatHex(win.busOffset)}, ${windowSize(win.windowShift)}, ` +
      `as an IOMMU table mapped per DMA request, for ${rec.fn}${others > 0 ? ' only (the other functions stay on the default window)' : ''}. ` +
      `For a direct window offer larger pages (${PORTABLE_PGSZ}) or give less ${sz.basis === 'lrdr-capacity' ? 'maxmem' : 'RAM/maxmem'}`
    );
  }
  return `no DDW: ${failed(pe, ctx, rec, fallback)}`;
}

/** Why a PE that went through enable_ddw has no DDW, and the fix. */
function failed(pe: PeState, ctx: ExplainContext, rec: NegotiationRecord, fallback: string): string {
  const g = GENERATION_NAMES[ctx.generation];
  const why = rec.failure;
  const query = rec.queries.at(-1);
  const reset =
    rec.resetStatus !== undefined
      ? `; ${g} reset the PE's windows (reset returned ${rec.resetStatus}), restoring the default window`
      : '';
  const secondWindow = 'Give the PHB a second DMA window (drop x-ddw-windows=1: QEMU PHBs have 2)';
  switch (why?.kind) {
    case 'no-ddw':
      return (
        `the PHB offers none (no ibm,ddw-applicable on ${pe.node}: spapr-pci-host-bridge ddw=off, or a ` +
        `machine type older than pseries-2.7); ${fallback}. Turn DDW on (-global spapr-pci-host-bridge.ddw=on, ` +
        `pseries-2.7 or newer) for a 64-bit window`
      );
    case 'query':
      return (
        `ibm,query-pe-dma-windows (${why.nret} outputs) returned ${why.status}${rtasMeaning(why.status)}; ` +
        `${fallback}. The hypervisor refused to describe the PE's windows: check its DDW support for this PE`
      );
    case 'page-size': {
      const offered =
        why.mask === 0
          ? `no page size (mask 0x0: RTAS can name none of the PHB's pgsz sizes` +
            `${query?.nret === 5 ? '; a 5-output query, as QEMU 2.7 answers, cannot name 2M' : ''})`
          : `only ${pageList(why.mask)} pages (mask 0x${cellHex(why.mask)}), none of which ${g} uses ` +
            `(it picks from ${KNOWN_PAGES[ctx.generation]})`;
      return `the query offers ${offered}; ${fallback}. Offer 4K, 64K or 16M pages (${PORTABLE_PGSZ}) for a DDW`;
    }
    case 'no-window':
      switch (why.why) {
        case 'no-removal':
          return (
            `the query says 0 windows available and ${g} never removes the default window to make ` +
            `room; ${fallback}. ${secondWindow}, or use Linux 6.1 or newer, which removes the default window`
          );
        case 'still-none':
          return (
            `the query said 0 windows available; ${g} removed the ${defaultSize(pe)} default window ` +
            `(remove returned ${rec.removal?.status ?? '?'}) but the query still says 0${reset}, and ${fallback}. ${secondWindow}`
          );
        default: {
          const because =
            why.why === 'live-mappings'
              ? 'it has live DMA mappings'
              : why.why === 'no-default-window'
                ? 'the PE has no ibm,dma-window'
                : 'ibm,ddw-extensions has no reset-pe-dma-windows to restore it on failure';
          return (
            `the query says 0 windows available and ${g} cannot remove the default window: ${because}; ` +
            `${fallback}. ${secondWindow}${why.why === 'live-mappings' ? ', or set the 64-bit mask before any DMA' : ''}`
          );
        }
      }
    case 'block-too-small':
      return (
        `Linux 4.x maps all RAM (up to ${formatSize(why.maxAddress)}) directly and needs ${formatHex(why.needed)} ` +
        `TCEs of ${pageName(why.pageShift)}, but the query's largest block is ${formatHex(why.block)}` +
        `${query?.nret === 5 ? ' (a 5-output query gives it as a 32-bit count)' : ''}; 4.x has no dynamic windows, ` +
        `so ${fallback}. Offer larger pages (${PORTABLE_PGSZ}), give less maxmem, or use Linux 6.1 or newer (a dynamic window)`
      );
    case 'create': {
      const c = rec.create!;
      const sz = rec.sizing;
      const asked = `a window of ${windowSize(c.windowShift)} in ${pageName(c.pageShift)} pages`;
      const returned = `create returned ${why.status}${rtasMeaning(why.status)}`;
      if (c.windowShift < c.pageShift && sz) {
        if (sz.basis === 'lrdr-capacity' && sz.maxAddress === 0n) {
          const lrdr = ctx.ram.lrdrPresent ? 'which is 0 without maxmem' : 'which /rtas does not have';
          return (
            `${g} sizes the window from ibm,lrdr-capacity, ${lrdr}; ${returned}${reset}; ${fallback}. ` +
            `Give maxmem (${maxmemExample(ctx.ram)}) for a direct window`
          );
        }
        if (query && query.largestBlock << BigInt(c.pageShift) >= 1n << 64n) {
          return (
            `the query's largest block ${formatHex(query.largestBlock)} of ${pageName(c.pageShift)} pages ` +
            `overflows ${g}'s 64-bit window size, so it asked for ${asked}; ${returned}${reset}; ${fallback}. ` +
            `Offer pages of 16M or smaller (${PORTABLE_PGSZ})`
          );
        }
      }
      const tces = c.windowShift - c.pageShift;
      const fix =
        tces >= 32
          ? `The window needs 2^${tces} TCEs, more than QEMU's 32-bit table size: offer larger pages (${PORTABLE_PGSZ}) or give less maxmem`
          : c.windowShift < c.pageShift
            ? 'The window is smaller than one of its pages'
            : 'The PHB refused the window';
      return `${g} asked for ${asked}; ${returned}${reset}; ${fallback}. ${fix}`;
    }
    case 'populate': {
      const c = rec.create;
      const window =
        c?.liobn !== undefined ? `LIOBN 0x${cellHex(c.liobn)}, ${pageName(c.pageShift)} pages` : 'the window';
      const undo =
        ctx.generation === 'linux-4.x'
          ? 'Linux 4.x leaves that window created and unused'
          : `${g} cleared and removed the window${reset}`;
      return (
        `${g} created a direct window (${window}) but mapping RAM into it failed with ${why.rc}` +
        `${hcallMeaning(why.rc)}; ${undo}, and ${fallback}. The hypervisor refused the TCEs: check its ` +
        `limits (host IOMMU, locked memory)`
      );
    }
    case 'limited-address': {
      const lacks =
        why.status !== undefined
          ? `its limited-address reset returned ${why.status}`
          : why.errno === EOVERFLOW
            ? `ibm,ddw-extensions has no limited-address entry (${why.errno})`
            : why.errno === EPROTO
              ? `its limited-address entry is 0 (${why.errno})`
              : `ibm,ddw-extensions has no reset extension (${why.errno})`;
      return (
        `${rec.fn} set a ${rec.maskBits}-bit DMA mask, and ${g} then needs the PHB's limited-address mode: ` +
        `${lacks}; ${fallback}. Only a 64-bit mask gets a DDW from this PHB`
      );
    }
    default:
      return fallback;
  }
}

/** A PE whose functions never asked for a DDW: no device, no driver, small masks, disable_ddw. */
function notAttempted(pe: PeState, ctx: ExplainContext, fallback: string): string {
  if (ctx.functions.length === 0) return 'no DDW tried: no PCI device on this PHB';
  const masks = [...pe.masks.values()];
  const threshold = ctx.generation === 'linux-6.12' ? 'a mask over 32 bits' : 'a 64-bit mask';
  const g = GENERATION_NAMES[ctx.generation];
  if (ctx.disableDdw && masks.some((m) => wantsDdw(ctx.generation, m.bits))) {
    return `no DDW tried: the kernel's disable_ddw is set; ${fallback}. Boot without disable_ddw for a DDW`;
  }
  if (masks.length === 0) {
    const unbound = ctx.functions.filter((f) => f.driver === undefined).map((f) => f.name);
    return (
      `no DDW tried: no driver set a DMA mask` +
      (unbound.length > 0 ? ` (no driver the model knows for ${unbound.join(', ')})` : '') +
      `; a device needs a driver with ${threshold} for a DDW`
    );
  }
  const all32 = masks.every((m) => m.bits <= 32);
  return (
    `no DDW tried: ${masks.map((m) => `${m.name} set a ${m.bits}-bit DMA mask`).join(', ')}, and ${g} asks ` +
    `for a DDW only with ${threshold}; ${fallback}` +
    (all32
      ? ', which is all a 32-bit device can address (nothing to change)'
      : `. A driver that sets ${threshold} gets a DDW`)
  );
}

function wantsDdw(generation: LinuxGeneration, bits: number): boolean {
  return generation === 'linux-6.12' ? bits > 32 : bits >= 64;
}

/** Functions left with a mask too small for the DDW after the default window went away. */
function smallMasks(pe: PeState, ctx: ExplainContext): string[] {
  return [...pe.masks.values()].filter((m) => !wantsDdw(ctx.generation, m.bits)).map((m) => m.name);
}

function defaultSize(pe: PeState): string {
  return pe.defaultWindow ? formatSize(pe.defaultWindow.size) : '';
}

/** "2^31 bytes (2 GiB)". */
function windowSize(shift: number): string {
  return shift < 64 ? `2^${shift} bytes (${formatSize(1n << BigInt(shift))})` : `2^${shift} bytes`;
}

const pageName = formatPageShift;

/** The page sizes a query mask names, smallest first: "4K, 64K, 2M, 16M". */
function pageList(mask: number): string {
  const shifts = pageShiftsIn(mask);
  return shifts.length > 0 ? shifts.map(pageName).join(', ') : 'no';
}

function rtasMeaning(status: number): string {
  if (status === RTAS_OUT_HW_ERROR) return ' (hardware error)';
  if (status === RTAS_OUT_PARAM_ERROR) return ' (parameter error)';
  if (isRtasBusy(status)) return ' (still busy after retries)';
  return '';
}

function hcallMeaning(rc: bigint): string {
  if (rc === H_PARAMETER) return ' (H_PARAMETER)';
  if (rc === H_NOT_ENOUGH_RESOURCES) return ' (H_NOT_ENOUGH_RESOURCES)';
  if (rc === H_HARDWARE) return ' (H_HARDWARE)';
  return '';
}

/** "-m 2G,maxmem=4G,slots=2": the guest's RAM, and twice as much for maxmem. */
function maxmemExample(ram: RamLayout): string {
  const size = ram.ranges.reduce((n, r) => n + (r.end - r.start), 0n);
  const qemu = (bytes: bigint) =>
    bytes > 0n && bytes % (1n << 30n) === 0n ? `${bytes >> 30n}G` : `${bytes >> 20n}M`;
  return size > 0n ? `-m ${qemu(size)},maxmem=${qemu(2n * size)},slots=2` : '-m 4G,maxmem=8G,slots=2';
}
