import { MAX_RAM_SIZE } from '@ddw/memory';
import * as z from 'zod';
import { ConfigError, type ConfigIssue, PluginError } from './errors.js';
import { checkU64, describeInput, formatSize, HEX_PATTERN, type ParsedU64, readSize } from './sizes.js';

/**
 * Machine descriptions: JSON documents, validated with zod. The kernel owns a few top-level keys
 * (type, ram, maxmem, name, plugins); each plugin registers its own section. Sizes and 64-bit
 * values arrive as strings (JSON numbers lose precision past 2^53) and come out as bigint.
 */

const HEX_FIX = 'write it as a hexadecimal string, e.g. "0x800000000000000"';

function readU64(input: unknown): ParsedU64 {
  if (typeof input === 'bigint') return checkU64(input, input, HEX_FIX);
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input)) return { problem: `${input} is not an exact integer`, fix: HEX_FIX };
    return checkU64(BigInt(input), input, HEX_FIX);
  }
  if (typeof input === 'string' && (HEX_PATTERN.test(input.trim()) || /^\d+$/.test(input.trim()))) {
    return checkU64(BigInt(input.trim()), input, HEX_FIX);
  }
  return { problem: `${describeInput(input)} is not a 64-bit value`, fix: HEX_FIX };
}

function fromParsed(parse: (input: unknown) => ParsedU64) {
  return (input: unknown, ctx: z.RefinementCtx<unknown>): bigint => {
    const parsed = parse(input);
    if ('value' in parsed) return parsed.value;
    ctx.addIssue({ code: 'custom', message: parsed.problem, params: { fix: parsed.fix }, input });
    return z.NEVER;
  };
}

const missing = (what: string) => (issue: { input?: unknown }) =>
  issue.input === undefined ? `is required; give ${/^[aeiou]/i.test(what) ? 'an' : 'a'} ${what}` : undefined;

/** A size string (or a safe integer) in, a bigint byte count out. */
export const sizeSchema = z
  .union([z.string(), z.number(), z.bigint()], { error: missing('size, e.g. "2G"') })
  .transform(fromParsed(readSize));

/** A 64-bit value carried as a hex string (or a safe integer), out as an unsigned bigint. */
export const hexSchema = z
  .union([z.string(), z.number(), z.bigint()], { error: missing('hexadecimal value, e.g. "0x1000"') })
  .transform(fromParsed(readU64));

/** Guest RAM: at least one byte, at most what ddw backs (MAX_RAM_SIZE, 4 PiB). */
const ramSchema = sizeSchema.superRefine((ram, ctx) => {
  if (ram === 0n) {
    ctx.addIssue({
      code: 'custom',
      message: 'RAM size is 0',
      params: { fix: 'give the guest some RAM, e.g. "2G"' },
      input: ram,
    });
  } else if (ram > MAX_RAM_SIZE) {
    ctx.addIssue({
      code: 'custom',
      message: `${formatSize(ram)} is more than the ${formatSize(MAX_RAM_SIZE)} of RAM ddw can back`,
      params: { fix: `give at most ${formatSize(MAX_RAM_SIZE)}` },
      input: ram,
    });
  }
});

/**
 * QEMU's id_wellformed: a letter, then letters, digits, '-', '.' or '_'. What -device id=,
 * -object id= and friends accept.
 */
export const QEMU_ID_PATTERN = /^[A-Za-z][A-Za-z0-9._-]*$/;

/** A device or bus id, refused as QEMU refuses it: "Parameter 'id' expects an identifier". */
export const qemuIdSchema = z.string({ error: missing('id, e.g. "nic0"') }).superRefine((id, ctx) => {
  if (!QEMU_ID_PATTERN.test(id)) {
    ctx.addIssue({
      code: 'custom',
      message: `Parameter 'id' expects an identifier, got ${JSON.stringify(id)}`,
      params: { fix: "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter." },
      input: id,
    });
  }
});

const baseShape = {
  /** Machine type, e.g. "pseries-7.2". */
  type: z.string().optional(),
  ram: ramSchema,
  maxmem: sizeSchema.optional(),
  name: z.string().optional(),
  /** Per-plugin options by plugin name. */
  plugins: z.record(z.string(), z.unknown()).optional(),
};

const BASE_KEYS = Object.keys(baseShape);

export interface MachineDescription {
  type?: string;
  ram: bigint;
  maxmem?: bigint;
  name?: string;
  plugins?: Record<string, unknown>;
  /** Plugin sections, as their schemas produced them. */
  [section: string]: unknown;
}

export interface DescriptionSection {
  readonly key: string;
  readonly owner: string;
  readonly schema: z.ZodType;
}

/**
 * The top-level sections plugins add to the description. A section schema sees `undefined` when
 * the document leaves the section out, so make it `.optional()` or give it a `.default()`.
 */
export class DescriptionSchemaRegistry {
  private readonly sectionMap = new Map<string, DescriptionSection>();

