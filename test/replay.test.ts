import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runDdw } from './support/ddw-program.js';

const fixtures = fileURLToPath(new URL('./fixtures/qemu-7.2/', import.meta.url));
const V1 = join(fixtures, 'v1-basic.trace');
const V2 = join(fixtures, 'v2-64k.trace');
const V1_ARGS = '-M pseries -cpu power9 -m 2G -device e1000e -netdev user,id=n0 -device e1000e,netdev=n0';
const V2_ARGS = '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e';

/** `ddw replay ...` in-process. */
function replay(...args: string[]) {
  return runDdw('replay', ...args);
}

function tempTrace(lines: readonly string[]): string {
  const file = join(mkdtempSync(join(tmpdir(), 'ddw-replay-')), 'input.trace');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

const modelled = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('spapr_iommu_'));

describe('ddw replay --check on the public QEMU 7.2 samples', () => {
  it('agrees line for line with v1-basic (16M pages, one indirect of 128)', async () => {
    const r = await replay(V1, '--qemu-args', V1_ARGS, '--check');
    expect(r.out).toBe(`${modelled(V1).length} compared, 0 differ\n`);
    expect(r.code).toBe(0);
  });

  it('agrees line for line with v2-64k (64K pages, 128 indirects of 512)', async () => {
    const r = await replay(V2, '--qemu-args', V2_ARGS, '--check');
    expect(r.out).toBe(`${modelled(V2).length} compared, 0 differ\n`);
  });

  it("prints the model's own lines, host pointers included, without --check", async () => {
    const r = await replay(V2, '--qemu-args', V2_ARGS);
    const lines = r.out.trimEnd().split('\n');
    expect(lines).toHaveLength(modelled(V2).length);
    expect(lines[0]).toMatch(/^spapr_iommu_new_table liobn=0x80000000 table=0x[0-9a-f]+ fd=-1$/);
    expect(lines.filter((l) => l.startsWith('spapr_iommu_pci_indirect'))).toHaveLength(128);
  });

  it('reads traces with -msg timestamp=on prefixes', async () => {
    const stamped = modelled(V2).map((l, i) => `4242@1700000000.${String(i).padStart(6, '0')}:${l}`);
    const r = await replay(tempTrace(stamped), '--qemu-args', V2_ARGS, '--check');
    expect(r.out).toBe(`${stamped.length} compared, 0 differ\n`);
  });

  it('selects events with --trace', async () => {
    const r = await replay(V1, '--qemu-args', V1_ARGS, '--trace', 'spapr_iommu_ddw_*');
    expect(r.out.trimEnd().split('\n')).toEqual(modelled(V1).filter((l) => l.startsWith('spapr_iommu_ddw_')));
  });
});

describe('replaying under other options', () => {
  it('fails the 16M create when only 4K|64K are offered, and the hypercalls on that LIOBN with -4', async () => {
    const r = await replay(
      V1,
      '--qemu-args',
      '-M pseries -m 2G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e',
    );
    const lines = r.out.trimEnd().split('\n');
    expect(lines.some((l) => l.startsWith('spapr_iommu_ddw_create'))).toBe(false);
    expect(lines).toContain(
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x80000000, mask=0x3',
    );
    const indirect = lines.filter((l) => l.startsWith('spapr_iommu_pci_indirect'));
    expect(indirect).toHaveLength(1);
    expect(indirect[0]).toMatch(/liobn=0x80000001 .* iobaN=0x0 tceN=0x3 ret=-4$/);
  });

  it('reports the differences with --check and exits 1', async () => {
    const r = await replay(
      V1,
      '--qemu-args',
      '-M pseries -m 2G -global spapr-pci-host-bridge.pgsz=0x11000',
      '--check',
    );
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^--- qemu\n\+\+\+ ddw\n@@ -\d+,\d+ \+\d+,\d+ @@\n/);
    expect(r.out).toMatch(/^-spapr_iommu_ddw_create /m);
    expect(r.out).toMatch(/^\+spapr_iommu_pci_indirect .* ret=-4$/m);
    expect(r.out).toMatch(/\n\d+ compared, [1-9]\d* differ\n$/);
  });

  it('on pseries-2.7, queries with 5 outputs and prints the RAM-derived largest block', async () => {
    const r = await replay(V2, '--qemu-args', V2_ARGS.replace('-M pseries', '-M pseries-2.7'), '--check');
    expect(r.out).toMatch(
      /^-spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x80000000, mask=0x3$/m,
    );
    expect(r.out).toMatch(
      /^\+spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x100000000, mask=0x3$/m,
    );
    expect(r.out).toContain(`${modelled(V2).length} compared, 2 differ`);
  });

  it('refuses options QEMU would refuse, naming them', async () => {
    const r = await replay(V1, '--qemu-args', '-M pseries -m 2G,maxmem=1G,slots=1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^ddw: QEMU options: -m maxmem: /);
  });

  it('reports an unreadable trace in one line and exits 2', async () => {
    const r = await replay(join(fixtures, 'no-such.trace'), '--qemu-args', V1_ARGS);
    expect(r).toEqual({
      out: '',
      err: `ddw: trace ${join(fixtures, 'no-such.trace')}: cannot read: no such file; check the path\n`,
      code: 2,
    });
  });
});

