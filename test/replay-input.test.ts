import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileError } from '@ddw/cli';
import { ConfigError, type TraceBus } from '@ddw/machine';
import { buildPseries, parseQemuArgs, type QemuVersion } from '@ddw/pseries';
import { describe, expect, it } from 'vitest';
import { replayCommand } from '../packages/cli/src/replay.js';
import { replayReportSchema } from '../packages/cli/src/replay-report.js';
import { Replayer } from '../packages/cli/src/replayer.js';
import { normalizeText, TraceComparer } from '../packages/cli/src/trace-diff.js';

// Every public QEMU sample, with the options its README gives. n2 was recorded on -M pseries-3.1,
// whose only DDW difference is the default page-size mask 4K|64K: the model has no pseries-3.1
// machine type yet, so it replays with that mask set on -M pseries.
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
/** Each public sample with the QEMU options (and version) its README gives. */
const SAMPLES: { name: string; file: string; args: string; qemu?: QemuVersion }[] = [
  {
    name: 'qemu-7.2 v1-basic',
    file: 'qemu-7.2/v1-basic.trace',
    args: '-M pseries -cpu power9 -m 2G -device e1000e -netdev user,id=n0 -device e1000e,netdev=n0',
  },
  {
    name: 'qemu-7.2 v2-64k',
    file: 'qemu-7.2/v2-64k.trace',
    args: '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e',
  },
  {
    name: 'qemu-7.2 n2-compat-pseries-3.1',
    file: 'qemu-7.2/n2-compat-pseries-3.1.trace',
    args: '-M pseries-3.1 -cpu power9 -m 2G -device e1000e -device e1000e',
    qemu: '7.2',
  },
  {
    name: 'qemu-10.0 v1-basic',
    file: 'qemu-10.0/v1-basic.trace',
    args: '-M pseries -cpu power9 -m 2G -device e1000e -device e1000e',
    qemu: '10.0',
  },
  {
    name: 'qemu-10.0 n5-2phb-hp',
    file: 'qemu-10.0/n5-2phb-hp.trace',
    args: '-M pseries -cpu power9 -m 2G,maxmem=6G,slots=2 -device spapr-pci-host-bridge,index=1,id=phb1 -device e1000e,bus=pci.0 -device e1000e,bus=phb1.0',
    qemu: '10.0',
  },
];

interface Run {
  code: number;
  out: string;
  err: string;
  /** Every line the model traced on its bus, whatever was selected (host pointers blanked). */
  model: string[];
}

async function replay(
  file: string,
  args: string,
  options: { patterns?: string[]; check?: boolean; json?: boolean; host?: string; qemu?: QemuVersion } = {},
): Promise<Run> {
  let out = '';
  let err = '';
  const model: string[] = [];
  const build = (trace: TraceBus) => {
    trace.addSink({ write: (line) => void model.push(normalizeText(line)) });
    return buildPseries(parseQemuArgs(args, options.qemu ? { version: options.qemu } : {}), {
      trace,
      ...(options.host !== undefined ? { host: options.host } : {}),
      ...(options.qemu !== undefined ? { qemu: options.qemu } : {}),
    });
  };
  const code = await replayCommand(
    {
      file,
      patterns: options.patterns ?? [],
      check: options.check ?? false,
      json: options.json ?? false,
      build,
    },
    {
      out: (t) => {
        out += t;
      },
      err: (t) => {
        err += t;
      },
    },
  );
  return { code, out, err, model };
}

function tempFile(content: string | Buffer): string {
  const file = join(mkdtempSync(join(tmpdir(), 'ddw-replay-input-')), 'input.trace');
  writeFileSync(file, content);
  return file;
}

const tempTrace = (lines: readonly string[]) => tempFile(`${lines.join('\n')}\n`);

const modelledLines = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => /^(\d+@\d+\.\d{6}:)?spapr_iommu_/.test(l));

