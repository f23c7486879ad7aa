import {
  ConfigError,
  type ConfigIssue,
  formatHex,
  formatSize,
  hexSchema,
  parseSize,
  sizeSchema,
} from '@ddw/machine';
import type { HostIommuConfig, HostIommuType } from '@ddw/vfio-common';
import * as z from 'zod';
import { isPowerOfTwo } from './bit-math.js';

/**
 * The host IOMMU's capabilities as a user writes them: `--host "type=v2,page=64K,..."` on the
 * command line, or the `host` section of a machine description. Both forms go through one set of
 * checks, so they refuse the same things with the same words.
 */

const SUBJECT = 'host IOMMU options';

/** A PowerNV (POWER9, IODA2) host with 64K pages and RAM on 64K pages. */
export const DEFAULT_HOST_CONFIG: HostIommuConfig = {
  type: 'v2',
  pageSize: 0x10000n,
  pgSizes: 0x1011000n,
  maxWindows: 2,
  levels: 5,
  dma32WindowStart: 0n,
  dma32WindowSize: 0x80000000n,
  memlockLimit: undefined,
  ramPageSize: 0x10000n,
  unregisterWhileMapped: 'ebusy',
};

export const HOST_OPTION_KEYS = [
  'type',
  'page',
  'pgsizes',
  'windows',
  'levels',
  'dma32',
  'memlock',
  'rampage',
  'unregister',
  'kvmvfio',
] as const;

export type HostOptionKey = (typeof HOST_OPTION_KEYS)[number];

const K4 = 0x1000n;
/** The largest PAGE_SIZE Linux builds for any powerpc (256K, on 44x). */
const MAX_HOST_PAGE = 0x40000n;
/** The largest hugetlb page ppc64 offers (16G, hash MMU). */
const MAX_RAM_PAGE = 0x400000000n;
/** A page size at or above 2^60 can never make a window (the table may not index bit 60). */
const PGSIZES_LIMIT = 1n << 60n;
const FOUR_GIB = 1n << 32n;

const PAGE_FIX = 'use 4K or 64K, the ppc64 host page sizes';
const PGSIZES_FIX = 'give a bitmap of byte sizes, e.g. 0x1011000 (4K|64K|16M), or a list such as 4K|64K|16M';

/** Option values parsed from text but not yet checked against each other. */
interface HostOptionValues {
  type?: HostIommuType;
  page?: bigint;
  pgsizes?: bigint;
  windows?: number;
  levels?: number;
  dma32?: { start?: bigint; size: bigint };
  memlock?: bigint | 'unlimited';
  rampage?: bigint;
  unregister?: 'ebusy' | 'ok';
  kvmvfio?: boolean;
}

interface KeyIssue {
  key: HostOptionKey;
  problem: string;
  fix?: string;
}

class OptionValueError extends Error {
  constructor(
    readonly problem: string,
    readonly fix?: string,
  ) {
    super(problem);
  }
}

function size(text: string): bigint {
  try {
    return parseSize(text);
  } catch (error) {
    if (error instanceof ConfigError) throw new OptionValueError(error.problem, error.fix);
    throw error;
  }
}

function integer(text: string, fix: string): number {
  if (!/^\d+$/.test(text)) throw new OptionValueError(`${JSON.stringify(text)} is not a whole number`, fix);
  return Number(text);
}

function pgsizesValue(text: string): bigint {
  if (/^0x[0-9a-f]+$/i.test(text) || /^\d+$/.test(text)) return BigInt(text);
  // A list of sizes reads better than a bitmap: "4K|64K|16M".
  let bitmap = 0n;
  for (const part of text.split('|')) {
    const bytes = size(part.trim());
    if (!isPowerOfTwo(bytes)) {
      throw new OptionValueError(
        `${formatSize(bytes)} in ${JSON.stringify(text)} is not a power of two`,
        PGSIZES_FIX,
      );
    }
    bitmap |= bytes;
  }
  return bitmap;
}

function dma32Value(text: string): { start?: bigint; size: bigint } {
  const plus = text.indexOf('+');
  if (plus < 0) return { size: size(text) };
  return { start: size(text.slice(0, plus).trim()), size: size(text.slice(plus + 1).trim()) };
}

