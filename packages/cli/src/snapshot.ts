import { readFileSync, writeFileSync } from 'node:fs';
import {
  formatHex,
  formatSize,
  loadSnapshot,
  type Machine,
  resolve,
  saveSnapshot,
  snapshotInfo,
} from '@ddw/machine';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { mappedEntries } from './run.js';

/** The DMA windows of every PHB, one line each: what a snapshot carries and a load restores. */
export function describeWindows(machine: Machine): string[] {
  const lines: string[] = [];
  for (const phb of resolve(machine.container, SpaprPciTokens.Phbs).list) {
    for (const t of phb.windows) {
      if (!t.enabled) continue;
      const mapped = mappedEntries(t.storage);
      lines.push(
        `PHB ${phb.index} LIOBN ${formatHex(BigInt(t.liobn))}: bus ${formatHex(t.busOffset)}, 2^${t.pageShift} pages, ${t.nbTable} entries, ${mapped} in use`,
      );
    }
  }
  return lines;
}

/** `ddw snapshot save`: writes the snapshot of `machine` (the caller builds, runs and disposes it). */
export async function saveMachineSnapshot(
  file: string,
  machine: Machine,
): Promise<{ bytes: number; windows: string[] }> {
  const bytes = saveSnapshot(machine);
  writeFileSync(file, bytes);
  return { bytes: bytes.length, windows: describeWindows(machine) };
}

/** `ddw snapshot load`: a fresh machine from `build`, restored from the file. */
export async function loadMachineSnapshot(
  file: string,
  build: () => Promise<Machine>,
): Promise<{ windows: string[] }> {
  const bytes = readFileSync(file);
  const machine = await build();
  try {
    loadSnapshot(machine, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    return { windows: describeWindows(machine) };
  } finally {
    machine.dispose();
  }
}

/** `ddw snapshot info`: what the file holds, without building anything. */
export function describeSnapshot(file: string): string {
  const bytes = readFileSync(file);
  const info = snapshotInfo(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const rows = info.sections.map((s) => [
    s.name,
    `instance ${formatHex(BigInt(s.instanceId))}`,
    `version ${s.version}`,
    `${s.size} bytes`,
  ]);
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length), 0));
  const m = info.machine;
  return [
    `${file}: snapshot format ${info.formatVersion}, ${bytes.length} bytes`,
    `machine: ${m.type ?? 'untyped'}, ${formatSize(m.ram)} RAM${m.maxmem !== null && m.maxmem !== m.ram ? ` (up to ${formatSize(m.maxmem)})` : ''}`,
    ...rows.map(
      (r) =>
        `  ${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]!.padEnd(widths[2]!)}  ${r[3]}`,
    ),
  ].join('\n');
}