describe('the public samples', () => {
  for (const sample of SAMPLES) {
    const file = join(fixtures, sample.file);

    it(`${sample.name}: --check agrees line for line`, async () => {
      const r = await replay(file, sample.args, {
        check: true,
        ...(sample.qemu ? { qemu: sample.qemu } : {}),
      });
      expect(r.out).toBe(`${modelledLines(file).length} compared, 0 differ\n`);
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
    });

    it(`${sample.name}: the model does the same whatever --trace selects`, async () => {
      const version = sample.qemu ? { qemu: sample.qemu } : {};
      const all = await replay(file, sample.args, version);
      for (const patterns of [
        ['vfio_*'],
        ['spapr_iommu_put'],
        ['spapr_iommu_ddw_*', '-spapr_iommu_ddw_query'],
        ['spapr_iommu_pci_indirect'],
      ]) {
        const some = await replay(file, sample.args, { patterns, ...version });
        expect(some.model).toEqual(all.model);
      }
    });
  }
});

const BUID = 'buid=0x800000020000000 addr=0x0';
const NEW_TABLE = (liobn: string, ptr: string) => `spapr_iommu_new_table liobn=${liobn} table=${ptr} fd=-1`;

describe('--trace changes what is printed, never what the model does', () => {
  // QEMU 7.2 with a vfio-pci device on a v2 host (as in replay.test.ts).
  const trace = [
    'vfio_prereg_register va=0x7fffa0000000 size=0x80000000 ret=0',
    'vfio_spapr_remove_window offset=0x0',
    NEW_TABLE('0x80000000', '0x1'),
    'vfio_spapr_create_window pageshift=0xc levels=1 winsize=0x40000000 offset=0x0',
    'vfio_iommu_map_notify iommu MAP @ 0x1000 - 0x1fff',
    'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x5003 ret=0',
    `spapr_iommu_ddw_query ${BUID}, 1 windows available, max window size=0x80000000, mask=0x107`,
    NEW_TABLE('0x80000001', '0x2'),
    'vfio_spapr_create_window pageshift=0x10 levels=1 winsize=0x100000000 offset=0x800000000000000',
    `spapr_iommu_ddw_create ${BUID}, page size=0x10000, requested=0x100000000, start addr=0x800000000000000, liobn=0x80000001`,
    'vfio_iommu_map_notify iommu MAP @ 0x800000000000000 - 0x80000000000ffff',
    'spapr_iommu_pci_put liobn=0x80000001 ioba=0x800000000000000 tce=0x10003 ret=0',
  ];
  const args = '-M pseries -m 2G -device vfio-pci,host=0000:01:00.0';

  it("with --trace 'vfio_*', does not replay a machine reset at boot (no extra remove/create window pair)", async () => {
    const file = tempTrace(trace);
    const all = await replay(file, args);
    const vfio = await replay(file, args, { patterns: ['vfio_*'] });
    expect(vfio.model).toEqual(all.model);
    const vfioOut = vfio.out.trimEnd().split('\n');
    expect(vfioOut.filter((l) => l.startsWith('vfio_spapr_'))).toEqual([
      'vfio_spapr_remove_window offset=0x0',
      'vfio_spapr_create_window pageshift=0xc levels=1 winsize=0x40000000 offset=0x0',
      'vfio_spapr_create_window pageshift=0x10 levels=1 winsize=0x100000000 offset=0x800000000000000',
    ]);
    expect(vfioOut.every((l) => l.startsWith('vfio_'))).toBe(true);
    const checked = await replay(file, args, {
      patterns: ['vfio_spapr_*', 'vfio_prereg_*', 'vfio_iommu_map_notify'],
      check: true,
    });
    expect(checked.out).toBe(`${trace.filter((l) => l.startsWith('vfio_')).length} compared, 0 differ\n`);
  });
});

