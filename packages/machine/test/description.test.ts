import { formatHex } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import {
  DescriptionSchemaRegistry,
  formatFieldPath,
  hexSchema,
  mergeDescription,
  parseDescription,
  sizeSchema,
} from '../src/description.js';
import { ConfigError, PluginError } from '../src/errors.js';
import { formatSize, parseSize } from '../src/sizes.js';

describe('parseSize', () => {
  it.each([
    ['2G', 2n << 30n],
    ['2g', 2n << 30n],
    ['512M', 512n << 20n],
    ['512MiB', 512n << 20n],
    ['64kb', 64n << 10n],
    ['1T', 1n << 40n],
    ['1P', 1n << 50n],
    ['15E', 15n << 60n],
    ['4096', 4096n],
    ['4096B', 4096n],
    [' 8 G ', 8n << 30n],
    ['0x80000000', 0x80000000n],
    ['0X1e', 0x1en],
    ['0xffffffffffffffff', 0xffffffffffffffffn],
    [1024, 1024n],
    [0, 0n],
    [5n, 5n],
  ])('reads %s', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it.each([
    ['2X', '"2X" is not a size'],
    ['1.5G', '"1.5G" is not a size'],
    ['-1G', '"-1G" is not a size'],
    ['G', '"G" is not a size'],
    ['2iB', '"2iB" is not a size'],
    ['', '"" is not a size'],
    ['16E', '"16E" does not fit in 64 bits'],
    ['0x10000000000000000', 'does not fit in 64 bits'],
    [-1, '-1 is negative'],
    [1.5, '1.5 is not a whole number of bytes'],
    [-1n, '-1n is negative'],
  ])('refuses %s', (input, problem) => {
    expect(() => parseSize(input as string)).toThrow(ConfigError);
    expect(() => parseSize(input as string)).toThrow(problem);
  });

  it('says how to write a size and which field was wrong', () => {
    expect(() => parseSize('2X', 'ram')).toThrow(
      'machine description: ram: "2X" is not a size; write a number with an optional K/M/G/T/P/E suffix, e.g. "2G"',
    );
    expect(() => parseSize('0x10G', 'maxmem')).toThrow(/hexadecimal sizes in bytes without a suffix/);
  });
});

describe('formatSize and formatHex', () => {
  it('uses the largest unit that divides exactly', () => {
    expect(formatSize(2n << 30n)).toBe('2 GiB');
    expect(formatSize(0x40000000n)).toBe('1 GiB');
    expect(formatSize(3n << 20n)).toBe('3 MiB');
    expect(formatSize(1536n)).toBe('1536 B');
    expect(formatSize(1536n << 10n)).toBe('1536 KiB');
    expect(formatSize(0n)).toBe('0 B');
    expect(formatSize(15n << 60n)).toBe('15 EiB');
  });

  it('round-trips through parseSize', () => {
    for (const bytes of [1n, 4096n, 0x80000000n, 3n << 40n, 0xffffffffffffffffn]) {
      expect(parseSize(formatSize(bytes).replace(' ', ''))).toBe(bytes);
    }
  });

  it('writes 64-bit values as 0x-prefixed hex', () => {
    expect(formatHex(0x800000000000000n)).toBe('0x800000000000000');
  });
});

describe('sizeSchema and hexSchema', () => {
  it('produce bigints', () => {
    expect(sizeSchema.parse('1G')).toBe(1n << 30n);
    expect(sizeSchema.parse(4096)).toBe(4096n);
    expect(hexSchema.parse('0x800000000000000')).toBe(0x800000000000000n);
    expect(hexSchema.parse('4096')).toBe(4096n);
    expect(hexSchema.parse(16)).toBe(16n);
  });

  it('report problems as issues', () => {
    const size = sizeSchema.safeParse('2X');
    expect(size.success).toBe(false);
    expect(size.error!.issues[0]!.message).toBe('"2X" is not a size');
    expect(hexSchema.safeParse('0xfoo').error!.issues[0]!.message).toBe('"0xfoo" is not a 64-bit value');
    expect(hexSchema.safeParse('0x1ffffffffffffffff').error!.issues[0]!.message).toMatch(
      /does not fit in 64 bits/,
    );
    expect(hexSchema.safeParse(true).success).toBe(false);
  });
});

/** A registry with a PHB section like the spapr-pci plugin's. */
function registryWithPhbs() {
  const registry = new DescriptionSchemaRegistry();
  const phb = z.strictObject({
    id: z.string(),
    index: z.number().int().nonnegative(),
    dma_win_size: sizeSchema.optional(),
    dma64_win_addr: hexSchema.optional(),
  });
  registry.registerSection('phbs', z.array(phb).default([]), 'spapr-pci');
  return registry;
}

describe('parseDescription', () => {
  it('validates the base keys and plugin sections, producing bigints', () => {
    const description = parseDescription(
      JSON.stringify({
        type: 'pseries-7.2',
        ram: '2G',
        maxmem: '4G',
        phbs: [{ id: 'phb0', index: 0, dma_win_size: '1G', dma64_win_addr: '0x800000000000000' }],
        plugins: { 'spapr-pci': { ddw: true } },
      }),
      registryWithPhbs(),
    );
    expect(description).toEqual({
      type: 'pseries-7.2',
      ram: 2n << 30n,
      maxmem: 4n << 30n,
      phbs: [{ id: 'phb0', index: 0, dma_win_size: 1n << 30n, dma64_win_addr: 0x800000000000000n }],
      plugins: { 'spapr-pci': { ddw: true } },
    });
  });

  it('lets a section default itself when the document leaves it out', () => {
    expect(parseDescription({ ram: 1024 }, registryWithPhbs())).toEqual({ ram: 1024n, phbs: [] });
  });

  it('names every failing field in one error', () => {
    const attempt = () =>
      parseDescription(
        {
          ram: '2X',
          phbs: [
            { id: 'phb0', index: 0 },
            { id: 'phb1', index: -1, dma_win_size: 'big' },
          ],
        },
        registryWithPhbs(),
      );
    expect(attempt).toThrow(ConfigError);
    let error: ConfigError | undefined;
    try {
      attempt();
    } catch (e) {
      error = e as ConfigError;
    }
    expect(error!.issues.map((i) => i.field)).toEqual(['ram', 'phbs[1].index', 'phbs[1].dma_win_size']);
    expect(error!.message).toContain(
      'ram: "2X" is not a size; write a number with an optional K/M/G/T/P/E suffix, e.g. "2G"',
    );
    expect(error!.message).toContain('phbs[1].dma_win_size: "big" is not a size');
  });

  it('requires ram', () => {
    expect(() => parseDescription({}, new DescriptionSchemaRegistry())).toThrow(
      /ram: is required; give a size/,
    );
  });

  it('refuses unknown top-level keys, listing the known ones', () => {
    expect(() => parseDescription({ ram: '1G', phb: [] }, registryWithPhbs())).toThrow(
      'machine description: phb: is not a known section; known sections: type, ram, maxmem, name, plugins, phbs',
    );
    expect(() =>
      parseDescription({ ram: '1G', phbs: [{ id: 'a', index: 0, ddw: 1 }] }, registryWithPhbs()),
    ).toThrow(/phbs\[0\]\.ddw: is not a known field/);
  });

  it('refuses maxmem below ram', () => {
    expect(() => parseDescription({ ram: '4G', maxmem: '2G' }, new DescriptionSchemaRegistry())).toThrow(
      'machine description: maxmem: 2 GiB is less than ram (4 GiB); make maxmem at least ram, or leave it out',
    );
  });

  it('refuses what is not a JSON object', () => {
    const registry = new DescriptionSchemaRegistry();
    expect(() => parseDescription('{ ram: ', registry)).toThrow(/\(document\): is not valid JSON/);
    expect(() => parseDescription('[]', registry)).toThrow(/\(document\): is not a JSON object/);
  });
});

describe('DescriptionSchemaRegistry', () => {
  it('refuses a section twice, a base key, or a bad key, naming the plugin', () => {
    const registry = registryWithPhbs();
    expect(() => registry.registerSection('phbs', z.unknown(), 'other')).toThrow(
      /plugin "other" registers description section "phbs", which plugin "spapr-pci" already registered/,
    );
    expect(() => registry.registerSection('ram', z.unknown(), 'other')).toThrow(PluginError);
    expect(() => registry.registerSection('has space', z.unknown(), 'other')).toThrow(PluginError);
    expect(registry.sections().map((s) => [s.key, s.owner])).toEqual([['phbs', 'spapr-pci']]);
    expect(registry.knownKeys()).toEqual(['type', 'ram', 'maxmem', 'name', 'plugins', 'phbs']);
  });
});

describe('formatFieldPath', () => {
  it('writes zod paths as dotted paths with indices', () => {
    expect(formatFieldPath(['phbs', 0, 'dma_win_size'])).toBe('phbs[0].dma_win_size');
    expect(formatFieldPath([])).toBe('(document)');
  });
});

describe('mergeDescription', () => {
  const preset = {
    type: 'pseries-7.2',
    ram: '2G',
    plugins: { 'spapr-pci': { ddw: true, pgsz: '0x1211000' } },
    phbs: [
      { id: 'phb0', index: 0, dma_win_size: '1G' },
      { id: 'phb1', index: 1 },
    ],
    tags: ['a', 'b'],
  };

  it('merges objects deeply and arrays of identified objects by id', () => {
    const merged = mergeDescription(preset, {
      ram: '4G',
      plugins: { 'spapr-pci': { pgsz: '0x11000' } },
      phbs: [
        { id: 'phb0', dma_win_size: '2G' },
        { id: 'phb1', remove: true },
        { id: 'phb2', index: 2 },
      ],
      tags: ['c'],
    });
    expect(merged).toEqual({
      type: 'pseries-7.2',
      ram: '4G',
      plugins: { 'spapr-pci': { ddw: true, pgsz: '0x11000' } },
      phbs: [
        { id: 'phb0', index: 0, dma_win_size: '2G' },
        { id: 'phb2', index: 2 },
      ],
      tags: ['c'],
    });
  });

  it('leaves both inputs untouched', () => {
    const overlay = { phbs: [{ id: 'phb0', index: 5 }] };
    const before = JSON.stringify(preset);
    const merged = mergeDescription(preset, overlay);
    (merged.phbs[0] as { index: number }).index = 99;
    expect(JSON.stringify(preset)).toBe(before);
    expect(overlay).toEqual({ phbs: [{ id: 'phb0', index: 5 }] });
  });

  it('replaces arrays that are not all identified, and lets null replace', () => {
    expect(mergeDescription({ list: [{ id: 'a' }] }, { list: [{ name: 'x' }] })).toEqual({
      list: [{ name: 'x' }],
    });
    expect(mergeDescription({ list: [{ id: 'a' }] }, { list: [] })).toEqual({ list: [] });
    expect(mergeDescription({ maxmem: '4G' }, { maxmem: null })).toEqual({ maxmem: null });
  });

  it('refuses to remove an entry the preset does not have', () => {
    expect(() => mergeDescription(preset, { phbs: [{ id: 'phb9', remove: true }] })).toThrow(
      /phbs\[0\]: is marked remove, but there is no entry with id "phb9" to remove; use one of the ids "phb0", "phb1"/,
    );
  });

  it("names an overlay's entries by the overlay's own index, and refuses an id given twice", () => {
    expect(() =>
      mergeDescription(preset, {
        phbs: [{ id: 'new', index: 5 }, { id: 'phb1', remove: true }, { id: 'new' }],
      }),
    ).toThrow(/phbs\[2\]\.id: duplicate ID "new" \(phbs\[0\] has it too\)/);
    expect(() => mergeDescription(preset, { phbs: [{ id: 'x' }, { id: 'gone', remove: true }] })).toThrow(
      /^machine description: phbs\[1\]: is marked remove/,
    );
  });
});
