import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import {
  DescriptionSchemaRegistry,
  MAX_DESCRIPTION_DEPTH,
  mergeDescription,
  parseDescription,
  qemuIdSchema,
} from '../src/description.js';
import { ConfigError } from '../src/errors.js';

/** The ConfigError `fn` throws (fails the test if it throws anything else or nothing). */
function refusal(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('accepted');
}

function registry(): DescriptionSchemaRegistry {
  const r = new DescriptionSchemaRegistry();
  r.registerSection('extra', z.unknown().optional(), 'test');
  return r;
}

/** `[[[...]]]` or `{"a":{"a":...}}`, `depth` levels, as JSON text (never built recursively). */
function deepJson(depth: number, kind: 'array' | 'object'): string {
  return kind === 'array'
    ? `${'['.repeat(depth)}${']'.repeat(depth)}`
    : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

describe('a description that is not a plain object', () => {
  const notObjects: [string, unknown][] = [
    ['an array', []],
    ['null', null],
    ['a number', 42],
    ['a string', 'ram=2G'],
    ['a class instance', new Map()],
  ];

  it.each(notObjects.filter(([, v]) => typeof v !== 'string'))(
    'parseDescription refuses %s on (document)',
    (_, value) => {
      const error = refusal(() => parseDescription(value, registry()));
      expect(error.field).toBe('(document)');
      expect(error.message).toMatch(/^machine description: \(document\): is not a JSON object/);
    },
  );

  it.each([['[]'], ['null'], ['42'], ['"2G"']])('parseDescription refuses the JSON text %s', (text) => {
    expect(refusal(() => parseDescription(text, registry())).field).toBe('(document)');
  });

  it.each(notObjects)(
    'mergeDescription refuses %s as the overlay instead of yielding the preset',
    (_, value) => {
      const preset = { ram: '2G', phbs: [{ id: 'pci', index: 0 }] };
      const error = refusal(() => mergeDescription(preset, value));
      expect(error.field).toBe('(document)');
      expect(error.message).toContain('is not a JSON object');
    },
  );

  it('mergeDescription refuses a preset that is not an object', () => {
    expect(refusal(() => mergeDescription([] as unknown, { ram: '2G' })).subject).toBe('preset description');
  });
});

describe('reserved JavaScript keys', () => {
  it.each(['__proto__', 'constructor', 'prototype'])(
    'refuses %s at the top and deep inside, naming the path',
    (key) => {
      const top = `{"ram":"2G","${key}":{"polluted":true}}`;
      expect(refusal(() => parseDescription(top, registry())).field).toBe(key);
      const deep = `{"ram":"2G","extra":{"list":[{"x":1},{"${key}":{"polluted":true}}]}}`;
      const error = refusal(() => parseDescription(deep, registry()));
      expect(error.field).toBe(`extra.list[1].${key}`);
      expect(error.message).toBe(
        `machine description: extra.list[1].${key}: is a reserved JavaScript name, not a description key; remove it`,
      );
    },
  );

  it('never merges through __proto__: no prototype pollution, the key is refused', () => {
    const overlay = JSON.parse('{"plugins":{"__proto__":{"polluted":true}}}');
    expect(Object.hasOwn(overlay.plugins, '__proto__')).toBe(true);
    expect(refusal(() => mergeDescription({ ram: '2G', plugins: {} }, overlay)).field).toBe(
      'plugins.__proto__',
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('accepts a key that merely contains the reserved words', () => {
    expect(
      parseDescription({ ram: '2G', extra: { constructorName: 1, proto: 2 } }, registry()),
    ).toMatchObject({
      extra: { constructorName: 1, proto: 2 },
    });
  });
});

describe('nesting depth', () => {
  it.each(['array', 'object'] as const)(
    'refuses a 100000-deep %s with a ConfigError, not a stack overflow',
    (kind) => {
      const inner = deepJson(100_000, kind);
      for (const run of [
        () => parseDescription(`{"ram":"2G","extra":${inner}}`, registry()),
        () => mergeDescription({ ram: '2G' }, JSON.parse(`{"extra":${inner}}`)),
      ]) {
        const error = refusal(run);
        expect(error.message).toBe(
          `machine description: extra: nesting deeper than ${MAX_DESCRIPTION_DEPTH} levels; flatten it: a machine description needs only a few levels`,
        );
      }
    },
  );

  it('refuses a deep document at the top level on (document)', () => {
    expect(refusal(() => parseDescription(deepJson(100_000, 'array'), registry())).field).toBe('(document)');
  });

  it('accepts 64 levels and refuses 65', () => {
    // The document is level 1; the objects under "extra" are levels 2 and down.
    const ok = JSON.parse(`{"ram":"2G","extra":${deepJson(MAX_DESCRIPTION_DEPTH - 1, 'object')}}`);
    expect(() => parseDescription(ok, registry())).not.toThrow();
    const tooDeep = JSON.parse(`{"ram":"2G","extra":${deepJson(MAX_DESCRIPTION_DEPTH, 'object')}}`);
    expect(refusal(() => parseDescription(tooDeep, registry())).problem).toBe(
      `nesting deeper than ${MAX_DESCRIPTION_DEPTH} levels`,
    );
  });

  it('refuses a cyclic object built in code instead of looping', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(refusal(() => parseDescription({ ram: '2G', extra: cyclic }, registry())).problem).toMatch(
      /nesting/,
    );
  });

  it('walks shared sub-objects once, not once per path', () => {
    // 40 levels, each referring twice to the next: 2^40 paths, 41 distinct objects.
    let node: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 40; i++) node = { a: node, b: node };
    expect(() => parseDescription({ ram: '2G', extra: node }, registry())).not.toThrow();
  });
});

describe('RAM', () => {
  it('refuses 0 bytes on ram', () => {
    const error = refusal(() => parseDescription({ ram: '0' }, registry()));
    expect(error.message).toBe('machine description: ram: RAM size is 0; give the guest some RAM, e.g. "2G"');
  });

  it('refuses more than ddw can back', () => {
    expect(refusal(() => parseDescription({ ram: '8P' }, registry())).message).toBe(
      'machine description: ram: 8 PiB is more than the 4 PiB of RAM ddw can back; give at most 4 PiB',
    );
  });
});

describe('qemuIdSchema', () => {
  it.each(['nic0', 'a', 'pci.1', 'host_dev-2', 'Z'])('accepts %s', (id) => {
    expect(qemuIdSchema.parse(id)).toBe(id);
  });

  it.each(['my nic', '0nic', '-a', '', 'nic/0', 'é'])('refuses %j as QEMU does', (id) => {
    const result = qemuIdSchema.safeParse(id);
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toBe(
      `Parameter 'id' expects an identifier, got ${JSON.stringify(id)}`,
    );
  });
});