// QEMU lines for scenarios beyond the samples, written from the reference's rules (not from the
// model): what QEMU 7.2 prints for them.
const BUID = 'buid=0x800000020000000 addr=0x0';
const NEW_TABLE = (liobn: string, ptr: string) => `spapr_iommu_new_table liobn=${liobn} table=${ptr} fd=-1`;

describe('resets', () => {
  it('treats a new_table for an existing LIOBN as a machine reset (a reboot replays like a boot)', async () => {
    const twice = [...modelled(V1), ...modelled(V1)];
    const r = await replay(tempTrace(twice), '--qemu-args', V1_ARGS, '--check');
    expect(r.out).toBe(`${twice.length} compared, 0 differ\n`);
  });

  it('does not replay the reset QEMU 7.2 runs after the last non-default window goes (T12)', async () => {
    const trace = [
      NEW_TABLE('0x80000000', '0x55d0c8a0'),
      `spapr_iommu_ddw_query ${BUID}, 1 windows available, max window size=0x80000000, mask=0x107`,
      NEW_TABLE('0x80000001', '0x7f10c8a0'),
      `spapr_iommu_ddw_create ${BUID}, page size=0x10000, requested=0x800000000, start addr=0x800000000000000, liobn=0x80000001`,
      'spapr_iommu_ddw_remove liobn=0x80000000',
      'spapr_iommu_ddw_remove liobn=0x80000001',
      NEW_TABLE('0x80000000', '0x55d0c9b0'),
      'spapr_iommu_ddw_reset buid=0x800000020000000 addr=0x0',
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x12345003 ret=0',
    ];
    const r = await replay(tempTrace(trace), '--qemu-args', '-m 4G', '--check');
    expect(r.out).toBe(`${trace.length} compared, 0 differ\n`);
    // The same trace on pseries-2.7: no reset, so the default window stays gone.
    const old = await replay(tempTrace(trace), '--qemu-args', '-M pseries-2.7 -m 4G');
    expect(old.out).not.toContain('spapr_iommu_ddw_reset');
    expect(old.out).toContain('spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x12345003 ret=-4');
  });

  it('replays an explicit ibm,reset-pe-dma-window and the window-0 create after removing it (T13, T21)', async () => {
    const trace = [
      NEW_TABLE('0x80000000', '0x1'),
      'spapr_iommu_ddw_remove liobn=0x80000000',
      NEW_TABLE('0x80000000', '0x2'),
      `spapr_iommu_ddw_create ${BUID}, page size=0x1000, requested=0x40000000, start addr=0x0, liobn=0x80000000`,
      NEW_TABLE('0x80000001', '0x3'),
      `spapr_iommu_ddw_create ${BUID}, page size=0x10000, requested=0x100000000, start addr=0x800000000000000, liobn=0x80000001`,
      'spapr_iommu_pci_stuff liobn=0x80000001 ioba=0x800000000040000 tcevalue=0x0 npages=4 ret=0',
      NEW_TABLE('0x80000000', '0x4'),
      'spapr_iommu_ddw_reset buid=0x800000020000000 addr=0x0',
      'spapr_iommu_pci_get liobn=0x80000001 ioba=0x800000000000000 ret=-4 tce=0x0',
    ];
    const r = await replay(tempTrace(trace), '--qemu-args', '-m 4G', '--check');
    expect(r.out).toBe(`${trace.length} compared, 0 differ\n`);
  });
});

