import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMachine, runReportSchema } from '@ddw/cli';
import { describe, expect, it } from 'vitest';
import { runDdw } from './support/ddw-program.js';

const ddw = runDdw;

function descriptionFile(description: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'ddw-run-')), 'machine.json');
  writeFileSync(file, JSON.stringify(description));
  return file;
}

describe('ddw run on the default machine', () => {
  it('negotiates a direct DDW for both devices, moves data both ways and verifies every byte', async () => {
    const r = await runMachine();
    expect(r.ok).toBe(true);
    expect(r.machine).toMatchObject({
      type: 'pseries-10.0',
      ram: '0x100000000',
      maxmem: '0x200000000',
      accel: 'tcg',
    });
    expect(r.machine.devices.map((d) => [d.id, d.driver])).toEqual([
      ['dma0', 'dma-engine'],
      ['hostdev0', 'vfio-pci'],
    ]);
    // One PE, one negotiation: a 16M-page window at 2^59 sized from maxmem (8 GiB, ibm,lrdr-capacity),
    // populated over the 4 GiB of RAM.
    expect(r.guest!.decisions).toHaveLength(1);
    expect(r.guest!.decisions[0]!.outcome).toBe('direct');
    expect(r.guest!.devices.map((d) => [d.id, d.mode, d.liobn, d.dmaOffset])).toEqual([
      ['dma0', 'direct', '0x80000001', '0x800000000000000'],
      ['hostdev0', 'direct', '0x80000001', '0x800000000000000'],
    ]);
    const ddw = r.phbs[0]!.windows.find((w) => w.liobn === '0x80000001')!;
    expect(ddw).toEqual({
      liobn: '0x80000001',
      busOffset: '0x800000000000000',
      pageShift: 24,
      entries: 512,
      mapped: 256,
    });
    // The host follows: the 16M guest pages are backed by 64K host pages (RAM is on 64K pages).
    expect(r.host!.windows.map((w) => [w.startAddr, w.pageShift])).toEqual([
      ['0x0', 12],
      ['0x800000000000000', 16],
    ]);
    expect(r.host!.mappings).toBe(0x10000);
    expect(r.host!.prereg).toEqual([{ vaddr: '0x7e0000000000', size: '0x100000000' }]);
    expect(r.dma.transfers).toHaveLength(4);
    expect(r.dma.failedBytes).toBe(0);
    expect(r.dma.verifiedBytes).toBe(4 * (0x30000 + 0x1234));
  });

  it('prints a report a person can read, and the same as JSON with --json', async () => {
    const text = await ddw('run');
    expect(text.code).toBe(0);
    expect(text.out).toContain('Machine: pseries-10.0, 4 GiB RAM (up to 8 GiB), accel tcg, guest linux-6.12');
    expect(text.out).toMatch(/0x80000001 +0x800000000000000 - 0x8000001ffffffff +16M +512 +256/);
    expect(text.out).toMatch(/bytes verified, 0 failed/);
    const json = await ddw('run', '--json');
    const report = JSON.parse(json.out);
    expect(Object.keys(report)).toEqual(expect.arrayContaining(['machine', 'phbs', 'host', 'guest', 'dma']));
    expect(report.phbs[0]).toMatchObject({ index: 0, buid: '0x800000020000000' });
    expect(report.guest.devices[0]).toMatchObject({
      cfgAddr: '0x800',
      mode: 'direct',
      liobn: '0x80000001',
      dmaOffset: '0x800000000000000',
    });
    expect(report.dma).toMatchObject({ failedBytes: 0 });
  });
});

