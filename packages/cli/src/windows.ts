import { formatHex, type Machine } from '@ddw/machine';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { pageName } from './report.js';
import { mappedEntries } from './run.js';

/** The DMA windows of every PHB, one line each: what a snapshot carries and a load restores. */
export function describeWindows(machine: Machine): string[] {
  const lines: string[] = [];
  for (const phb of machine.get(SpaprPciTokens.Phbs).list) {
    for (const t of phb.windows) {
      if (!t.enabled) continue;
      const mapped = mappedEntries(t.storage);
      lines.push(
        `PHB ${phb.index} LIOBN ${formatHex(BigInt(t.liobn))}: bus ${formatHex(t.busOffset)}, ${pageName(t.pageShift)} pages, ${t.nbTable} entries, ${mapped} in use`,
      );
    }
  }
  return lines;
}
