import {
  formatHex,
  formatSize,
  loadSnapshot,
  type Machine,
  SnapshotError,
  snapshotInfo,
  writeSnapshot,
} from '@ddw/machine';
import * as z from 'zod';
import { type InputFile, openInputFile, writeFileAtomicStreamed } from './files.js';
import { describeWindows } from './windows.js';

export { describeWindows };

/** What a snapshot file is called in error messages. */
const SNAPSHOT_FILE = 'snapshot file';

/**
 * `ddw snapshot save`: writes the snapshot of `machine` (the caller builds, runs and disposes it)
 * atomically: `file` is the previous file or the complete snapshot, whatever interrupts the save.
 * The snapshot is streamed into a temporary file next to it as it is encoded (never whole in
 * memory), then synced and renamed over `file`. A path that cannot be written is a FileError, a
 * section that cannot be saved a SnapshotError; either way nothing is left behind.
 */
export async function saveMachineSnapshot(
  file: string,
  machine: Machine,
): Promise<{ bytes: number; windows: string[] }> {
  const { bytes } = await writeFileAtomicStreamed(file, (write) => writeSnapshot(machine, { write }), {
    what: SNAPSHOT_FILE,
  });
  return { bytes, windows: describeWindows(machine) };
}

/**
 * `ddw snapshot load`: a fresh machine from `build`, restored from the file. The file is verified
 * (checksums) before anything is built; it is read at positions, a section at a time, never whole.
 * An unreadable file is a FileError, a damaged or foreign one a SnapshotError whose message
 * starts with the file's path.
 */
export async function loadMachineSnapshot(
  file: string,
  build: () => Promise<Machine>,
): Promise<{ windows: string[] }> {
  const input = openSnapshotFile(file);
  try {
    inFile(file, () => snapshotInfo(input));
    const machine = await build();
    try {
      inFile(file, () => loadSnapshot(machine, input));
      return { windows: describeWindows(machine) };
    } finally {
      machine.dispose();
    }
  } finally {
    input.close();
  }
}

const hex64 = z
  .string()
  .regex(/^0x[0-9a-f]{1,16}$/)
  .describe('a 64-bit quantity as a 0x-prefixed lower-case hex string');
const count = z.number().int().nonnegative();

/** What `ddw snapshot info --json` prints: one object, every 64-bit quantity a hex string. */
export const snapshotInfoReportSchema = z
  .strictObject({
    schemaVersion: z.literal(1),
    kind: z.literal('snapshot-info'),
    file: z.string().describe('the path as given'),
    formatVersion: count.describe('the layout version of the file'),
    bytes: count.describe('the size of the file in bytes'),
    machine: z.strictObject({
      type: z.string().nullable().describe('the machine type it was saved from, null if untyped'),
      ram: hex64.describe('guest RAM in bytes'),
      maxmem: hex64.nullable().describe('the most RAM the machine can grow to, null if not set'),
    }),
    sections: z
      .array(
        z.strictObject({
          name: z.string(),
          instanceId: z
            .string()
            .regex(/^0x[0-9a-f]{1,8}$/)
            .describe('the 32-bit instance id, hex'),
          version: count,
          size: count.describe('bytes of the section in the file'),
        }),
      )
      .describe('every section of the file, in file order'),
  })
  .describe('a ddw snapshot file: its machine and sections, checksums verified');

export type SnapshotInfoReport = z.infer<typeof snapshotInfoReportSchema>;

/**
 * `ddw snapshot info`: what the file holds, without building anything. The file is verified as a
 * load verifies it before decoding (header and every section checksum): a damaged file is a
 * SnapshotError naming the file and the section, an unreadable one a FileError.
 */
export function describeSnapshot(file: string): SnapshotInfoReport {
  const input = openSnapshotFile(file);
  let info: ReturnType<typeof snapshotInfo>;
  try {
    info = inFile(file, () => snapshotInfo(input));
  } finally {
    input.close();
  }
  const m = info.machine;
  return {
    schemaVersion: 1,
    kind: 'snapshot-info',
    file,
    formatVersion: info.formatVersion,
    bytes: input.size,
    machine: { type: m.type, ram: formatHex(m.ram), maxmem: m.maxmem === null ? null : formatHex(m.maxmem) },
    sections: info.sections.map((s) => ({
      name: s.name,
      instanceId: formatHex(BigInt(s.instanceId)),
      version: s.version,
      size: s.size,
    })),
  };
}

/** The text `ddw snapshot info` prints (no final newline). */
export function formatSnapshotInfo(report: SnapshotInfoReport): string {
  const rows = report.sections.map((s) => [
    s.name,
    `instance ${s.instanceId}`,
    `version ${s.version}`,
    `${s.size} bytes`,
  ]);
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length), 0));
  const m = report.machine;
  const ram = BigInt(m.ram);
  const maxmem = m.maxmem === null ? null : BigInt(m.maxmem);
  return [
    `${report.file}: snapshot format ${report.formatVersion}, ${report.bytes} bytes`,
    `machine: ${m.type ?? 'untyped'}, ${formatSize(ram)} RAM${maxmem !== null && maxmem !== ram ? ` (up to ${formatSize(maxmem)})` : ''}`,
    ...rows.map(
      (r) =>
        `  ${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]!.padEnd(widths[2]!)}  ${r[3]}`,
    ),
  ].join('\n');
}

/** The snapshot file, to be read at positions (a SnapshotSource); the caller closes it. */
function openSnapshotFile(file: string): InputFile {
  return openInputFile(file, SNAPSHOT_FILE);
}

/** Runs `fn`; a SnapshotError it throws gets the file's path in front of its message. */
function inFile<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof SnapshotError) error.message = `${file}: ${error.message}`;
    throw error;
  }
}
