// What both file formats share: the preamble, the stream markers, the JSON index (a version 1
// file's "header") and the machine identity it carries.

import { formatHex } from '@ddw/memory';
import type { MachineDescription } from '../description.js';
import { messageOf } from '../errors.js';
import { headerError } from './errors.js';
import { NAME_PATTERN } from './registry.js';

/** "DDWS": the first four bytes of every snapshot file. */
export const MAGIC = 0x44445753;
/** Magic and u32 format version: the bytes every format starts with. */
export const PREAMBLE_BYTES = 8;
export const QEMU_VM_EOF = 0x01;
export const QEMU_VM_SECTION_FULL = 0x04;
export const QEMU_VM_SUBSECTION = 0x05;
export const QEMU_VM_SECTION_FOOTER = 0x7e;

/** What snapshotInfo() reports. */
export interface SnapshotInfo {
  readonly formatVersion: number;
  readonly machine: {
    readonly type: string | null;
    readonly ram: bigint;
    readonly maxmem: bigint | null;
  };
  readonly sections: readonly {
    readonly name: string;
    readonly instanceId: number;
    readonly version: number;
    /** Bytes of the section in the file. */
    readonly size: number;
    /** Where the section's bytes start in the file. */
    readonly offset: number;
  }[];
}

/** A section as the index lists it, placed in the file. */
export interface IndexSection {
  name: string;
  instanceId: number;
  version: number;
  size: number;
  crc: number;
  offset: number;
}

/** A file whose preamble, index and size check out; the sections are only placed, not read. */
export interface ParsedFile {
  formatVersion: number;
  machine: SnapshotInfo['machine'];
  sections: IndexSection[];
}

/** The description fields a snapshot identifies its machine by. */
export type IdentifyingDescription = Pick<MachineDescription, 'type' | 'ram' | 'maxmem'>;

export function machineIdentity(d: IdentifyingDescription): SnapshotInfo['machine'] {
  return { type: d.type ?? null, ram: d.ram, maxmem: d.maxmem ?? null };
}

export function hexOrNull(v: bigint | null): string | null {
  return v === null ? null : formatHex(v);
}

/** The JSON index of a machine's identity with `sections` (each { name, instanceId, version, size, crc }). */
export function encodeIndex(
  identity: SnapshotInfo['machine'],
  sections: readonly Record<string, unknown>[],
): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify({
      machine: { type: identity.type, ram: hexOrNull(identity.ram), maxmem: hexOrNull(identity.maxmem) },
      sections,
    }),
  );
}

function parseHex(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(v))
    throw headerError(`${what} is not a 64-bit hex string`);
  return BigInt(v);
}

function parseU32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw headerError(`${what} is not a u32`);
  return v;
}

function parseU53(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw headerError(`${what} is not a size (an integer from 0 to 2^53 - 1)`);
  return v;
}

/**
 * Parses the JSON index (`what`: "header" in a version 1 file, "index" in a version 2 one): the
 * machine's identity and the sections, not yet placed (offset 0). Section sizes are u32 in a
 * version 1 file, up to 2^53 - 1 in a version 2 one.
 */
export function parseIndex(
  bytes: Uint8Array,
  what: 'header' | 'index',
  sizes: 'u32' | 'safe',
): Pick<ParsedFile, 'machine' | 'sections'> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw headerError(`the ${what} is not JSON: ${messageOf(error)}`);
  }
  if (json === null || typeof json !== 'object') throw headerError(`the ${what} is not an object`);
  const { machine, sections } = json as { machine?: unknown; sections?: unknown };
  if (machine === null || typeof machine !== 'object') throw headerError('machine is missing');
  const m = machine as { type?: unknown; ram?: unknown; maxmem?: unknown };
  if (m.type !== null && typeof m.type !== 'string') throw headerError('machine.type is not a string');
  const identity = {
    type: m.type as string | null,
    ram: parseHex(m.ram, 'machine.ram'),
    maxmem: m.maxmem === null ? null : parseHex(m.maxmem, 'machine.maxmem'),
  };
  if (!Array.isArray(sections)) throw headerError('sections is not a list');
  const list: IndexSection[] = [];
  const seen = new Set<string>();
  for (const [i, s] of sections.entries()) {
    if (s === null || typeof s !== 'object') throw headerError(`sections[${i}] is not an object`);
    const e = s as Record<string, unknown>;
    if (typeof e.name !== 'string' || !NAME_PATTERN.test(e.name))
      throw headerError(`sections[${i}].name is bad`);
    const entry: IndexSection = {
      name: e.name,
      instanceId: parseU32(e.instanceId, `sections[${i}].instanceId`),
      version: parseU32(e.version, `sections[${i}].version`),
      size:
        sizes === 'u32' ? parseU32(e.size, `sections[${i}].size`) : parseU53(e.size, `sections[${i}].size`),
      crc: parseU32(e.crc, `sections[${i}].crc`),
      offset: 0,
    };
    const key = `${entry.instanceId} ${entry.name}`;
    if (seen.has(key))
      throw headerError(`section "${entry.name}" instance ${formatHex(entry.instanceId)} appears twice`);
    seen.add(key);
    list.push(entry);
  }
  return { machine: identity, sections: list };
}
