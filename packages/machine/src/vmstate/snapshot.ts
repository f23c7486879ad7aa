// Saving and loading a machine: writeSnapshot / saveSnapshot, loadSnapshot, snapshotInfo.

import { formatHex } from '@ddw/memory';
import { DdwError, messageOf } from '../errors.js';
import { MachineTokens } from '../tokens.js';
import { crc32 } from './crc.js';
import type { VMStateLoaded } from './description.js';
import { asSnapshotError, headerError, Malformed, PassThrough, SnapshotError } from './errors.js';
import { getFields, putFields } from './fields.js';
import {
  encodeIndex,
  hexOrNull,
  type IdentifyingDescription,
  type IndexSection,
  MAGIC,
  machineIdentity,
  type ParsedFile,
  PREAMBLE_BYTES,
  QEMU_VM_EOF,
  QEMU_VM_SECTION_FOOTER,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SUBSECTION,
  type SnapshotInfo,
} from './file.js';
import { parseV1 } from './format-v1.js';
import { encodeTrailer, parseV2, V2_MIN_BYTES } from './format-v2.js';
import type { VMStateSection, VmstateRegistry } from './registry.js';
import {
  ByteReader,
  SNAPSHOT_READ_PIECE,
  type SnapshotSink,
  type SnapshotSource,
  SourceReader,
  StreamWriter,
} from './streams.js';

/**
 * What saving and loading need of a machine (a Machine is one): its lifecycle state, as only a
 * realized or running machine is saved or loaded, the description fields a snapshot identifies
 * it by, and its vmstate sections.
 */
export interface SnapshotMachine {
  readonly state: string;
  readonly description: IdentifyingDescription;
  /** The machine's services: saving and loading need its migration sections (MachineTokens.Vmstate). */
  get(key: typeof MachineTokens.Vmstate): VmstateRegistry;
}

/** The layout version of the files writeSnapshot writes; loadSnapshot also reads version 1. */
export const SNAPSHOT_FORMAT_VERSION = 2;
/** The format versions loadSnapshot and snapshotInfo read. */
export const SNAPSHOT_FORMAT_VERSIONS_READ: readonly number[] = [1, 2];

function expectLive(machine: SnapshotMachine, action: string): void {
  if (machine.state !== 'realized' && machine.state !== 'running') {
    throw new DdwError('MACHINE_STATE', `cannot ${action} a machine that is ${machine.state}`);
  }
}

/** What a sink threw comes out as it was thrown; anything else as what it is. */
function unwrap(error: unknown): unknown {
  return error instanceof PassThrough ? error.error : error;
}

function write(machine: SnapshotMachine, sink: SnapshotSink, sinkKeeps: boolean): { bytes: number } {
  expectLive(machine, 'save');
  const w = new StreamWriter(sink, sinkKeeps);
  try {
    w.u32(MAGIC);
    w.u32(SNAPSHOT_FORMAT_VERSION);
    const index: Record<string, unknown>[] = [];
    for (const [i, section] of machine.get(MachineTokens.Vmstate).list().entries()) {
      const d = section.description;
      const start = w.offset;
      w.beginCrc();
      try {
        d.preSave?.(section.opaque);
        w.u8(QEMU_VM_SECTION_FULL);
        w.u32(i);
        w.shortString(d.name);
        w.u32(section.instanceId);
        w.u32(d.version);
        putFields(w, d.fields, section.opaque, d.version);
        for (const sub of d.subsections ?? []) {
          if (!sub.needed(section.opaque)) continue;
          w.u8(QEMU_VM_SUBSECTION);
          w.shortString(sub.name);
          w.u32(sub.version);
          putFields(w, sub.fields, section.opaque, sub.version);
        }
        w.u8(QEMU_VM_SECTION_FOOTER);
        w.u32(i);
        d.postSave?.(section.opaque);
      } catch (error) {
        if (error instanceof PassThrough) throw error;
        throw new SnapshotError(d.name, section.instanceId, `cannot be saved: ${messageOf(error)}`, {
          cause: error,
        });
      }
      const crc = w.endCrc();
      index.push({
        name: d.name,
        instanceId: section.instanceId,
        version: d.version,
        size: w.offset - start,
        crc,
      });
    }
    w.u8(QEMU_VM_EOF);
    const indexOffset = w.offset;
    const indexBytes = encodeIndex(machineIdentity(machine.description), index);
    w.bytes(indexBytes);
    w.bytes(encodeTrailer(indexOffset, indexBytes.length, crc32(indexBytes)));
    w.flush(true);
  } catch (error) {
    throw unwrap(error);
  }
  return { bytes: w.offset };
}

/**
 * Saves the machine into `sink` as it goes: every registered section, in registration order,
 * after its pre_save hook, through a buffer of SNAPSHOT_WRITE_BUFFER bytes handed to the sink
 * whenever it is full, then the index and the trailer. Returns the size of the file. What the
 * sink throws comes out as it was thrown; a section that cannot be saved is a SnapshotError. The
 * file loads into a machine built from the same description (loadSnapshot).
 */
export function writeSnapshot(machine: SnapshotMachine, sink: SnapshotSink): { bytes: number } {
  return write(machine, sink, false);
}