describe('reading the input', () => {
  const V2 = join(fixtures, 'qemu-7.2/v2-64k.trace');
  const V2_ARGS = SAMPLES[1]!.args;

  it('replays a trace saved with Windows line ends (CRLF) as the original', async () => {
    const crlf = tempFile(readFileSync(V2, 'utf8').replace(/\n/g, '\r\n'));
    const original = await replay(V2, V2_ARGS, { check: true });
    const windows = await replay(crlf, V2_ARGS, { check: true });
    expect(windows.out).toBe(original.out);
    expect(windows.out).toBe(`${modelledLines(V2).length} compared, 0 differ\n`);
    const lines = async (file: string) => (await replay(file, V2_ARGS)).out.split('\n').map(normalizeText);
    expect(await lines(crlf)).toEqual(await lines(V2));
  });

  it('names the file and the OS reason, in one line, for a missing file and a directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ddw-replay-dir-'));
    const missing = join(dir, 'nope.trace');
    await expect(replay(missing, V2_ARGS)).rejects.toBeInstanceOf(FileError);
    await expect(replay(missing, V2_ARGS)).rejects.toThrow(
      `trace ${missing}: cannot read: no such file; check the path`,
    );
    await expect(replay(dir, V2_ARGS)).rejects.toThrow(`trace ${dir}: cannot read: it is a directory`);
  });

  it('refuses an input with no trace line of a modelled event: empty, binary, plain text', async () => {
    const empty = tempFile('');
    await expect(replay(empty, V2_ARGS)).rejects.toThrow(`trace ${empty}: content: the file is empty`);
    const binary = tempFile(Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)));
    await expect(replay(binary, V2_ARGS, { check: true })).rejects.toThrow(
      /^trace .*: content: none of its \d+ lines is a trace line of an event ddw models \(spapr_iommu_\*, vfio_\*\); record one with/,
    );
    const text = tempFile('Hello world\nthis is not a trace\nspapr_pci_msi_setup name=e1000e vector=0\n');
    await expect(replay(text, V2_ARGS)).rejects.toThrow(/content: none of its 3 lines is a trace line/);
    await expect(replay(text, V2_ARGS)).rejects.toBeInstanceOf(ConfigError);
  });

  it('refuses a --check that compared nothing, naming the selection', async () => {
    const V1 = join(fixtures, 'qemu-7.2/v1-basic.trace');
    await expect(
      replay(V1, SAMPLES[0]!.args, { patterns: ['spapr_iommu_get'], check: true }),
    ).rejects.toThrow(
      /^replay --check: --trace: "spapr_iommu_get" selects none of the \d+ modelled lines of .*v1-basic\.trace: nothing was compared; select events the trace has \(it has spapr_iommu_new_table, /,
    );
  });
});

