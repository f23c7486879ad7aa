// The machine's vmstate sections (QEMU's savevm handlers list) and the checks of a description.

import { formatHex } from '@ddw/memory';
import { PluginError } from '../errors.js';
import { ELEMENT_BYTES, type VMStateDescription, type VMStateField } from './description.js';

/** One registered section: what is saved, and into what it loads. */
export interface VMStateSection {
  readonly description: VMStateDescription<object, unknown>;
  readonly instanceId: number;
  readonly opaque: object;
  /** Who registered it (a plugin name), for messages. */
  readonly owner: string;
}

/**
 * The machine's vmstate sections (QEMU's savevm handlers list), in registration order, which is
 * the order they are saved and loaded in. Plugins' services register theirs (MachineTokens.Vmstate)
 * when the machine is assembled, or when they create the object the section describes.
 */
export class VmstateRegistry {
  readonly #sections: VMStateSection[] = [];

  /**
   * Registers a section (vmstate_register); a (name, instance id) pair is unique. Returns a
   * function that unregisters it. The description is checked here: a malformed one is a
   * PluginError naming the owner.
   */
  register<T extends object, P>(
    description: VMStateDescription<T, P>,
    instanceId: number,
    opaque: T,
    owner = 'machine',
  ): () => void {
    checkDescription(description as unknown as VMStateDescription, owner);
    if (!Number.isInteger(instanceId) || instanceId < 0 || instanceId > 0xffffffff) {
      throw new PluginError(
        owner,
        'invalid',
        `vmstate section "${description.name}": instance id ${instanceId} is not a u32`,
      );
    }
    if (this.find(description.name, instanceId)) {
      throw new PluginError(
        owner,
        'conflict',
        `vmstate section "${description.name}" instance ${formatHex(instanceId)} is registered twice`,
      );
    }
    const section: VMStateSection = {
      description: description as unknown as VMStateDescription<object, unknown>,
      instanceId,
      opaque,
      owner,
    };
    this.#sections.push(section);
    return () => {
      const at = this.#sections.indexOf(section);
      if (at >= 0) this.#sections.splice(at, 1);
    };
  }

  unregister(name: string, instanceId: number): boolean {
    const at = this.#sections.findIndex((s) => s.description.name === name && s.instanceId === instanceId);
    if (at < 0) return false;
    this.#sections.splice(at, 1);
    return true;
  }

  find(name: string, instanceId: number): VMStateSection | undefined {
    return this.#sections.find((s) => s.description.name === name && s.instanceId === instanceId);
  }

  list(): readonly VMStateSection[] {
    return [...this.#sections];
  }
}

/** What a section or subsection name may be: 1-255 printable ASCII characters, no space. */
export const NAME_PATTERN = /^[\x21-\x7e]{1,255}$/;
const SCALAR_TYPES = new Set([
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'int8',
  'int16',
  'int32',
  'int64',
  'bool',
]);

function checkVersion(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function checkFields(fields: readonly VMStateField[], where: string, owner: string): void {
  const bad = (problem: string) => new PluginError(owner, 'invalid', `vmstate ${where}: ${problem}`);
  if (!Array.isArray(fields)) throw bad('fields is not an array');
  const seen = new Map<string, VMStateField>();
  for (const field of fields) {
    if (typeof field?.name !== 'string' || field.name === '') throw bad('a field has no name');
    if (seen.has(field.name)) throw bad(`field ${field.name} appears twice`);
    if (field.version !== undefined && !checkVersion(field.version))
      throw bad(`field ${field.name} has a bad version`);
    if (field.type === 'varray_uint32_alloc') {
      const count = seen.get(field.count);
      if (count?.type !== 'uint32')
        throw bad(`VARRAY ${field.name} counts with "${field.count}", which is not an earlier uint32 field`);
      if ((count.version ?? 0) > (field.version ?? 0))
        throw bad(`VARRAY ${field.name} is present in versions where its count ${field.count} is not`);
      if (!(field.element in ELEMENT_BYTES))
        throw bad(`VARRAY ${field.name} has element type ${field.element}`);
    } else if (field.type === 'custom') {
      if (typeof field.info?.put !== 'function' || typeof field.info?.get !== 'function')
        throw bad(`custom field ${field.name} has no put/get`);
    } else if (!SCALAR_TYPES.has(field.type)) {
      throw bad(`field ${(field as VMStateField).name} has unknown type ${(field as { type: string }).type}`);
    }
    seen.set(field.name, field);
  }
}

function checkDescription(d: VMStateDescription, owner: string): void {
  const bad = (problem: string) =>
    new PluginError(owner, 'invalid', `vmstate section "${String(d?.name)}": ${problem}`);
  if (typeof d?.name !== 'string' || !NAME_PATTERN.test(d.name))
    throw bad('the name must be 1-255 printable characters');
  if (!checkVersion(d.version)) throw bad('version is not a u32');
  const min = d.minimumVersion ?? d.version;
  if (!checkVersion(min) || min > d.version)
    throw bad('minimumVersion must be a u32 no greater than version');
  checkFields(d.fields, `section "${d.name}"`, owner);
  const names = new Set<string>();
  for (const sub of d.subsections ?? []) {
    if (typeof sub?.name !== 'string' || !NAME_PATTERN.test(sub.name))
      throw bad('a subsection has a bad name');
    if (names.has(sub.name)) throw bad(`subsection ${sub.name} appears twice`);
    names.add(sub.name);
    if (!checkVersion(sub.version)) throw bad(`subsection ${sub.name} has a bad version`);
    const subMin = sub.minimumVersion ?? sub.version;
    if (!checkVersion(subMin) || subMin > sub.version)
      throw bad(`subsection ${sub.name} has a bad minimumVersion`);
    if (typeof sub.needed !== 'function') throw bad(`subsection ${sub.name} has no needed()`);
    checkFields(sub.fields, `subsection "${sub.name}" of "${d.name}"`, owner);
  }
}