  registerSection(key: string, schema: z.ZodType, owner: string): void {
    if (typeof key !== 'string' || !/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) {
      throw new PluginError(
        owner,
        'invalid',
        `plugin "${owner}" registers a description section named ${JSON.stringify(key)}; use an identifier such as "phbs"`,
      );
    }
    if (BASE_KEYS.includes(key)) {
      throw new PluginError(
        owner,
        'conflict',
        `plugin "${owner}" registers description section "${key}", which the machine itself owns`,
      );
    }
    const existing = this.sectionMap.get(key);
    if (existing) {
      throw new PluginError(
        owner,
        'conflict',
        `plugin "${owner}" registers description section "${key}", which plugin "${existing.owner}" already registered`,
      );
    }
    this.sectionMap.set(key, { key, owner, schema });
  }

  sections(): DescriptionSection[] {
    return [...this.sectionMap.values()];
  }

  /** Every top-level key a description may have. */
  knownKeys(): string[] {
    return [...BASE_KEYS, ...this.sectionMap.keys()];
  }

  /** The whole description's schema: the base keys, every section, nothing else. */
  schema(): z.ZodType<MachineDescription> {
    const shape: Record<string, z.ZodType> = { ...baseShape };
    for (const section of this.sectionMap.values()) shape[section.key] = section.schema;
    return z.strictObject(shape).superRefine((description, ctx) => {
      const { ram, maxmem } = description as { ram?: bigint; maxmem?: bigint };
      if (ram !== undefined && maxmem !== undefined && maxmem < ram) {
        ctx.addIssue({
          code: 'custom',
          path: ['maxmem'],
          message: `${formatSize(maxmem)} is less than ram (${formatSize(ram)})`,
          params: { fix: 'make maxmem at least ram, or leave it out' },
          input: maxmem,
        });
      }
    }) as unknown as z.ZodType<MachineDescription>;
  }
}

/** `phbs[0].dma_win_size` from zod's ['phbs', 0, 'dma_win_size']. */
export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(document)' : out;
}

function issuesOf(error: z.ZodError, knownKeys: readonly string[]): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const issue of error.issues) {
    const path = issue.path as PropertyKey[];
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        issues.push(
          path.length === 0
            ? {
                field: key,
                problem: 'is not a known section',
                fix: `known sections: ${knownKeys.join(', ')}`,
              }
            : {
                field: formatFieldPath([...path, key]),
                problem: 'is not a known field',
                fix: 'check its spelling',
              },
        );
      }
      continue;
    }
    const fix =
      (issue.code === 'custom' ? (issue.params as { fix?: string } | undefined)?.fix : undefined) ??
      // zod's own messages say what is wrong, not what is expected instead: point at the schema.
      (issue.code === 'invalid_type' || issue.code === 'invalid_union' || issue.code === 'invalid_value'
        ? '`ddw schema description` shows the form each field takes'
        : undefined);
    issues.push({ field: formatFieldPath(path), problem: issue.message, ...(fix ? { fix } : {}) });
  }
  return issues;
}

/**
 * Validates a description (a JSON string or already-parsed data) against the base keys and the
 * registered sections. Throws one ConfigError naming every failing field; a document that is not
 * a plain object, nests deeper than MAX_DESCRIPTION_DEPTH or has a `__proto__`, `constructor` or
 * `prototype` key is refused before anything walks it (see checkDocument).
 */
export function parseDescription(input: unknown, registry: DescriptionSchemaRegistry): MachineDescription {
  let data = input;
  if (typeof input === 'string') {
    try {
      data = JSON.parse(input);
    } catch (error) {
      throw new ConfigError('(document)', `is not valid JSON (${(error as Error).message})`, undefined, {
        cause: error,
      });
    }
  }
  checkDocument(data);
  const result = registry.schema().safeParse(data);
  if (!result.success) throw ConfigError.fromIssues(issuesOf(result.error, registry.knownKeys()));
  return result.data;
}

/** How deep a description may nest; real ones need four or five levels. */
export const MAX_DESCRIPTION_DEPTH = 64;

/** Keys that would reach an object's prototype if a merge or a consumer assigned through them. */
const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Throws a ConfigError unless `data` is a plain object, no deeper than MAX_DESCRIPTION_DEPTH
 * levels, with no `__proto__`, `constructor` or `prototype` key at any depth. The walk is
 * iterative, so a hostile document cannot overflow the stack before it is refused; everything
 * that walks a description recursively (zod, merge, clone) runs only after this.
 */