describe('lines with impossible fields', () => {
  const args = '-M pseries -m 2G';
  const head = [NEW_TABLE('0x80000000', '0x1')];

  it('skips them in bounded time, naming the field, with a shortened echo', async () => {
    const garbage = `spapr_iommu_pci_put liobn=0x80000000 ioba=0x${'9'.repeat(1_000_000)} tce=0x3 ret=0`;
    const trace = [
      ...head,
      'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x0 tcelist=0x2000000 iobaN=0x99999999 tceN=0x3 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x0 tcevalue=0x0 npages=2576980377 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x0 tcevalue=0x0 npages=-1 ret=0',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 ret=0',
      'spapr_iommu_pci_get liobn=0x80000000 ioba=zz ret=0 tce=0x0',
      `spapr_iommu_ddw_create ${BUID}, page size=0x3000, requested=0x100000000, start addr=0x800000000000000, liobn=0x80000001`,
      garbage,
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x2000 tce=0x7003 ret=0',
    ];
    const r = await replay(tempTrace(trace), args, { check: true });
    const messages = r.err.split('\n').filter((l) => l.startsWith('ddw replay:'));
    expect(messages).toEqual([
      'ddw replay: skipped line 2: spapr_iommu_pci_indirect: iobaN: 0x99999999 is above 0x1ff: H_PUT_TCE_INDIRECT takes at most 512 TCEs (QEMU returns H_PARAMETER without tracing)',
      "ddw replay: skipped line 3: spapr_iommu_pci_stuff: npages: 2576980377 is more than the 262144 entries of LIOBN 0x80000000's window in this model (QEMU returns H_PARAMETER without tracing); not replayed, but compared: the diff shows it",
      'ddw replay: skipped line 4: spapr_iommu_pci_stuff: npages: "-1" is negative as printed (QEMU prints npages signed), so the uint64 count is above 2^63: more than any window has entries (QEMU returns H_PARAMETER without tracing)',
      'ddw replay: skipped line 5: spapr_iommu_pci_put: tce: missing',
      'ddw replay: skipped line 6: spapr_iommu_pci_get: ioba: not a number: "zz"',
      'ddw replay: skipped line 7: spapr_iommu_ddw_create: page size: 0x3000 is not a power of two',
      `ddw replay: skipped line 8: spapr_iommu_pci_put: ioba: "0x${'9'.repeat(22)}…" does not fit in 64 bits`,
    ]);
    // Each message is followed by the line's start, at most 120 characters and an ellipsis.
    expect(r.err).toContain(`\n    ${garbage.slice(0, 120)}…\n`);
    expect(r.err.length).toBeLessThan(4000);
    // The good lines still replay; the impossible ones are not compared, the well-formed
    // stuff the model's window cannot take is (the model prints nothing for it).
    expect(r.out).toBe(
      [
        '--- qemu',
        '+++ ddw',
        '@@ -1,3 +1,2 @@',
        ' spapr_iommu_new_table liobn=0x80000000 table=* fd=*',
        '-spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x0 tcevalue=0x0 npages=2576980377 ret=0',
        ' spapr_iommu_pci_put liobn=0x80000000 ioba=0x2000 tce=0x7003 ret=0',
        '3 compared, 1 differ',
        '',
      ].join('\n'),
    );
  });

  it('prints the first 20 skips and counts the rest', async () => {
    const trace = [
      ...head,
      ...Array.from({ length: 30 }, () => 'spapr_iommu_pci_put liobn=0x80000000 ret=0'),
    ];
    const r = await replay(tempTrace(trace), args);
    expect(r.err.match(/^ddw replay: skipped line \d+: spapr_iommu_pci_put: ioba: missing$/gm)).toHaveLength(
      20,
    );
    expect(r.err.endsWith('ddw replay: ... and 10 more skipped lines\n')).toBe(true);
  });
});

describe('--trace patterns', () => {
  const V1 = join(fixtures, 'qemu-7.2/v1-basic.trace');
  const V1_ARGS = SAMPLES[0]!.args;

  it('warns once about each pattern that matches no trace event; -PATTERN still deselects', async () => {
    const r = await replay(V1, V1_ARGS, {
      patterns: ['foo_*', 'spapr_iommu_*', '-spapr_iommu_pci_stuff', 'foo_*', '-bar'],
    });
    expect(r.err).toBe(
      'ddw replay: warning: pattern "foo_*" matches no trace event\nddw replay: warning: pattern "-bar" matches no trace event\n',
    );
    const lines = r.out.trimEnd().split('\n');
    expect(lines.some((l) => l.startsWith('spapr_iommu_pci_stuff'))).toBe(false);
    expect(lines).toEqual(
      modelledLines(V1)
        .filter((l) => !l.startsWith('spapr_iommu_pci_stuff'))
        .map(blankPointer(lines)),
    );
  });

  it('refuses an empty pattern', async () => {
    await expect(replay(V1, V1_ARGS, { patterns: ['-'] })).rejects.toThrow(
      /^ddw replay: --trace: the pattern "-" names no event/,
    );
  });
});