/** Parses one option's text into `values`; throws OptionValueError for a malformed value. */
function parseValue(key: HostOptionKey, text: string, values: HostOptionValues): void {
  const lower = text.toLowerCase();
  switch (key) {
    case 'type':
      if (lower !== 'v1' && lower !== 'v2') {
        throw new OptionValueError(`${JSON.stringify(text)} is not an IOMMU type`, 'write v1 or v2');
      }
      values.type = lower;
      return;
    case 'page':
      values.page = size(text);
      return;
    case 'pgsizes':
      values.pgsizes = pgsizesValue(text);
      return;
    case 'windows':
      values.windows = integer(text, 'write 1 or 2');
      return;
    case 'levels':
      values.levels = integer(text, 'write a number from 1 to 5');
      return;
    case 'dma32':
      values.dma32 = dma32Value(text);
      return;
    case 'memlock':
      values.memlock = lower === 'unlimited' ? 'unlimited' : size(text);
      return;
    case 'rampage':
      values.rampage = size(text);
      return;
    case 'unregister':
      if (lower !== 'ebusy' && lower !== 'ok') {
        throw new OptionValueError(
          `${JSON.stringify(text)} is not an UNREGISTER behaviour`,
          'write ebusy (2016 kernels) or ok (2018+ kernels)',
        );
      }
      values.unregister = lower;
      return;
    case 'kvmvfio':
      // KVM_CAP_SPAPR_TCE_VFIO: under -accel kvm the TCE table stays in the kernel with VFIO.
      if (!/^(on|off|yes|no|true|false)$/.test(lower)) {
        throw new OptionValueError(
          `${JSON.stringify(text)} is not on or off`,
          'write kvmvfio=on or kvmvfio=off',
        );
      }
      values.kvmvfio = /^(on|yes|true)$/.test(lower);
      return;
  }
}

/** Applies `values` over `base` and checks the result, naming the option behind each problem. */
function resolveHostOptions(
  values: HostOptionValues,
  base: HostIommuConfig,
): { config: HostIommuConfig; issues: KeyIssue[] } {
  const config: HostIommuConfig = { ...base };
  if (values.type !== undefined) config.type = values.type;
  if (values.page !== undefined) {
    config.pageSize = values.page;
    // RAM on ordinary pages follows the page size; a hugetlb size from the base stays.
    if (
      values.rampage === undefined &&
      (base.ramPageSize === base.pageSize || base.ramPageSize < values.page)
    ) {
      config.ramPageSize = values.page;
    }
  }
  if (values.pgsizes !== undefined) config.pgSizes = values.pgsizes;
  if (values.windows !== undefined) config.maxWindows = values.windows;
  if (values.levels !== undefined) config.levels = values.levels;
  if (values.dma32 !== undefined) {
    config.dma32WindowStart = values.dma32.start ?? 0n;
    config.dma32WindowSize = values.dma32.size;
  }
  if (values.memlock !== undefined)
    config.memlockLimit = values.memlock === 'unlimited' ? undefined : values.memlock;
  if (values.rampage !== undefined) config.ramPageSize = values.rampage;
  if (values.unregister !== undefined) config.unregisterWhileMapped = values.unregister;
  if (values.kvmvfio !== undefined) config.kvmTceVfio = values.kvmvfio;
  return { config, issues: hostConfigIssues(config) };
}

