import { ConfigError, DescriptionSchemaRegistry, parseDescription } from '@ddw/machine';
import type { HostIommuConfig } from '@ddw/vfio-common';
import { describe, expect, it } from 'vitest';
import { DEFAULT_HOST_CONFIG, formatHostConfig, hostConfigSchema, parseHostOptions } from '../src/index.js';

const K64 = 0x10000n;
const GiB = 1n << 30n;

/** The ConfigError parseHostOptions throws for `text`. */
function refusal(text: string, base?: HostIommuConfig): ConfigError {
  try {
    parseHostOptions(text, base);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`"${text}" was accepted`);
}

describe('parseHostOptions', () => {
  it('gives the defaults (a PowerNV POWER9 host with 64K pages) for an empty string', () => {
    expect(parseHostOptions('')).toEqual(DEFAULT_HOST_CONFIG);
    expect(parseHostOptions(' , ')).toEqual(DEFAULT_HOST_CONFIG);
    expect(parseHostOptions('')).not.toBe(DEFAULT_HOST_CONFIG);
  });

  it('reads the documented example', () => {
    expect(parseHostOptions('type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5')).toEqual(
      DEFAULT_HOST_CONFIG,
    );
  });

  it('type: v1 or v2', () => {
    expect(parseHostOptions('type=v1').type).toBe('v1');
    expect(parseHostOptions('type=V2').type).toBe('v2');
  });

  it('page: the host page size; RAM on ordinary pages follows it', () => {
    expect(parseHostOptions('page=4K')).toMatchObject({ pageSize: 0x1000n, ramPageSize: 0x1000n });
    expect(parseHostOptions('page=0x10000')).toMatchObject({ pageSize: K64, ramPageSize: K64 });
    // A hugetlb RAM page size from the base stays.
    const huge = { ...DEFAULT_HOST_CONFIG, ramPageSize: 0x1000000n };
    expect(parseHostOptions('page=4K', huge)).toMatchObject({ pageSize: 0x1000n, ramPageSize: 0x1000000n });
  });

  it('pgsizes: a hex or decimal bitmap, or a list of sizes', () => {
    expect(parseHostOptions('pgsizes=0x11000').pgSizes).toBe(0x11000n);
    expect(parseHostOptions('pgsizes=69632').pgSizes).toBe(0x11000n);
    expect(parseHostOptions('pgsizes=4K|64K|16M|256M').pgSizes).toBe(0x11011000n);
  });

  it('windows and levels', () => {
    expect(parseHostOptions('windows=1,levels=1')).toMatchObject({ maxWindows: 1, levels: 1 });
    expect(parseHostOptions('windows=2,levels=3')).toMatchObject({ maxWindows: 2, levels: 3 });
  });

  it('dma32: SIZE, or START+SIZE', () => {
    expect(parseHostOptions('dma32=1G')).toMatchObject({ dma32WindowStart: 0n, dma32WindowSize: GiB });
    expect(parseHostOptions('dma32=0x80000000+0x40000000')).toMatchObject({
      dma32WindowStart: 0x80000000n,
      dma32WindowSize: GiB,
    });
    expect(parseHostOptions('dma32=0').dma32WindowSize).toBe(0n);
  });

  it('memlock: a size or unlimited', () => {
    expect(parseHostOptions('memlock=512M').memlockLimit).toBe(512n << 20n);
    expect(parseHostOptions('memlock=0').memlockLimit).toBe(0n);
    expect(
      parseHostOptions('memlock=unlimited', { ...DEFAULT_HOST_CONFIG, memlockLimit: GiB }).memlockLimit,
    ).toBe(undefined);
  });

  it('rampage and unregister', () => {
    expect(parseHostOptions('rampage=16M').ramPageSize).toBe(0x1000000n);
    expect(parseHostOptions('rampage=1G,unregister=ok')).toMatchObject({
      ramPageSize: GiB,
      unregisterWhileMapped: 'ok',
    });
    expect(parseHostOptions('unregister=ebusy').unregisterWhileMapped).toBe('ebusy');
  });

  it('applies over the base it is given', () => {
    const base = parseHostOptions('type=v1,memlock=1G');
    expect(parseHostOptions('levels=2', base)).toMatchObject({ type: 'v1', memlockLimit: GiB, levels: 2 });
  });

  it('refuses an unknown option, naming it and listing the known ones', () => {
    const e = refusal('type=v2,pages=64K');
    expect(e.field).toBe('--host pages');
    expect(e.subject).toBe('host IOMMU options');
    expect(e.message).toContain('--host pages');
    expect(e.message).toContain('type, page, pgsizes, windows, levels, dma32, memlock, rampage, unregister');
  });

  it.each([
    ['type=v3', '--host type', 'v1 or v2'],
    ['page=0x3000', '--host page', 'not a power of two'],
    ['page=2K', '--host page', 'not a powerpc page size'],
    ['page=1M', '--host page', 'not a powerpc page size'],
    ['page=lots', '--host page', 'not a size'],
    ['pgsizes=0', '--host pgsizes', 'no page size'],
    ['pgsizes=0x1010000', '--host pgsizes', 'add 0x1000: 0x1011000'],
    ['pgsizes=0x1800', '--host pgsizes', 'below 4K'],
    ['pgsizes=4K|3K', '--host pgsizes', 'not a power of two'],
    ['pgsizes=0x1000000000001000', '--host pgsizes', '2^60'],
    ['windows=3', '--host windows', '1 or 2'],
    ['windows=two', '--host windows', 'not a whole number'],
    ['levels=0', '--host levels', 'from 1 to 5'],
    ['levels=6', '--host levels', 'from 1 to 5'],
    ['dma32=3G', '--host dma32', 'not a power of two'],
    ['dma32=0x80000000+4G', '--host dma32', 'above 4G'],
    ['dma32=0x800+1M', '--host dma32', 'not 4K-aligned'],
    ['memlock=plenty', '--host memlock', 'not a size'],
    ['rampage=32K', '--host rampage', 'below the host page size'],
    ['rampage=3M', '--host rampage', 'not a power of two'],
    ['rampage=32G', '--host rampage', 'above 16G'],
    ['unregister=maybe', '--host unregister', 'ebusy'],
    ['levels', '--host levels', 'has no value'],
    ['levels=2,levels=3', '--host levels', 'more than once'],
  ])('refuses %s, naming %s', (text, field, words) => {
    const e = refusal(text);
    expect(e.field).toBe(field);
    expect(e.subject).toBe('host IOMMU options');
    expect(e.message).toContain(field);
    expect(e.message).toContain(words);
  });

  it('reports every bad option at once', () => {
    const e = refusal('page=3K,levels=9,bogus=1');
    expect(e.issues.map((i) => i.field)).toEqual(['--host bogus', '--host page', '--host levels']);
    expect(e.message).toContain('3 problems');
    const checked = refusal('page=0x3000,levels=9');
    expect(checked.issues.map((i) => i.field)).toEqual(['--host page', '--host levels']);
  });
});