/** The model's own host pointers in place of QEMU's (new_table lines). */
function blankPointer(model: readonly string[]) {
  const tables = model.filter((l) => l.startsWith('spapr_iommu_new_table'));
  let n = 0;
  return (line: string) => (line.startsWith('spapr_iommu_new_table') ? tables[n++]! : line);
}

describe('--json', () => {
  const V2 = join(fixtures, 'qemu-7.2/v2-64k.trace');
  const V2_ARGS = SAMPLES[1]!.args;

  it('prints one object that the schema reads: the comparison with --check', async () => {
    const r = await replay(V2, V2_ARGS, { check: true, json: true });
    const report = replayReportSchema.parse(JSON.parse(r.out));
    expect(report).toEqual({
      schemaVersion: 1,
      kind: 'replay',
      trace: V2,
      patterns: ['spapr_iommu_*'],
      check: true,
      compared: modelledLines(V2).length,
      differ: 0,
      exact: true,
      diff: '',
      skipped: [],
      skippedTotal: 0,
    });
    expect(r.code).toBe(0);
  });

  it("prints the model's lines, and the diff and skips when there are some", async () => {
    const text = await replay(V2, V2_ARGS);
    const json = replayReportSchema.parse(JSON.parse((await replay(V2, V2_ARGS, { json: true })).out));
    expect(json.lines?.map(normalizeText)).toEqual(text.out.trimEnd().split('\n').map(normalizeText));
    expect(json.compared).toBeUndefined();

    const trace = [
      ...modelledLines(V2).slice(0, 5),
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 ret=0',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x3 ret=-4',
    ];
    const r = await replay(tempTrace(trace), V2_ARGS, { check: true, json: true });
    const report = replayReportSchema.parse(JSON.parse(r.out));
    expect(r.code).toBe(1);
    expect(report.skipped).toEqual([{ line: 6, event: 'spapr_iommu_pci_put', reason: 'tce: missing' }]);
    expect(report.differ).toBe(2);
    expect(report.diff).toContain(
      '-spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x3 ret=-4\n+spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x3 ret=0\n',
    );
    // Lines 3-6 of the 6 compared (the skipped line is not one of them), 3 lines of context.
    expect(report.diff?.startsWith('--- qemu\n+++ ddw\n@@ -3,4 +3,4 @@\n')).toBe(true);
    expect(r.err).toBe('');
  });
});

describe('memory', () => {
  it('holds a bounded amount however long the trace: nothing when the model agrees or differs line by line', async () => {
    const comparer = new TraceComparer();
    const replayer = await Replayer.start(
      (trace) => buildPseries('-M pseries -m 2G -device dma-engine', { trace }),
      {
        patterns: ['spapr_iommu_*'],
        line: (l) => comparer.addActual(l),
        expected: (l) => comparer.addExpected(l),
      },
    );
    let number = 0;
    const push = (text: string) => replayer.push({ number: ++number, text });
    push(NEW_TABLE('0x80000000', '0x1').replace('table=0x1', 'table=0x0'));
    const heldAt: number[] = [];
    for (let k = 0; k < 20_000; k++) {
      const ioba = (k % 4096) * 0x1000;
      push(
        `spapr_iommu_pci_put liobn=0x80000000 ioba=0x${ioba.toString(16)} tce=0x${(ioba + 0x10000003).toString(16)} ret=0`,
      );
      push(
        `spapr_iommu_xlate liobn=0x80000000 0x${(ioba + 0x10).toString(16)} -> 0x${(ioba + 0x10000000).toString(16)} perm=3 mask=0xfff`,
      );
      // A get that QEMU answered otherwise: the model's differing line is a difference, not
      // something a later input line may claim.
      push(`spapr_iommu_pci_get liobn=0x80000000 ioba=0x${ioba.toString(16)} ret=0 tce=0x5`);
      if (k % 5000 === 4999) heldAt.push(replayer.held().unmatched + replayer.held().queued);
    }
    replayer.finish();
    replayer.machine.dispose();
    expect(heldAt).toEqual([0, 0, 0, 0]);
  });
});