/** Every way `config` is not a host Linux could be; empty when it is fine. */
function hostConfigIssues(config: HostIommuConfig): KeyIssue[] {
  const issues: KeyIssue[] = [];
  const page = config.pageSize;
  if (!isPowerOfTwo(page))
    issues.push({ key: 'page', problem: `${formatSize(page)} is not a power of two`, fix: PAGE_FIX });
  else if (page < K4 || page > MAX_HOST_PAGE) {
    issues.push({ key: 'page', problem: `${formatSize(page)} is not a powerpc page size`, fix: PAGE_FIX });
  }

  const pg = config.pgSizes;
  if (pg <= 0n) issues.push({ key: 'pgsizes', problem: 'has no page size in it', fix: PGSIZES_FIX });
  else if (pg >= PGSIZES_LIMIT) {
    issues.push({
      key: 'pgsizes',
      problem: `${formatHex(pg)} has a page size of 2^60 or more, which no window can use`,
      fix: PGSIZES_FIX,
    });
  } else if ((pg & (K4 - 1n)) !== 0n) {
    issues.push({ key: 'pgsizes', problem: `${formatHex(pg)} has page sizes below 4K`, fix: PGSIZES_FIX });
  } else if ((pg & K4) === 0n) {
    // Linux's platforms always offer 4K, and the default window is built from 4K pages.
    issues.push({
      key: 'pgsizes',
      problem: `${formatHex(pg)} lacks 4K (0x1000), which the default 32-bit window uses`,
      fix: `add 0x1000: ${formatHex(pg | K4)}`,
    });
  }

  if (!Number.isInteger(config.maxWindows) || config.maxWindows < 1 || config.maxWindows > 2) {
    issues.push({
      key: 'windows',
      problem: `${config.maxWindows} is not a number of DMA windows a PHB has`,
      fix: 'write 1 or 2',
    });
  }
  if (!Number.isInteger(config.levels) || config.levels < 1 || config.levels > 5) {
    issues.push({
      key: 'levels',
      problem: `${config.levels} is not a number of TCE table levels PowerNV supports`,
      fix: 'write a number from 1 to 5',
    });
  }

  const start = config.dma32WindowStart;
  const dmaSize = config.dma32WindowSize;
  const DMA32_FIX = 'write SIZE or START+SIZE with 4K-aligned values inside 4G, e.g. 2G or 0x0+0x80000000';
  if (start % K4 !== 0n || dmaSize % K4 !== 0n) {
    issues.push({
      key: 'dma32',
      problem: `${formatHex(start)}+${formatHex(dmaSize)} is not 4K-aligned`,
      fix: DMA32_FIX,
    });
  } else if (start + dmaSize > FOUR_GIB) {
    issues.push({
      key: 'dma32',
      problem: `${formatHex(start)}+${formatSize(dmaSize)} ends above 4G`,
      fix: DMA32_FIX,
    });
  } else if (dmaSize !== 0n && !isPowerOfTwo(dmaSize)) {
    // The v2 default window is a TCE_CREATE of this size, which only takes powers of two.
    issues.push({
      key: 'dma32',
      problem: `${formatSize(dmaSize)} is not a power of two`,
      fix: 'use a power of two such as 1G or 2G (or 0 for a PHB without a 32-bit window)',
    });
  }

  if (config.memlockLimit !== undefined && config.memlockLimit < 0n) {
    issues.push({ key: 'memlock', problem: 'is negative', fix: 'write a size or "unlimited"' });
  }

  const ram = config.ramPageSize;
  // A bad page size has been reported; RAM pages derived from it would only repeat the problem.
  if (issues.some((i) => i.key === 'page')) return issues;
  if (!isPowerOfTwo(ram)) {
    issues.push({
      key: 'rampage',
      problem: `${formatSize(ram)} is not a power of two`,
      fix: 'use the host page size, or a hugetlb size such as 2M, 16M or 1G',
    });
  } else if (ram < page || ram > MAX_RAM_PAGE) {
    issues.push({
      key: 'rampage',
      problem: `${formatSize(ram)} is ${ram < page ? `below the host page size ${formatSize(page)}` : 'above 16G'}`,
      fix: 'use the host page size, or a hugetlb size such as 2M, 16M or 1G',
    });
  }
  return issues;
}

const cliField = (key: string) => `--host ${key}`;

function isOptionKey(key: string): key is HostOptionKey {
  return (HOST_OPTION_KEYS as readonly string[]).includes(key);
}

/**
 * `--host "type=v2,page=64K,pgsizes=0x1011000,windows=2,levels=5"` over `base`. Sizes take
 * K/M/G/T suffixes (powers of 1024) or 0x hex; dma32 is SIZE or START+SIZE; memlock may be
 * "unlimited"; pgsizes is a bitmap or a list such as 4K|64K|16M. Throws one ConfigError naming
 * every bad option.
 */
export function parseHostOptions(text: string, base: HostIommuConfig = DEFAULT_HOST_CONFIG): HostIommuConfig {
  return readHostOptions(text, base).config;
}

/**
 * `--host` text as an overlay on a description's `host` section: only the keys the text gives, in
 * the section's form (64-bit values as hex strings). The text is checked as parseHostOptions
 * checks it, so a bad option is reported as the user wrote it.
 */
export function hostSectionOverlay(text: string): Record<string, unknown> {
  const { values } = readHostOptions(text, DEFAULT_HOST_CONFIG);
  const section: Record<string, unknown> = {};
  const json = (v: unknown): unknown =>
    typeof v === 'bigint'
      ? formatHex(v)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).map(([k, inner]) => [k, json(inner)]))
        : v;
  for (const [key, value] of Object.entries(values)) if (value !== undefined) section[key] = json(value);
  return section;
}