describe('formatHostConfig', () => {
  it('spells out every option of the defaults', () => {
    expect(formatHostConfig(DEFAULT_HOST_CONFIG)).toBe(
      'type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5,dma32=0x0+2G,memlock=unlimited,rampage=64K,unregister=ebusy',
    );
  });

  it('reads back to the same configuration', () => {
    const configs = [
      DEFAULT_HOST_CONFIG,
      parseHostOptions('type=v1,page=4K,pgsizes=0x1000,windows=1,levels=1,dma32=0x80000000+1G,memlock=12345'),
      parseHostOptions('rampage=16M,unregister=ok,memlock=3G,dma32=0'),
    ];
    for (const config of configs) expect(parseHostOptions(formatHostConfig(config))).toEqual(config);
  });
});

describe('hostConfigSchema (the "host" section of a machine description)', () => {
  function describeWith(host: unknown) {
    const registry = new DescriptionSchemaRegistry();
    registry.registerSection('host', hostConfigSchema, 'host-linux');
    return parseDescription({ ram: '4G', ...(host === undefined ? {} : { host }) }, registry);
  }

  it('gives the defaults when the section is missing or empty', () => {
    expect(describeWith(undefined).host).toEqual(DEFAULT_HOST_CONFIG);
    expect(describeWith({}).host).toEqual(DEFAULT_HOST_CONFIG);
  });

  it('reads every field', () => {
    expect(
      describeWith({
        type: 'v2',
        page: '64K',
        pgsizes: '0x1011000',
        windows: 2,
        levels: 5,
        dma32: { start: '0x0', size: '2G' },
        memlock: 'unlimited',
        rampage: '16M',
        unregister: 'ebusy',
      }).host,
    ).toEqual({ ...DEFAULT_HOST_CONFIG, ramPageSize: 0x1000000n });
    expect(
      describeWith({ type: 'v1', page: 4096, windows: 1, levels: 2, dma32: { size: '1G' }, memlock: '1G' })
        .host,
    ).toEqual({
      ...DEFAULT_HOST_CONFIG,
      type: 'v1',
      pageSize: 0x1000n,
      ramPageSize: 0x1000n,
      maxWindows: 1,
      levels: 2,
      dma32WindowSize: GiB,
      memlockLimit: GiB,
    });
  });

  it('names the failing field under "host"', () => {
    expect(() => describeWith({ page: '3K' })).toThrow(
      /host\.page: 3 KiB is not a power of two; use 4K or 64K/,
    );
    expect(() => describeWith({ levels: 7 })).toThrow(/host\.levels: 7 is not a number of TCE table levels/);
    expect(() => describeWith({ memlock: 'lots' })).toThrow(
      /host\.memlock: "lots" is neither a size nor "unlimited"/,
    );
    expect(() => describeWith({ pgsizes: 'x' })).toThrow(/host\.pgsizes/);
    expect(() => describeWith({ paeg: '4K' })).toThrow(/host\.paeg: is not a known field/);
  });
});
