import { mkdirSync, mkdtempSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DdwError, loadSnapshot, type Machine, SnapshotError, snapshotInfo } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import { FileError } from '../packages/cli/src/files.js';
import { buildRunMachine } from '../packages/cli/src/run.js';
import {
  describeSnapshot,
  formatSnapshotInfo,
  loadMachineSnapshot,
  saveMachineSnapshot,
  snapshotInfoReportSchema,
} from '../packages/cli/src/snapshot.js';

const scratch = () => mkdtempSync(join(tmpdir(), 'ddw-snapshot-files-'));
const MACHINE = '-M pseries -m 4G -device e1000e';

/** A snapshot of a small machine whose guest model negotiated its windows, saved to dir/name. */
async function saved(dir: string, name = 'm.snap', qemuArgs = MACHINE): Promise<string> {
  const file = join(dir, name);
  const machine = await buildRunMachine({ qemuArgs });
  try {
    await saveMachineSnapshot(file, machine);
  } finally {
    machine.dispose();
  }
  return file;
}

/** Builds nothing: a load must refuse the file before it asks for a machine. */
const noBuild = (): Promise<Machine> => {
  throw new Error('the machine was built for a file that cannot be loaded');
};

async function refusal(fn: () => unknown): Promise<DdwError> {
  try {
    await fn();
  } catch (error) {
    expect(error).toBeInstanceOf(DdwError);
    expect((error as Error).message).not.toContain('\n');
    return error as DdwError;
  }
  throw new Error('expected a DdwError');
}

describe('snapshot info', () => {
  it('reports a file as an object the schema accepts, every 64-bit quantity a hex string', async () => {
    const file = await saved(scratch(), 'm.snap', '-M pseries -m 4G,maxmem=8G,slots=4 -device e1000e');
    const report = describeSnapshot(file);
    // What --json prints is what the schema describes.
    expect(snapshotInfoReportSchema.parse(JSON.parse(JSON.stringify(report)))).toEqual(report);
    expect(report).toMatchObject({
      schemaVersion: 1,
      kind: 'snapshot-info',
      file,
      formatVersion: 2,
      bytes: readFileSync(file).length,
      machine: { type: 'pseries-10.0', ram: '0x100000000', maxmem: '0x200000000' },
    });
    expect(report.sections.map((s) => [s.name, s.instanceId])).toEqual([
      ['ram', '0x0'],
      ['spapr_iommu', '0x80000000'],
      ['spapr_iommu', '0x80000001'],
      ['spapr_pci', '0x0'],
    ]);
    expect(report.sections.reduce((n, s) => n + s.size, 0)).toBeLessThan(report.bytes);
    // The schema is plain data, for z.toJSONSchema.
    expect(z.toJSONSchema(snapshotInfoReportSchema)).toMatchObject({
      type: 'object',
      properties: { machine: { properties: { ram: { type: 'string', pattern: '^0x[0-9a-f]{1,16}$' } } } },
    });
    expect(() => snapshotInfoReportSchema.parse({ ...report, bytes: '0x10' })).toThrow();
    expect(() =>
      snapshotInfoReportSchema.parse({ ...report, machine: { ...report.machine, ram: 4294967296 } }),
    ).toThrow();
  });

  it('formats the report as the text `ddw snapshot info` prints', async () => {
    const file = await saved(scratch());
    const report = describeSnapshot(file);
    const [v, size] = [(i: number) => report.sections[i]!.version, (i: number) => report.sections[i]!.size];
    expect(formatSnapshotInfo(report)).toBe(
      [
        `${file}: snapshot format 2, ${readFileSync(file).length} bytes`,
        'machine: pseries-10.0, 4 GiB RAM',
        `  ram          instance 0x0         version ${v(0)}  ${size(0)} bytes`,
        `  spapr_iommu  instance 0x80000000  version ${v(1)}  ${size(1)} bytes`,
        `  spapr_iommu  instance 0x80000001  version ${v(2)}  ${size(2)} bytes`,
        `  spapr_pci    instance 0x0         version ${v(3)}  ${size(3)} bytes`,
      ].join('\n'),
    );
    const grown = formatSnapshotInfo({
      ...describeSnapshot(file),
      machine: { type: null, ram: '0x40000000', maxmem: '0x100000000' },
    });
    expect(grown.split('\n')[1]).toBe('machine: untyped, 1 GiB RAM (up to 4 GiB)');
  });

  it('verifies every checksum: a damaged file is refused, naming the file and the section', async () => {
    const dir = scratch();
    const bytes = readFileSync(await saved(dir));
    const damaged = join(dir, 'damaged.snap');
    const last = snapshotInfo(bytes).sections.at(-1)!;
    bytes[last.offset + last.size - 10] ^= 0xff;
    writeFileSync(damaged, bytes);
    const e = await refusal(() => describeSnapshot(damaged));
    expect(e).toBeInstanceOf(SnapshotError);
    expect(e.message).toBe(
      `${damaged}: snapshot section "spapr_pci" (instance 0x0): checksum mismatch: the section is corrupted`,
    );
    // A load says the same, before it builds a machine.
    expect((await refusal(() => loadMachineSnapshot(damaged, noBuild))).message).toBe(e.message);
  });

  it('refuses what is not a readable snapshot, in one line, for info and for load', async () => {
    const dir = scratch();
    const good = readFileSync(await saved(dir));
    const write = (name: string, data: Uint8Array) => {
      writeFileSync(join(dir, name), data);
      return join(dir, name);
    };
    mkdirSync(join(dir, 'adir'));
    const cases: [string, RegExp][] = [
      [
        join(dir, 'missing.snap'),
        /^snapshot file .*missing\.snap: cannot read: no such file; check the path$/,
      ],
      [join(dir, 'adir'), /^snapshot file .*adir: cannot read: it is a directory; give the path of a file$/],
      [write('empty.snap', new Uint8Array()), /empty\.snap: snapshot header: truncated: 0 bytes/],
      [
        write('cut.snap', good.subarray(0, good.length - 100)),
        /cut\.snap: snapshot header: truncated: the file does not end with the snapshot trailer/,
      ],
      [
        write('appended.snap', Buffer.concat([good, Buffer.from('\n')])),
        /appended\.snap: snapshot header: 1 unexpected bytes after the end of the snapshot$/,
      ],
      [
        write(
          'random.snap',
          Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24),
        ),
        /random\.snap: snapshot header: not a ddw snapshot \(bad magic\)$/,
      ],
      [write('text.snap', new TextEncoder().encode('{"machine":{}}\n')), /text\.snap: snapshot header: /],
    ];
    for (const [file, message] of cases) {
      const info = await refusal(() => describeSnapshot(file));
      expect(info.message, file).toMatch(message);
      expect(info instanceof FileError || info instanceof SnapshotError).toBe(true);
      const load = await refusal(() => loadMachineSnapshot(file, noBuild));
      expect(load.message).toBe(info.message);
    }
  });
});

