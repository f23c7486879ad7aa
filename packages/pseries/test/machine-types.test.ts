import { readFileSync } from 'node:fs';
import { ConfigError, type Machine, MachineTokens } from '@ddw/machine';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import {
  buildPseries,
  buildPseriesFromDescription,
  DEFAULT_QEMU_VERSION,
  deprecationWarning,
  machineType,
  machineTypesOf,
  PSERIES_MACHINE_TYPES,
  QEMU_VERSIONS,
  type QemuVersion,
  renderMachineTypeTable,
} from '../src/index.js';
import { refusal } from './refusal.js';

const BUID0 = [0x08000000, 0x20000000];
const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function keep(m: Promise<Machine>): Promise<Machine> {
  const machine = await m;
  machines.push(machine);
  return machine;
}

/** The ConfigError a build refuses with, thrown or rejected. */
async function rejection(build: () => Promise<unknown>): Promise<ConfigError> {
  try {
    await build();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

/** A description build; RAM defaults to 2G (a description must give it). */
function fromDescription(description: Record<string, unknown>): Promise<Machine> {
  return buildPseriesFromDescription({ ram: '2G', ...description });
}

function rtas(m: Machine, name: string, args: number[], nret: number): number[] {
  return m.guest.rtasCall(name, args, nret).rets.map((r) => r | 0);
}

/** "pseries-4.1" -> [4, 1]; "pseries-2.12-sxxm" -> [2, 12]. */
function versionOf(type: string): [number, number] {
  const m = /^pseries-(\d+)\.(\d+)/.exec(type)!;
  return [Number(m[1]), Number(m[2])];
}
const atMost = (type: string, major: number, minor: number) => {
  const [a, b] = versionOf(type);
  return a < major || (a === major && b <= minor);
};

/**
 * QEMU's facts, stated as rules independent of the model's compat chain: the default pgsz has
 * 2M and 16M from pseries-4.2 on (QEMU 4.2+), DDW exists from pseries-2.7 on, QEMU 7.1+ answers
 * the 6-output query and publishes <2 reset 1> for every type, QEMU 2.7 does neither.
 */
function expected(version: QemuVersion, type: string) {
  const modern = version !== '2.7';
  const ddw = !atMost(type, 2, 6);
  return {
    ddw,
    mask: modern && !atMost(type, 4, 1) ? 0x107 : 0x03,
    nret6: modern,
    extensions: modern ? [2, 0x2029, 1] : [1, 0x2029],
    pre28: atMost(type, 2, 7),
    iommuVersion: modern ? 3 : 2,
    htmOn: modern && atMost(type, 2, 11),
  };
}

describe('QEMU versions', () => {
  it('offers the machine types each version registers, newest first', () => {
    const names = (v: QemuVersion) => machineTypesOf(v).map((t) => t.name);
    expect(QEMU_VERSIONS).toEqual(['10.0', '7.2', '2.7']);
    const modern = ['9.2', '9.1', '9.0', '8.2', '8.1', '8.0', '7.2', '7.1', '7.0', '6.2', '6.1', '6.0', '5.2']
      .concat(['5.1', '5.0', '4.2', '4.1', '4.0', '3.1', '3.0'])
      .map((v) => `pseries-${v}`);
    expect(names('10.0')).toEqual(['pseries-10.0', ...modern]);
    const old = [
      '2.12',
      '2.12-sxxm',
      '2.11',
      '2.10',
      '2.9',
      '2.8',
      '2.7',
      '2.6',
      '2.5',
      '2.4',
      '2.3',
      '2.2',
      '2.1',
    ];
    expect(names('7.2')).toEqual([
      ...modern.slice(modern.indexOf('pseries-7.2')),
      ...old.map((v) => `pseries-${v}`),
    ]);
    expect(names('2.7')).toEqual(
      ['2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1'].map((v) => `pseries-${v}`),
    );
  });

  it('resolves pseries per version and refuses a type the version does not offer, listing those it does', () => {
    expect(machineType('pseries', 'type', '10.0').name).toBe('pseries-10.0');
    expect(machineType('pseries', 'type', '7.2').name).toBe('pseries-7.2');
    expect(machineType('pseries', 'type', '2.7').name).toBe('pseries-2.7');
    const e = refusal(() => machineType('pseries-2.12', 'type', '10.0'));
    expect(e.field).toBe('type');
    expect(e.message).toContain('"pseries-2.12"');
    expect(e.message).toContain('pseries-3.0');
    expect(e.fix).not.toContain('pseries-2.12');
    expect(refusal(() => machineType('pseries-8.0', 'type', '7.2')).fix).toContain('pseries-2.1');
  });

  it('deprecates in 10.0 what is 3 years old (pseries-7.0 and older), nothing in 7.2', () => {
    const deprecated = machineTypesOf('10.0').filter((t) => t.deprecated);
    expect(deprecated.map((t) => t.name)).toEqual(
      machineTypesOf('10.0')
        .map((t) => t.name)
        .filter((n) => atMost(n, 7, 0)),
    );
    expect(deprecationWarning(machineType('pseries-5.0', 'type', '10.0'))).toBe(
      "Machine type 'pseries-5.0' is deprecated: machines more than 3 years old are subject to deletion after 6 years",
    );
    expect(deprecationWarning(machineType('pseries-7.1', 'type', '10.0'))).toBeUndefined();
    expect(machineTypesOf('7.2').some((t) => t.deprecated)).toBe(false);
  });

  it('defaults to one version: pseries is its newest type, and a bare pseries-2.7 stays QEMU 2.7', () => {
    expect(DEFAULT_QEMU_VERSION).toBe('10.0');
    expect(machineType('pseries').name).toBe(`pseries-${DEFAULT_QEMU_VERSION}`);
    expect(PSERIES_MACHINE_TYPES).toBe(machineTypesOf(DEFAULT_QEMU_VERSION));
    expect(machineType('pseries-2.7').qemuVersion).toBe('2.7');
    expect(machineType('pseries-2.7', '-M', '7.2').qemuVersion).toBe('7.2');
  });
});

describe('every machine type, built and asked through RTAS and the device tree', () => {
  for (const version of QEMU_VERSIONS) {
    for (const type of machineTypesOf(version).map((t) => t.name)) {
      it(`QEMU ${version} ${type}`, async () => {
        const want = expected(version, type);
        const m = await keep(
          fromDescription({
            type,
            qemu: { version },
            ram: '2G',
            // QEMU refuses these under TCG unless cap-htm is turned off (see below).
            ...(want.htmOn ? { pseries: { 'cap-htm': false } } : {}),
          }),
        );
        const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
        const dt = m.guest.deviceTree;
        const q5 = rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID0], 5);
        const q6 = rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID0], 6);
        if (want.ddw) {
          expect(dt.getPropU32Cells(phb.nodePath, 'ibm,ddw-applicable')).toEqual([0x2026, 0x2027, 0x2028]);
          expect(dt.getPropU32Cells(phb.nodePath, 'ibm,ddw-extensions')).toEqual(want.extensions);
          expect(phb.windows).toHaveLength(2);
          // QEMU 2.7 sizes the largest block from RAM: 2 GiB >> 12.
          expect(q5).toEqual([0, 1, want.nret6 ? 0x80000000 | 0 : 0x80000, want.mask, 0]);
          if (want.nret6) expect(q6).toEqual([0, 1, 0x20, 0, want.mask, 0]);
          else expect(q6[0]).toBe(-3);
        } else {
          expect(dt.getProp(phb.nodePath, 'ibm,ddw-applicable')).toBeUndefined();
          expect(dt.getProp(phb.nodePath, 'ibm,ddw-extensions')).toBeUndefined();
          expect(phb.windows).toHaveLength(1);
          expect([q5[0], q6[0]]).toEqual([-3, -3]);
        }
        expect(dt.getPropU32Cells(phb.nodePath, 'ibm,dma-window')).toEqual([0x80000000, 0, 0, 0, 0x40000000]);
        expect(m.get(MachineTokens.Vmstate).find('spapr_iommu', 0x80000000)?.description.version).toBe(
          want.iommuVersion,
        );
        const pciFields = m
          .get(MachineTokens.Vmstate)
          .find('spapr_pci', 0)
          ?.description.fields.map((f) => f.name);
        expect(pciFields?.includes('mig_liobn')).toBe(want.pre28);
      });
    }
  }

  it('builds from the command line with the default version (the pseries-3.1 sample: mask 0x3)', async () => {
    const m = await keep(buildPseries('-M pseries-3.1 -m 2G -device e1000e -device e1000e'));
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID0], 6)).toEqual([0, 1, 0x20, 0, 0x03, 0]);
    const m2 = await keep(buildPseries('-M pseries-4.2 -m 2G'));
    expect(rtas(m2, 'ibm,query-pe-dma-window', [0, ...BUID0], 6)).toEqual([0, 1, 0x20, 0, 0x107, 0]);
  });

  it("is QEMU 7.2's compat machine for pseries-2.7 with qemu.version 7.2, QEMU 2.7's without", async () => {
    const compat = await keep(
      fromDescription({
        type: 'pseries-2.7',
        qemu: { version: '7.2' },
        pseries: { 'cap-htm': false },
      }),
    );
    expect(rtas(compat, 'ibm,query-pe-dma-window', [0, ...BUID0], 6)).toEqual([0, 1, 0x20, 0, 0x03, 0]);
    const original = await keep(buildPseries('-M pseries-2.7 -m 4G'));
    expect(rtas(original, 'ibm,query-pe-dma-window', [0, ...BUID0], 5)).toEqual([0, 1, 0x100000, 0x03, 0]);
  });
});