describe('ddw run on other machines', () => {
  it('builds only what --qemu-args names, and falls back to the default window with ddw off', async () => {
    const r = await runMachine({
      qemuArgs: '-M pseries -m 2G -global spapr-pci-host-bridge.ddw=off -device e1000e',
    });
    expect(r.ok).toBe(true);
    expect(r.machine.devices.map((d) => d.driver)).toEqual(['e1000e']);
    expect(r.host).toBeNull();
    expect(r.guest!.devices[0]).toMatchObject({ mode: 'default', liobn: '0x80000000' });
    expect(r.dma.verifiedBytes).toBeGreaterThan(0);
  });

  it('removes the default window when the PHB offers no second one (the x-ddw-windows extension)', async () => {
    const r = await runMachine({
      qemuArgs: '-M pseries -m 4G -global spapr-pci-host-bridge.x-ddw-windows=1 -device e1000e',
      // Linux 6.1 sizes the window from the end of RAM; 6.12 (the default) would need maxmem.
      guest: 'linux-6.1',
    });
    expect(r.ok).toBe(true);
    const decision = r.guest!.decisions[0]!;
    expect(decision).toMatchObject({ outcome: 'direct', defaultWindowRemoved: true });
    // The freed slot is the default window's: LIOBN 0x80000000, at bus 0 since no window was active.
    expect(r.guest!.devices[0]).toMatchObject({ mode: 'direct', liobn: '0x80000000', dmaOffset: '0x0' });
    expect(r.phbs[0]!.windows).toEqual([
      { liobn: '0x80000000', busOffset: '0x0', pageShift: 24, entries: 256, mapped: 256 },
    ]);
  });

  it('merges a description over the default machine: change a value, add a device, remove one by id', async () => {
    const file = descriptionFile({
      ram: '2G',
      devices: [
        { id: 'hostdev0', remove: true },
        { id: 'nic', driver: 'e1000e', bus: 'pci.0', slot: 3 },
      ],
    });
    const r = await ddw('run', file, '--json');
    const report = JSON.parse(r.out);
    expect(report.machine.ram).toBe('0x80000000');
    expect(report.machine.devices.map((d: { id: string }) => d.id)).toEqual(['dma0', 'nic']);
    expect(report.host).toBeNull();
  });

  it('refuses a bad description naming the field as the file has it, not as merged over the preset', async () => {
    const file = descriptionFile({ devices: [{ id: 'x', driver: 'e1000e', bus: 'pci.0', colour: 'red' }] });
    const r = await ddw('run', file);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`ddw: ${file}: devices[0].colour: is not a known field; check its spelling\n`);
  });

  it('names the layer that set a bad value: the file, or the -m option', async () => {
    const file = descriptionFile({ ram: '2G', maxmem: '8G', pseries: { slots: 0 } });
    const fromFile = await ddw('run', file);
    expect(fromFile.err).toBe(
      `ddw: ${file}: maxmem: maxmem was specified, but no hotplug slots were specified; give hotplug slots too, e.g. -m 2G,maxmem=8G,slots=4\n`,
    );
    const fromOption = await ddw('run', file, '-m', '1G,maxmem=4G');
    expect(fromOption.err).toMatch(/^ddw: QEMU options: -m maxmem: maxmem was specified/);
    const zero = await ddw('run', descriptionFile({ ram: '0' }));
    expect(zero.code).toBe(2);
    expect(zero.err).toMatch(/: ram: RAM size is 0/);
  });

  it('applies --host over the preset: the option is one more layer of the description, never ignored', async () => {
    const described = await ddw('run', '--host', 'type=v1', '--print-description');
    expect(JSON.parse(described.out).host).toMatchObject({ type: 'v1', page: '64K' });
    const r = await runMachine({ host: 'type=v1' });
    expect(r.host!.config).toMatch(/^type=v1,/);
    // A v1 host cannot map the DDW at 2^59: the answer is no, and the report says why.
    expect(r.ok).toBe(false);
    expect(r.host!.errors.join('\n')).toContain("can't map guest IOVA region");
  });

  it('orders layers preset < file < command line, and QEMU hardware options replace the preset', async () => {
    const file = descriptionFile({ ram: '2G', devices: [{ id: 'nic', driver: 'e1000e', bus: 'pci.0' }] });
    const overFile = JSON.parse((await ddw('run', file, '-m', '3G', '--print-description')).out);
    expect(overFile.ram).toBe('0xc0000000');
    // -m describes hardware: QEMU's defaults are the preset, so only the file's device is there.
    expect(overFile.devices.map((d: { id: string }) => d.id)).toEqual(['nic']);
    expect(overFile.host).toBeUndefined();
    const overPreset = JSON.parse((await ddw('run', file, '--print-description')).out);
    expect(overPreset.devices.map((d: { id: string }) => d.id)).toEqual(['dma0', 'hostdev0', 'nic']);
    expect(overPreset.ram).toBe('2G');
    const guest = JSON.parse((await ddw('run', '--guest', 'linux-4.x', '--print-description')).out);
    expect(guest.guest).toEqual({ generation: 'linux-4.x' });
    const paged = JSON.parse((await ddw('run', '--guest', 'linux-6.12,page=64k', '--print-description')).out);
    expect(paged.guest).toEqual({ generation: 'linux-6.12', page: '64K' });
    // The kernel page size reaches the guest model (its mapping shapes are guest-linux's tests).
    expect((await ddw('run', '--guest', 'linux-6.12,page=32K')).err).toMatch(
      /guest\.page: "32K" is not a kernel page size/,
    );
  });

  it('builds the same machine again from what --print-description printed', async () => {
    for (const args of [
      [],
      ['-m', '2G', '-device', 'e1000e,id=n1', '--host', 'type=v1'],
      ['--guest', 'none'],
    ]) {
      const printed = (await ddw('run', ...args, '--print-description')).out;
      const again = await ddw('run', descriptionFile(JSON.parse(printed)), '--print-description');
      expect(again.out, args.join(' ')).toBe(printed);
    }
    expect(JSON.parse((await ddw('run', '-m', '2G', '--print-description')).out).preset).toBe('qemu');
    const bad = await ddw('run', descriptionFile({ preset: 'mine' }));
    expect(bad.err).toMatch(/: preset: "mine" is not a preset; use default or qemu\n$/);
  });

  it('runs QEMU monitor commands after boot: memory hot-add maps 4 LMBs, system_reset renegotiates', async () => {
    const base = ['run', '-m', '2G,maxmem=6G,slots=2', '-device', 'e1000e', '--guest', 'linux-6.12'];
    const hot = await ddw(
      ...base,
      '-trace',
      'spapr_iommu_pci_indirect',
      '--hmp',
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1',
      '--json',
    );
    expect(hot.code).toBe(0);
    const indirect = hot.err.split('\n').filter((l) => l.startsWith('spapr_iommu_pci_indirect'));
    // Boot maps 2 GiB (one call of 128 x 16M); the DIMM at 2 GiB adds one call of 16 per 256 MiB LMB.
    expect(indirect).toHaveLength(5);
    expect(
      indirect.slice(1).map((l) => /ioba=(0x[0-9a-f]+) .* iobaN=(0x[0-9a-f]+)/.exec(l)!.slice(1)),
    ).toEqual([
      ['0x800000080000000', '0xf'],
      ['0x800000090000000', '0xf'],
      ['0x8000000a0000000', '0xf'],
      ['0x8000000b0000000', '0xf'],
    ]);
    const report = runReportSchema.parse(JSON.parse(hot.out));
    expect(report.monitor).toEqual([
      { command: 'object_add memory-backend-ram,id=m1,size=1G', ok: true },
      { command: 'device_add pc-dimm,id=d1,memdev=m1', ok: true },
    ]);
    const reset = await ddw(...base, '-trace', 'spapr_iommu_ddw_create', '--hmp', 'system_reset');
    expect(reset.code).toBe(0);
    expect(reset.err.split('\n').filter((l) => l.startsWith('spapr_iommu_ddw_create'))).toHaveLength(2);
    const bad = await ddw(...base, '--hmp', 'frobnicate');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^ddw: --hmp "frobnicate": .*unknown command/);
  });

  it('replays what a monitor scenario traced: reset and memory hot-add reproduce line for line', async () => {
    const log = join(mkdtempSync(join(tmpdir(), 'ddw-hmp-')), 'hmp.trace');
    const machine = '-M pseries -m 2G,maxmem=6G,slots=2 -device e1000e';
    const hmp =
      'system_reset; object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1';
    const run = await ddw('run', ...machine.split(' '), '--hmp', hmp, '-trace', 'spapr_iommu_*', '-D', log);
    expect(run.code).toBe(0);
    const replay = await ddw('replay', log, '--qemu-args', machine, '--check');
    expect(replay.code).toBe(0);
    expect(replay.out).toMatch(/^\d+ compared, 0 differ\n$/);
  });

  it('reports every machine: no PCI device, no guest, several PHBs', async () => {
    for (const args of [
      ['-m', '4G'],
      ['--guest', 'none'],
      ['-M', 'pseries', '-device', 'spapr-pci-host-bridge,index=1', '-device', 'e1000e,bus=pci.1'],
      ['-M', 'pseries', '-global', 'spapr-pci-host-bridge.ddw=off', '-device', 'e1000e'],
    ]) {
      const text = await ddw('run', ...args);
      expect(text.code, args.join(' ')).toBe(0);
      expect(text.err).toBe('');
      expect(text.out).toMatch(/\nOK in \d+ ms\n$/);
      const json = await ddw('run', ...args, '--json');
      expect(runReportSchema.parse(JSON.parse(json.out)).ok).toBe(true);
    }
  });

  it('runs the 2016 guest algorithm with --guest linux-4.x, and no guest with --guest none', async () => {
    const old = await runMachine({ guest: 'linux-4.x' });
    expect(old.ok).toBe(true);
    expect(old.guest!.generation).toBe('linux-4.x');
    const none = await runMachine({ guest: 'none' });
    expect(none.guest).toBeNull();
    expect(none.dma.transfers).toEqual([]);
  });
});
