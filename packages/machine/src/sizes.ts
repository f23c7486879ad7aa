import { UINT64_MAX, UINT64_SPAN } from '@ddw/memory';
import { ConfigError } from './errors.js';

/**
 * Sizes in bytes, read and written. Two grammars on purpose: a machine description's (parseSize:
 * "2G", "512MiB", whole numbers only) and QEMU's command line's (parseQemuSize: qemu_strtosz, with
 * fractions and a default unit). Both use the same binary units as the formatters.
 */

/** The binary units, largest first: a letter as both grammars read them, "<letter>iB" for people. */
const BINARY_UNITS = [
  { letter: 'E', shift: 60 },
  { letter: 'P', shift: 50 },
  { letter: 'T', shift: 40 },
  { letter: 'G', shift: 30 },
  { letter: 'M', shift: 20 },
  { letter: 'K', shift: 10 },
] as const;

/** Unit letters, lower case, to their shift: both grammars read them case-insensitively. */
const UNIT_SHIFT: Readonly<Record<string, bigint>> = Object.fromEntries(
  BINARY_UNITS.map(({ letter, shift }) => [letter.toLowerCase(), BigInt(shift)]),
);

/** Page sizes are named up to G: the units past it would name no page size anyone uses. */
const PAGE_UNITS = BINARY_UNITS.filter(({ shift }) => shift <= 30);

/** Hexadecimal as sizes and description values take it: 0x, any case, no suffix. */
export const HEX_PATTERN = /^0x[0-9a-f]+$/i;
const SIZE_FIX = 'write a number with an optional K/M/G/T/P/E suffix, e.g. "2G"';
const SIZE_PATTERN = /^(\d+)\s*(?:([kmgtpe])(i?b)?|(b))?$/i;

/** A 64-bit value read from description input, or what is wrong with the input and how to fix it. */
export type ParsedU64 = { value: bigint } | { problem: string; fix: string };

/** Description input as its author wrote it: strings quoted, bigints with their `n`. */
export function describeInput(input: unknown): string {
  return typeof input === 'string'
    ? JSON.stringify(input)
    : typeof input === 'bigint'
      ? `${input}n`
      : String(input);
}

/** `value` when it fits in a uint64, else the problem with `input` and `fix`. */
export function checkU64(value: bigint, input: unknown, fix: string): ParsedU64 {
  if (value < 0n) return { problem: `${describeInput(input)} is negative`, fix };
  if (value > UINT64_MAX) return { problem: `${describeInput(input)} does not fit in 64 bits`, fix };
  return { value };
}

/** parseSize without the throw: what a description's size schema reports as an issue. */
export function readSize(input: unknown): ParsedU64 {
  if (typeof input === 'bigint') return checkU64(input, input, SIZE_FIX);
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input)) {
      return {
        problem: `${input} is not a whole number of bytes below 2^53`,
        fix: `${SIZE_FIX}, as a string for large values`,
      };
    }
    return checkU64(BigInt(input), input, SIZE_FIX);
  }
  if (typeof input !== 'string') return { problem: `${describeInput(input)} is not a size`, fix: SIZE_FIX };
  const text = input.trim();
  if (HEX_PATTERN.test(text)) return checkU64(BigInt(text), input, SIZE_FIX);
  const match = SIZE_PATTERN.exec(text);
  if (!match) {
    const fix = text.startsWith('0x')
      ? 'write hexadecimal sizes in bytes without a suffix, e.g. "0x80000000"'
      : SIZE_FIX;
    return { problem: `${describeInput(input)} is not a size`, fix };
  }
  const unit = match[2]?.toLowerCase();
  const bytes = BigInt(match[1]!) << (unit ? UNIT_SHIFT[unit]! : 0n);
  return checkU64(bytes, input, SIZE_FIX);
}

/**
 * A size in bytes: "2G", "512MiB", "64k", "4096", "0x80000000" (units are powers of 1024,
 * case-insensitive, with an optional "B"/"iB"; hexadecimal takes no suffix), or a safe integer.
 * Fractions and negative sizes are refused, and the result must fit in 64 bits.
 * Throws a ConfigError naming `field`.
 */
export function parseSize(input: string | number | bigint, field = 'size'): bigint {
  const parsed = readSize(input);
  if ('problem' in parsed) throw new ConfigError(field, parsed.problem, parsed.fix);
  return parsed.value;
}

/** qemu_strtosz's suffixes: B as well as the binary units. */
const QEMU_SIZE_SUFFIX: Readonly<Record<string, bigint>> = { b: 0n, ...UNIT_SHIFT };

function refuseQemuSize(field: string, problem: string, fix: string): never {
  throw new ConfigError(field, problem, fix, { subject: 'QEMU options' });
}

/**
 * A size as QEMU reads one (qemu_strtosz): decimal with an optional fraction and a one-letter
 * suffix B/K/M/G/T/P/E, or hexadecimal; `defaultShift` applies without a suffix (-m's size is in
 * MiB then, everything else in bytes). Throws a ConfigError about the QEMU options naming `field`.
 */
export function parseQemuSize(text: string, field: string, defaultShift = 0n): bigint {
  if (HEX_PATTERN.test(text)) return BigInt(text) << defaultShift;
  const m = /^(\d+)(?:\.(\d+))?([bkmgtpe])?$/i.exec(text);
  if (!m)
    refuseQemuSize(
      field,
      `"${text}" is not a size`,
      'write a number with an optional K/M/G/T suffix, e.g. 2G',
    );
  const shift = m[3] ? QEMU_SIZE_SUFFIX[m[3].toLowerCase()]! : defaultShift;
  const fraction = m[2] ?? '';
  const scale = 10n ** BigInt(fraction.length);
  const value = (BigInt(m[1]! + fraction) << shift) / scale;
  if ((BigInt(m[1]! + fraction) << shift) % scale !== 0n)
    refuseQemuSize(field, `"${text}" is not a whole number of bytes`, 'use a larger unit');
  if (value >= UINT64_SPAN) refuseQemuSize(field, `"${text}" does not fit in 64 bits`, 'use a smaller size');
  return value;
}

/** The largest binary unit that divides `bytes` exactly: 2^31 -> "2 GiB", 1536 -> "1536 B". */
export function formatSize(bytes: bigint): string {
  if (bytes !== 0n) {
    for (const { letter, shift } of BINARY_UNITS) {
      if (bytes % (1n << BigInt(shift)) === 0n) return `${bytes >> BigInt(shift)} ${letter}iB`;
    }
  }
  return `${bytes} B`;
}

/** A page size for people, from its shift: "16M" for 2^24, "32K" for 2^15, "2^N-byte" past the units. */
export function formatPageShift(shift: number): string {
  for (const { letter, shift: at } of PAGE_UNITS) {
    if (shift >= at && shift < at + 10) return `${2 ** (shift - at)}${letter}`;
  }
  return `2^${shift}-byte`;
}