describe('the qemu section', () => {
  it('makes pseries the version’s newest type', async () => {
    const m = await keep(fromDescription({ qemu: { version: '10.0' } }));
    expect(m.description.type).toBeUndefined(); // the description names no type ...
    const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
    expect(phb.props.pgsz).toBe(0x1211000n); // ... and gets pseries-10.0's defaults
    const older = await keep(fromDescription({ qemu: { version: '10.0' }, type: 'pseries-4.1' }));
    expect(older.get(SpaprPciTokens.Phbs).list[0]!.props.pgsz).toBe(0x11000n);
  });

  it('refuses a version ddw does not model, and a type the version lacks, naming the field', async () => {
    const bad = await rejection(() => fromDescription({ qemu: { version: '8.0' } }));
    expect(bad.field).toBe('qemu.version');
    expect(bad.fix).toContain('10.0, 7.2, 2.7');
    const gone = await rejection(() => fromDescription({ qemu: { version: '10.0' }, type: 'pseries-2.12' }));
    expect(gone.field).toBe('type');
    expect(gone.message).toContain('for QEMU 10.0');
  });
});

describe('cap-htm', () => {
  it('refuses pseries-2.11 and older under TCG as QEMU 7.2 does, unless cap-htm is off', async () => {
    const e = await rejection(() => fromDescription({ qemu: { version: '7.2' }, type: 'pseries-2.11' }));
    expect(e.field).toBe('type');
    expect(e.problem).toBe('No Transactional Memory support in TCG');
    expect(e.fix).toBe('Try appending -machine cap-htm=off');
    const on = await rejection(() =>
      fromDescription({
        qemu: { version: '7.2' },
        type: 'pseries-2.12',
        pseries: { 'cap-htm': true },
      }),
    );
    expect(on.field).toBe('pseries.cap-htm');
    await keep(
      fromDescription({
        qemu: { version: '7.2' },
        type: 'pseries-2.11',
        pseries: { accel: 'kvm' },
      }),
    );
    await keep(fromDescription({ qemu: { version: '7.2' }, type: 'pseries-2.12' }));
    const none = await rejection(() =>
      fromDescription({ type: 'pseries-2.7', pseries: { 'cap-htm': false } }),
    );
    expect(none.field).toBe('pseries.cap-htm');
  });
});