function readHostOptions(
  text: string,
  base: HostIommuConfig,
): { config: HostIommuConfig; values: HostOptionValues } {
  const values: HostOptionValues = {};
  const issues: ConfigIssue[] = [];
  const seen = new Set<string>();
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = (eq < 0 ? item : item.slice(0, eq)).trim().toLowerCase();
    if (!isOptionKey(key)) {
      issues.push({
        field: cliField(key),
        problem: 'is not a host IOMMU option',
        fix: `known options: ${HOST_OPTION_KEYS.join(', ')}`,
      });
      continue;
    }
    if (eq < 0) {
      issues.push({ field: cliField(key), problem: 'has no value', fix: `write ${key}=VALUE` });
      continue;
    }
    if (seen.has(key)) {
      issues.push({ field: cliField(key), problem: 'is given more than once', fix: 'give each option once' });
      continue;
    }
    seen.add(key);
    try {
      parseValue(key, item.slice(eq + 1).trim(), values);
    } catch (error) {
      if (!(error instanceof OptionValueError)) throw error;
      issues.push({ field: cliField(key), problem: error.problem, ...(error.fix ? { fix: error.fix } : {}) });
    }
  }
  const resolved = resolveHostOptions(values, base);
  for (const issue of resolved.issues) {
    const field = cliField(issue.key);
    if (issues.some((i) => i.field === field)) continue;
    issues.push({ field, problem: issue.problem, ...(issue.fix ? { fix: issue.fix } : {}) });
  }
  if (issues.length > 0) throw ConfigError.fromIssues(issues, SUBJECT);
  return { config: resolved.config, values };
}

const UNITS: readonly [string, bigint][] = [
  ['T', 40n],
  ['G', 30n],
  ['M', 20n],
  ['K', 10n],
];

/** The shortest form parseHostOptions reads back exactly: 65536 -> "64K". */
function compactSize(bytes: bigint): string {
  for (const [unit, shift] of UNITS) {
    if (bytes >= 1n << shift && bytes % (1n << shift) === 0n) return `${bytes >> shift}${unit}`;
  }
  return String(bytes);
}

/** The `--host` form of a configuration, every option spelled out (for reports and replays). */
export function formatHostConfig(config: HostIommuConfig): string {
  return [
    `type=${config.type}`,
    `page=${compactSize(config.pageSize)}`,
    `pgsizes=${formatHex(config.pgSizes)}`,
    `windows=${config.maxWindows}`,
    `levels=${config.levels}`,
    `dma32=${formatHex(config.dma32WindowStart)}+${compactSize(config.dma32WindowSize)}`,
    `memlock=${config.memlockLimit === undefined ? 'unlimited' : compactSize(config.memlockLimit)}`,
    `rampage=${compactSize(config.ramPageSize)}`,
    `unregister=${config.unregisterWhileMapped}`,
    // Spelled out only when on, so the reports of hosts without it read as before.
    ...(config.kvmTceVfio ? ['kvmvfio=on'] : []),
  ].join(',');
}

const memlockSchema = z.union([z.string(), z.number(), z.bigint()]).transform((input, ctx) => {
  if (typeof input === 'string' && input.trim().toLowerCase() === 'unlimited') return 'unlimited' as const;
  const parsed = sizeSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  ctx.addIssue({
    code: 'custom',
    message: `${JSON.stringify(input)} is neither a size nor "unlimited"`,
    params: { fix: 'write a size such as "64M", or "unlimited"' },
    input,
  });
  return z.NEVER;
});

const hostSectionSchema = z.strictObject({
  type: z.enum(['v1', 'v2']).optional(),
  page: sizeSchema.optional(),
  pgsizes: hexSchema.optional(),
  windows: z.number().optional(),
  levels: z.number().optional(),
  dma32: z.strictObject({ start: hexSchema.optional(), size: sizeSchema }).optional(),
  memlock: memlockSchema.optional(),
  rampage: sizeSchema.optional(),
  unregister: z.enum(['ebusy', 'ok']).optional(),
  kvmvfio: z.boolean().optional(),
});

/**
 * The `host` section of a machine description, every field optional, e.g.
 * `{"type":"v2","page":"64K","pgsizes":"0x1011000","dma32":{"start":"0x0","size":"2G"},"memlock":"unlimited"}`.
 * Out comes a HostIommuConfig over DEFAULT_HOST_CONFIG; a missing section gives the defaults.
 */
export const hostConfigSchema = hostSectionSchema.optional().transform((section, ctx): HostIommuConfig => {
  const values: HostOptionValues = {};
  if (section) {
    for (const [key, value] of Object.entries(section)) {
      if (value !== undefined) (values as Record<string, unknown>)[key] = value;
    }
  }
  const resolved = resolveHostOptions(values, DEFAULT_HOST_CONFIG);
  for (const issue of resolved.issues) {
    ctx.addIssue({
      code: 'custom',
      path: [issue.key],
      message: issue.problem,
      params: issue.fix ? { fix: issue.fix } : {},
      input: section?.[issue.key],
    });
  }
  return resolved.issues.length > 0 ? z.NEVER : resolved.config;
});