describe('several PHBs', () => {
  it('boots a -device PHB before the default one (QEMU resets a bus newest first) and replays its DDW', async () => {
    const trace = [
      NEW_TABLE('0x80000100', '0x1'),
      NEW_TABLE('0x80000000', '0x2'),
      'spapr_iommu_ddw_query buid=0x800000020000001 addr=0x0, 1 windows available, max window size=0x80000000, mask=0x107',
      NEW_TABLE('0x80000101', '0x3'),
      'spapr_iommu_ddw_create buid=0x800000020000001 addr=0x0, page size=0x10000, requested=0x100000000, start addr=0x800000000000000, liobn=0x80000101',
      'spapr_iommu_pci_put liobn=0x80000101 ioba=0x800000000010000 tce=0x10003 ret=0',
      // system_reset: both PHBs restore their default windows, the -device one first.
      NEW_TABLE('0x80000100', '0x4'),
      NEW_TABLE('0x80000000', '0x5'),
      'spapr_iommu_pci_get liobn=0x80000101 ioba=0x800000000010000 ret=-4 tce=0x0',
    ];
    const args = '-m 4G -device spapr-pci-host-bridge,index=1,id=b1 -device e1000e,bus=b1.0';
    const r = await replay(tempTrace(trace), '--qemu-args', args, '--check');
    expect(r.out).toBe(`${trace.length} compared, 0 differ\n`);
  });
});

describe('passthrough', () => {
  // What QEMU 7.2 prints with a vfio-pci device on a v2 host (reference sections 7 and 8.3): the
  // container pre-registers RAM and drops the host default window at realize; the system reset
  // enables the default window, whose section creates the host window; every TCE is mapped.
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
    'vfio_iommu_map_notify iommu MAP @ 0x800000000010000 - 0x80000000001ffff',
    'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000000000000 tcelist=0x2000000 iobaN=0x1 tceN=0x10003 ret=0',
    'vfio_iommu_map_notify iommu UNMAP @ 0x1000 - 0x1fff',
    'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x0 ret=0',
    'vfio_spapr_remove_window offset=0x800000000000000',
    'spapr_iommu_ddw_remove liobn=0x80000001',
  ];
  const args = '-M pseries -m 2G -device vfio-pci,host=0000:01:00.0';
  // With VFIO, QEMU's replay of the default window translates every page, tracing each xlate:
  // this trace was recorded without them.
  const patterns = [
    '--trace',
    'spapr_iommu_*',
    '--trace',
    '-spapr_iommu_xlate',
    '--trace',
    'vfio_spapr_*',
    '--trace',
    'vfio_prereg_*',
    '--trace',
    'vfio_iommu_map_notify',
  ];

  it('compares VFIO lines too, host pointers aside', async () => {
    const r = await replay(tempTrace(trace), '--qemu-args', args, ...patterns, '--check');
    expect(r.out).toBe(`${trace.length} compared, 0 differ\n`);
  });

  it('prints what a v1 host does instead: no host windows made or removed, and the DDW refused', async () => {
    const r = await replay(tempTrace(trace), '--qemu-args', args, '--host', 'type=v1', ...patterns);
    const lines = r.out.trimEnd().split('\n');
    expect(lines.filter((l) => l.startsWith('vfio_spapr_') || l.startsWith('vfio_prereg_'))).toEqual([]);
    expect(lines).toContain('vfio_iommu_map_notify iommu MAP @ 0x1000 - 0x1fff');
    expect(lines.some((l) => l.includes('@ 0x800000000000000'))).toBe(false);
    expect(r.err).toContain("can't map guest IOVA region 0x800000000000000..0x8000000ffffffff");
  });
});

describe('DMA translations', () => {
  it('turns xlate lines into device translations at that window-relative address', async () => {
    const trace = [
      NEW_TABLE('0x80000000', '0x1'),
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x5000001 ret=0',
      'spapr_iommu_xlate liobn=0x80000000 0x1234 -> 0x5000000 perm=1 mask=0xfff',
      // An entry never written translates to nothing; beyond the window no DMA reaches the IOMMU.
      'spapr_iommu_xlate liobn=0x80000000 0x2000 -> 0x0 perm=0 mask=0xfff',
    ];
    const r = await replay(
      tempTrace(trace),
      '--qemu-args',
      '-m 2G -device dma-engine',
      '--trace',
      'spapr_iommu_*',
      '--check',
    );
    expect(r.out).toBe(`${trace.length} compared, 0 differ\n`);
  });
});