describe('the machine type table', () => {
  it('has a row per type, with the values the model computes', () => {
    for (const version of QEMU_VERSIONS) {
      const table = renderMachineTypeTable(version);
      const rows = table.split('\n').filter((l) => l.startsWith('| pseries-'));
      expect(rows).toHaveLength(machineTypesOf(version).length);
      expect(table).toContain(`### QEMU ${version} (\`pseries\` = pseries-${version})`);
    }
    const row = (version: QemuVersion, type: string) =>
      renderMachineTypeTable(version)
        .split('\n')
        .find((l) => l.startsWith(`| ${type} `))!
        .split('|')
        .map((c) => c.trim());
    expect(row('10.0', 'pseries-4.1').slice(1, 7)).toEqual([
      'pseries-4.1',
      'yes',
      '0x11000',
      '0x3',
      'yes',
      '<2 0x2029 1>',
    ]);
    expect(row('7.2', 'pseries-2.6').slice(3, 6)).toEqual(['0x11000', '-', 'no']);
    expect(row('2.7', 'pseries-2.7 (`pseries`)').slice(4, 10)).toEqual([
      '0x3',
      'yes',
      '<1 0x2029>',
      'no',
      'no',
      'max RAM >> 12',
    ]);
    expect(renderMachineTypeTable()).toBe(QEMU_VERSIONS.map((v) => renderMachineTypeTable(v)).join('\n'));
  });

  // The README carries the generated table between these markers; regenerate it from
  // renderMachineTypeTable() when the model changes.
  const BEGIN = '<!-- machine-types:begin (generated by renderMachineTypeTable) -->';
  const END = '<!-- machine-types:end -->';
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  it('is what the README shows', () => {
    expect(readme).toContain(BEGIN);
    const inner = readme.slice(readme.indexOf(BEGIN) + BEGIN.length, readme.indexOf(END));
    expect(inner.trim()).toBe(renderMachineTypeTable().trim());
  });
});