describe('snapshot save', () => {
  it('into a missing directory: one line naming the path, nothing written anywhere', async () => {
    const dir = scratch();
    const file = join(dir, 'NO/SUCH/DIR/x.snap');
    const machine = await buildRunMachine({ qemuArgs: MACHINE });
    try {
      const e = await refusal(() => saveMachineSnapshot(file, machine));
      expect(e).toBeInstanceOf(FileError);
      expect(e.message).toBe(
        `snapshot file ${file}: cannot write: no such directory; create the directory first, or write the file somewhere else`,
      );
    } finally {
      machine.dispose();
    }
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a save that fails leaves the previous snapshot and no temporary file', async () => {
    const dir = scratch();
    const file = await saved(dir);
    const before = readFileSync(file);
    const machine = await buildRunMachine({ qemuArgs: '-M pseries -m 8G -device e1000e' });
    // The temporary file exists once the call returns; taking it away makes the final rename fail.
    const saving = saveMachineSnapshot(file, machine);
    const temps = readdirSync(dir).filter((n) => /^\.m\.snap\.ddw-\d+-[0-9a-f]{8}\.tmp$/.test(n));
    expect(temps).toHaveLength(1);
    for (const t of temps) unlinkSync(join(dir, t));
    const e = await refusal(() => saving);
    machine.dispose();
    expect(e.message).toMatch(/^snapshot file .*m\.snap: cannot write: its temporary file .* was removed/);
    expect(readdirSync(dir)).toEqual(['m.snap']);
    expect(Buffer.compare(readFileSync(file), before)).toBe(0);
  });
});

describe('a snapshot file of the previous format (version 1)', () => {
  /** `ddw snapshot save m.snap -M pseries -m 4G -device e1000e`, by ddw before format version 2. */
  const v1 = () =>
    gunzipSync(
      readFileSync(new URL('../packages/machine/test/fixtures/pseries-4g-v1.snap.gz', import.meta.url)),
    );

  it('is described and loads', async () => {
    const dir = scratch();
    const file = join(dir, 'old.snap');
    writeFileSync(file, v1());
    const report = describeSnapshot(file);
    expect(report).toMatchObject({
      formatVersion: 1,
      bytes: 66151,
      machine: { type: 'pseries-10.0', ram: '0x100000000' },
    });
    expect(report.sections.map((s) => [s.name, s.instanceId, s.version, s.size])).toEqual([
      ['ram', '0x0', 1, 65582],
      ['spapr_iommu', '0x80000000', 3, 45],
      ['spapr_iommu', '0x80000001', 3, 72],
      ['spapr_pci', '0x0', 2, 36],
    ]);
    expect(formatSnapshotInfo(report).split('\n')[0]).toBe(`${file}: snapshot format 1, 66151 bytes`);
    const loaded = await loadMachineSnapshot(file, () => buildRunMachine({ qemuArgs: MACHINE }));
    expect(loaded.windows).toEqual(['PHB 0 LIOBN 0x80000000: bus 0x0, 4K pages, 262144 entries, 0 in use']);
    // Loaded and saved again, it is a version 2 file of the same sections, which loads the same.
    const machine = await buildRunMachine({ qemuArgs: MACHINE });
    const again = join(dir, 'again.snap');
    try {
      loadSnapshot(machine, readFileSync(file));
      await saveMachineSnapshot(again, machine);
    } finally {
      machine.dispose();
    }
    const newer = describeSnapshot(again);
    expect(newer.formatVersion).toBe(2);
    expect(newer.sections.map((s) => [s.name, s.instanceId])).toEqual(
      report.sections.map((s) => [s.name, s.instanceId]),
    );
    expect((await loadMachineSnapshot(again, () => buildRunMachine({ qemuArgs: MACHINE }))).windows).toEqual(
      loaded.windows,
    );
  });

  it('a damaged one is refused naming the section, as before', async () => {
    const dir = scratch();
    const bytes = v1();
    const cut = join(dir, 'cut.snap');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    expect((await refusal(() => loadMachineSnapshot(cut, noBuild))).message).toBe(
      `${cut}: snapshot section "spapr_iommu" (instance 0x80000001): truncated: the file ends 9 bytes into this section of 72`,
    );
  });
});
