import { formatHex, formatPageShift, formatSize } from '@ddw/machine';
import type { RunReport } from './run.js';

/** A page size for people ("16M"), or "-" where there is none. */
export function pageName(shift: number | null): string {
  return shift === null ? '-' : formatPageShift(shift);
}

function table(rows: string[][], indent = '  '): string[] {
  if (rows.length === 0) return [];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map(
    (r) =>
      indent +
      r
        .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!)))
        .join('  ')
        .trimEnd(),
  );
}

/** The report as a person reads it. */
export function formatReport(r: RunReport): string {
  const out: string[] = [];
  const m = r.machine;
  out.push(
    `Machine: ${m.type}, ${formatSize(BigInt(m.ram))} RAM${m.maxmem ? ` (up to ${formatSize(BigInt(m.maxmem))})` : ''}, accel ${m.accel}, guest ${r.guest?.generation ?? 'none'}`,
  );
  if (m.devices.length > 0) {
    out.push(...table(m.devices.map((d) => [d.id, d.driver, d.bus, `config address ${d.cfgAddr}`])));
  } else {
    out.push('  no PCI devices');
  }

  for (const phb of r.phbs) {
    out.push('', `PHB ${phb.index} "${phb.id}" (BUID ${phb.buid}): DMA windows`);
    const rows = [['LIOBN', 'bus range', 'page', 'entries', 'mapped']];
    for (const w of phb.windows) {
      const start = BigInt(w.busOffset);
      const end = start + (BigInt(w.entries) << BigInt(w.pageShift)) - 1n;
      rows.push([
        w.liobn,
        `${w.busOffset} - ${formatHex(end)}`,
        pageName(w.pageShift),
        String(w.entries),
        String(w.mapped),
      ]);
    }
    out.push(...(rows.length > 1 ? table(rows) : ['  none enabled']));
  }

  if (r.host) {
    out.push('', `Host IOMMU (${r.host.config})`);
    for (const w of r.host.windows) {
      out.push(
        `  window at ${w.startAddr}: ${formatSize(BigInt(w.size))} in ${pageName(w.pageShift)} pages, ${w.levels} level${w.levels === 1 ? '' : 's'}`,
      );
    }
    for (const p of r.host.prereg) out.push(`  pre-registered: ${formatSize(BigInt(p.size))} at ${p.vaddr}`);
    out.push(`  mapped: ${r.host.mappings} host IOMMU pages`);
    for (const e of r.host.errors) out.push(`  error: ${e}`);
  }

  if (r.guest) {
    out.push('', `Guest (${r.guest.generation}): what it decided and why`);
    for (const d of r.guest.decisions) {
      out.push(
        `  PE ${d.pe} (BUID ${d.buid}): ${d.outcome}${d.defaultWindowRemoved ? ', default window removed' : ''}`,
      );
      out.push(`    ${d.summary}`);
      for (const why of d.reasons) out.push(`    - ${why}`);
    }
    out.push(
      ...table(
        r.guest.devices.map((d) => [
          d.id,
          d.mode,
          d.liobn === null ? '-' : `LIOBN ${d.liobn}`,
          `${pageName(d.pageShift)} pages`,
          d.mode === 'direct'
            ? `device address = guest address + ${d.dmaOffset}`
            : d.mode === 'none'
              ? 'no driver sets a DMA mask'
              : 'addresses from the IOMMU table',
        ]),
      ),
    );
  }

  out.push('', 'DMA');
  if (r.dma.transfers.length === 0) out.push('  nothing moved (no guest, or no device with a driver)');
  out.push(
    ...table(
      r.dma.transfers.map((t) => [
        t.device,
        t.direction,
        t.busAddress === null ? 'not mapped' : `bus ${t.busAddress}`,
        `${t.bytes} bytes`,
        t.ok ? 'verified' : 'FAILED',
      ]),
    ),
  );
  out.push(`  ${r.dma.verifiedBytes} bytes verified, ${r.dma.failedBytes} failed`);
  out.push('', `${r.ok ? 'OK' : 'FAILED'} in ${r.timeMs} ms`);
  return `${out.join('\n')}\n`;
}