export function checkDocument(data: unknown, subject?: string): asserts data is Record<string, unknown> {
  const options = subject === undefined ? {} : { subject };
  if (!isPlainObject(data)) {
    throw new ConfigError(
      '(document)',
      `is not a JSON object (it is ${describeDocument(data)})`,
      'write the description as { "ram": "2G", ... }',
      options,
    );
  }
  // Depth-first with an explicit stack. A value shared by several parents (possible in data built
  // in code) is walked again only when reached deeper than before: at most once per level.
  const deepest = new Map<object, number>();
  const stack: { value: object; depth: number; path: PropertyKey[] }[] = [
    { value: data, depth: 1, path: [] },
  ];
  while (stack.length > 0) {
    const { value, depth, path } = stack.pop()!;
    if (depth > MAX_DESCRIPTION_DEPTH) {
      throw new ConfigError(
        path.length > 0 ? formatFieldPath(path.slice(0, 1)) : '(document)',
        `nesting deeper than ${MAX_DESCRIPTION_DEPTH} levels`,
        'flatten it: a machine description needs only a few levels',
        options,
      );
    }
    const seen = deepest.get(value);
    if (seen !== undefined && seen >= depth) continue;
    deepest.set(value, depth);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const inner: unknown = value[i];
        if (inner !== null && typeof inner === 'object')
          stack.push({ value: inner, depth: depth + 1, path: [...path, i] });
      }
      continue;
    }
    for (const key of Object.keys(value)) {
      if (FORBIDDEN_KEYS.has(key)) {
        throw new ConfigError(
          formatFieldPath([...path, key]),
          'is a reserved JavaScript name, not a description key',
          'remove it',
          options,
        );
      }
      const inner: unknown = (value as Record<string, unknown>)[key];
      if (inner !== null && typeof inner === 'object')
        stack.push({ value: inner, depth: depth + 1, path: [...path, key] });
    }
  }
}

function describeDocument(data: unknown): string {
  if (data === null) return 'null';
  if (Array.isArray(data)) return 'an array';
  if (typeof data === 'object')
    return `a ${Object.getPrototypeOf(data)?.constructor?.name ?? 'non-plain'} object`;
  if (typeof data === 'string')
    return `the string ${JSON.stringify(data.length > 20 ? `${data.slice(0, 20)}...` : data)}`;
  return `${typeof data} ${describeInput(data)}`;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

type Identified = Record<string, unknown> & { id: string | number };

function isIdentified(value: unknown): value is Identified {
  return isPlainObject(value) && (typeof value.id === 'string' || typeof value.id === 'number');
}

/**
 * `overlay` applied on top of `preset`, neither modified. Plain objects merge key by key. An
 * array whose entries all carry an `id` merges entry by entry with the preset's array of the same
 * kind: a matching id merges into that entry, a new id is appended, and `{ id, remove: true }`
 * deletes the entry. Any other value, arrays included, replaces. Both documents must pass
 * checkDocument (a plain object, bounded depth, no reserved keys), or a ConfigError is thrown on
 * `(document)` or the offending path; the result's keys are own data properties only.
 */
export function mergeDescription<T>(preset: T, overlay: unknown): T {
  checkDocument(preset, 'preset description');
  checkDocument(overlay);
  return mergeAt(preset, overlay, []) as T;
}

/** `target[key] = value` as a data property, never through an inherited setter such as __proto__. */
function defineOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function mergeAt(base: unknown, overlay: unknown, path: PropertyKey[]): unknown {
  if (overlay === undefined) return clone(base);
  if (isPlainObject(base) && isPlainObject(overlay)) {
    const merged: Record<string, unknown> = clone(base) as Record<string, unknown>;
    for (const [key, value] of Object.entries(overlay)) {
      const own = Object.hasOwn(base, key) ? base[key] : undefined;
      defineOwn(merged, key, mergeAt(own, value, [...path, key]));
    }
    return merged;
  }
  if (
    Array.isArray(base) &&
    Array.isArray(overlay) &&
    overlay.length > 0 &&
    base.every(isIdentified) &&
    overlay.every(isIdentified)
  ) {
    return mergeById(base, overlay, path);
  }
  return clone(overlay);
}

function mergeById(
  base: readonly Identified[],
  overlay: readonly Identified[],
  path: PropertyKey[],
): Identified[] {
  const merged = base.map((entry) => clone(entry) as Identified);
  // Paths name the overlay's own entries: `devices[0]` is the first device the user wrote.
  for (const [i, entry] of overlay.entries()) {
    const first = overlay.findIndex((other) => other.id === entry.id);
    if (first < i) {
      throw new ConfigError(
        `${formatFieldPath([...path, i])}.id`,
        `duplicate ID ${JSON.stringify(entry.id)} (${formatFieldPath([...path, first])} has it too)`,
        'give each entry its own id',
      );
    }
    const index = merged.findIndex((candidate) => candidate.id === entry.id);
    const { remove, ...rest } = entry;
    if (remove === true) {
      if (index < 0) {
        throw new ConfigError(
          formatFieldPath([...path, i]),
          `is marked remove, but there is no entry with id ${JSON.stringify(entry.id)} to remove`,
          `use one of the ids ${merged.map((m) => JSON.stringify(m.id)).join(', ') || '(none)'}`,
        );
      }
      merged.splice(index, 1);
    } else if (index >= 0) {
      merged[index] = mergeAt(merged[index], rest, [...path, i]) as Identified;
    } else {
      merged.push(clone(rest) as Identified);
    }
  }
  return merged;
}

function clone(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(clone);
  if (isPlainObject(value)) {
    const copy: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) defineOwn(copy, key, clone(inner));
    return copy;
  }
  return value;
}