/** Saves the machine into one Uint8Array (writeSnapshot, collected). */
export function saveSnapshot(machine: SnapshotMachine): Uint8Array {
  const chunks: Uint8Array[] = [];
  // The writer gives this sink a new buffer after each chunk, so the chunks need no copy.
  const { bytes } = write(machine, { write: (chunk) => void chunks.push(chunk) }, true);
  if (chunks.length === 1 && chunks[0]!.byteOffset === 0 && chunks[0]!.buffer.byteLength === bytes)
    return chunks[0]!;
  const out = new Uint8Array(bytes);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** Reads and checks the preamble, then the rest as its format version says. */
function parseFile(src: SourceReader): ParsedFile {
  if (src.size < PREAMBLE_BYTES)
    throw headerError(`truncated: ${src.size} bytes, a snapshot has at least ${V2_MIN_BYTES}`);
  const preamble = src.read(0, PREAMBLE_BYTES, 'the preamble');
  const view = new DataView(preamble.buffer, preamble.byteOffset, preamble.byteLength);
  if (view.getUint32(0) !== MAGIC) throw headerError('not a ddw snapshot (bad magic)');
  const formatVersion = view.getUint32(4);
  if (formatVersion === 1) return parseV1(src);
  if (formatVersion === 2) return parseV2(src);
  throw headerError(
    `format version ${formatVersion} is not supported (this ddw reads ${SNAPSHOT_FORMAT_VERSIONS_READ.join(' and ')})`,
  );
}

/**
 * Checks every section's bytes against the CRC32 the index gives for it, in index order, reading
 * SNAPSHOT_READ_PIECE bytes at a time.
 */
function checkSectionCrcs(src: SourceReader, file: ParsedFile): void {
  for (const entry of file.sections) {
    let crc = 0;
    try {
      for (let at = 0; at < entry.size; at += SNAPSHOT_READ_PIECE) {
        const n = Math.min(SNAPSHOT_READ_PIECE, entry.size - at);
        crc = crc32(src.read(entry.offset + at, n, 'the section'), crc);
      }
    } catch (error) {
      throw asSnapshotError(entry.name, entry.instanceId, error, '');
    }
    if (crc !== entry.crc)
      throw new SnapshotError(entry.name, entry.instanceId, 'checksum mismatch: the section is corrupted');
  }
}

/** The snapshot to read: the bytes, or a source; anything else is refused as a malformed header. */
function sourceOf(from: unknown): SourceReader {
  try {
    return new SourceReader(from);
  } catch (error) {
    throw headerError(messageOf(error));
  }
}

/**
 * The file's format version, machine identity and sections, without building or loading anything.
 * The file is verified as loadSnapshot verifies it before decoding: preamble, index (or v1 header)
 * and its CRC, size, and every section's CRC, with the same SnapshotError for the same fault. What
 * it cannot check without a machine (identity, section list, versions, field contents) is left to
 * a load. What a source throws (a file that cannot be read) comes out as it was thrown.
 */
export function snapshotInfo(from: Uint8Array | SnapshotSource): SnapshotInfo {
  let parsed: ParsedFile;
  try {
    const src = sourceOf(from);
    parsed = parseFile(src);
    checkSectionCrcs(src, parsed);
  } catch (error) {
    throw unwrap(asSnapshotError('header', undefined, error, 'malformed: '));
  }
  return {
    formatVersion: parsed.formatVersion,
    machine: parsed.machine,
    sections: parsed.sections.map(({ name, instanceId, version, size, offset }) => ({
      name,
      instanceId,
      version,
      size,
      offset,
    })),
  };
}

interface PlannedSection {
  section: VMStateSection;
  loaded: VMStateLoaded;
  prepared: unknown;
}

/** Decodes one section (its bytes, whose bounds and CRC are known good). */
function decodeSection(
  bytes: Uint8Array,
  formatVersion: number,
  index: number,
  entry: IndexSection,
  section: VMStateSection,
): VMStateLoaded {
  const r = new ByteReader(bytes, 0, bytes.length, formatVersion);
  const d = section.description;
  if (r.u8('the section marker') !== QEMU_VM_SECTION_FULL) throw new Malformed('bad section marker');
  if (r.u32('the section index') !== index)
    throw new Malformed('the section index does not match the header');
  if (r.shortString('the section name') !== entry.name)
    throw new Malformed('the section name does not match the header');
  if (r.u32('the instance id') !== entry.instanceId)
    throw new Malformed('the instance id does not match the header');
  const version = r.u32('the version id');
  if (version !== entry.version) throw new Malformed('the version id does not match the header');
  const fields = getFields(r, d.fields, section.opaque, version);
  const subsections: Record<string, Record<string, unknown>> = {};
  while (r.remaining > 0 && r.buf[r.pos] === QEMU_VM_SUBSECTION) {
    r.pos++;
    const name = r.shortString('a subsection name');
    const sub = d.subsections?.find((s) => s.name === name);
    if (!sub) throw new Malformed(`unknown subsection "${name}"`);
    if (name in subsections) throw new Malformed(`subsection "${name}" appears twice`);
    const subVersion = r.u32(`subsection ${name} version`);
    const min = sub.minimumVersion ?? sub.version;
    if (subVersion < min || subVersion > sub.version)
      throw new Malformed(
        `subsection "${name}" version ${subVersion} is not supported (this machine loads ${min}..${sub.version})`,
      );
    try {
      subsections[name] = getFields(r, sub.fields, section.opaque, subVersion);
    } catch (error) {
      throw new Malformed(`subsection "${name}": ${messageOf(error)}`);
    }
  }
  if (r.u8('the section footer') !== QEMU_VM_SECTION_FOOTER) throw new Malformed('bad section footer');
  if (r.u32('the section footer index') !== index) throw new Malformed('the footer index does not match');
  if (r.remaining !== 0) throw new Malformed(`${r.remaining} bytes left over after the section footer`);
  return { version, fields, subsections };
}

/** Everything a load checks, in order; nothing of the machine changes. */
function planLoad(machine: SnapshotMachine, src: SourceReader): PlannedSection[] {
  const file = parseFile(src);
  const mine = machineIdentity(machine.description);
  if (file.machine.type !== mine.type)
    throw headerError(
      `the snapshot is of a ${JSON.stringify(file.machine.type)} machine, this one is ${JSON.stringify(mine.type)}`,
    );
  if (file.machine.ram !== mine.ram)
    throw headerError(
      `the snapshot's machine has ${formatHex(file.machine.ram)} bytes of RAM, this one ${formatHex(mine.ram)}`,
    );
  if (file.machine.maxmem !== mine.maxmem)
    throw headerError(
      `the snapshot's machine has maxmem ${hexOrNull(file.machine.maxmem)}, this one ${hexOrNull(mine.maxmem)}`,
    );

  // Every section of the snapshot exists here in a version this machine loads, and none is missing.
  const registry = machine.get(MachineTokens.Vmstate);
  const matched: VMStateSection[] = [];
  for (const entry of file.sections) {
    const section = registry.find(entry.name, entry.instanceId);
    if (!section) throw new SnapshotError(entry.name, entry.instanceId, 'this machine has no such section');
    const d = section.description;
    const min = d.minimumVersion ?? d.version;
    if (entry.version < min || entry.version > d.version)
      throw new SnapshotError(
        entry.name,
        entry.instanceId,
        `version ${entry.version} is not supported (this machine loads versions ${min}..${d.version})`,
      );
    matched.push(section);
  }
  for (const section of registry.list()) {
    if (!matched.includes(section))
      throw new SnapshotError(section.description.name, section.instanceId, 'missing from the snapshot');
  }

  // Checksums first, so corruption is reported as such rather than as whatever it decodes to.
  checkSectionCrcs(src, file);

  const planned: PlannedSection[] = [];
  for (const [i, entry] of file.sections.entries()) {
    const section = matched[i]!;
    let loaded: VMStateLoaded;
    try {
      const bytes = src.read(entry.offset, entry.size, 'the section');
      // The bytes were checked above; a source that changed since reads differently now.
      if (src.isCopy && crc32(bytes) !== entry.crc)
        throw new Malformed('checksum mismatch: the section changed while it was read');
      loaded = decodeSection(bytes, file.formatVersion, i, entry, section);
    } catch (error) {
      throw asSnapshotError(entry.name, entry.instanceId, error, '');
    }
    planned.push({ section, loaded, prepared: undefined });
  }
  for (const p of planned) {
    const d = p.section.description;
    try {
      p.prepared = d.validate?.(p.section.opaque, p.loaded);
    } catch (error) {
      throw asSnapshotError(d.name, p.section.instanceId, error, 'refused: ');
    }
  }
  return planned;
}

/**
 * Loads a snapshot (the file's bytes, or a SnapshotSource reading it) into `machine`, which must
 * have been built from the same description. All or nothing: a truncated, corrupted,
 * wrong-version or wrong-machine snapshot throws a SnapshotError naming the section and the
 * reason, and the machine is left exactly as it was. Every section's checksum is verified, then
 * every section decoded (a source is read one section at a time) and validated; only then do the
 * post_load hooks run, in section order. What a source throws comes out as it was thrown.
 */
export function loadSnapshot(machine: SnapshotMachine, from: Uint8Array | SnapshotSource): void {
  expectLive(machine, 'load a snapshot into');
  let planned: PlannedSection[];
  try {
    planned = planLoad(machine, sourceOf(from));
  } catch (error) {
    throw unwrap(asSnapshotError('header', undefined, error, 'malformed: '));
  }
  for (const p of planned) {
    const d = p.section.description;
    try {
      d.postLoad?.(p.section.opaque, p.loaded, p.prepared);
    } catch (error) {
      // Everything that can be refused was refused before this point: this is a model bug, and
      // the machine may be partly loaded, so it is not reported as a refused snapshot.
      throw new DdwError(
        'SNAPSHOT_APPLY',
        `post_load of section "${d.name}" (instance ${formatHex(p.section.instanceId)}) failed after the snapshot was validated; the machine is partly loaded: ${messageOf(error)}`,
        { cause: error },
      );
    }
  }
}
