import { injectable } from './di.js';
import { ConfigError, DdwError } from './errors.js';

// Device-tree spec node names: name[@unit-address], from a restricted character set. The spec's
// 31-character limit is not enforced: QEMU publishes longer names (ibm,query-interrupt-source-number).
const NODE_NAME = /^[A-Za-z0-9,._+-]+(@[A-Za-z0-9,._+-]+)?$/;
// Property names allow '?' and '#' too, as in "#address-cells" and "ibm,#dma-size-cells".
const PROP_NAME = /^[A-Za-z0-9,._+?#-]+$/;

const SUBJECT = { subject: 'device tree' };

interface DtNode {
  readonly props: Map<string, Uint8Array>;
}

/**
 * The device tree the machine hands the guest, as plugins build it: nodes by absolute path, each
 * with named byte-string properties. Cells are big-endian, strings NUL-terminated, as in a
 * flattened device tree. Values are copied in and out, so nobody can change a published property
 * behind the tree's back.
 */
@injectable()
export class DeviceTree {
  private readonly nodeMap = new Map<string, DtNode>([['/', { props: new Map() }]]);

  /** Adds a node whose parent exists; a node that already exists is an error. */
  addNode(path: string): void {
    const parent = parentOf(checkPath(path));
    if (this.nodeMap.has(path)) {
      throw new ConfigError(
        path,
        'the node already exists',
        'add each node once, or use ensureNode()',
        SUBJECT,
      );
    }
    if (!this.nodeMap.has(parent)) {
      throw new ConfigError(
        path,
        `the parent node ${parent} does not exist`,
        'add the parent first, or use ensureNode()',
        SUBJECT,
      );
    }
    this.nodeMap.set(path, { props: new Map() });
  }

  /** Adds the node and any missing ancestors; does nothing for nodes that exist. */
  ensureNode(path: string): void {
    checkPath(path);
    if (path === '/') return;
    let prefix = '';
    for (const component of path.slice(1).split('/')) {
      prefix += `/${component}`;
      if (!this.nodeMap.has(prefix)) this.nodeMap.set(prefix, { props: new Map() });
    }
  }

  hasNode(path: string): boolean {
    return this.nodeMap.has(checkPath(path));
  }

  /** Removes the node and everything under it; false if it was not there. The root stays. */
  removeNode(path: string): boolean {
    checkPath(path);
    if (path === '/') throw new ConfigError(path, 'the root node cannot be removed', undefined, SUBJECT);
    if (!this.nodeMap.has(path)) return false;
    const below = `${path}/`;
    for (const candidate of [...this.nodeMap.keys()]) {
      if (candidate === path || candidate.startsWith(below)) this.nodeMap.delete(candidate);
    }
    return true;
  }

  /** Every node path, parents before children, in the order they were added. */
  nodes(): string[] {
    return [...this.nodeMap.keys()];
  }

  /** Property names of a node in the order they were first set. */
  props(path: string): string[] {
    return [...this.node(path).props.keys()];
  }

  setProp(path: string, name: string, value: Uint8Array): void {
    if (!PROP_NAME.test(name)) {
      throw new ConfigError(
        `${path}:${name}`,
        'is not a valid property name',
        'use the characters A-Z a-z 0-9 , . _ + ? # -',
        SUBJECT,
      );
    }
    this.node(path).props.set(name, value.slice());
  }

  /** 32-bit cells, big-endian; negative values are stored as their two's complement. */
  setPropU32Cells(path: string, name: string, cells: readonly number[]): void {
    const bytes = new Uint8Array(cells.length * 4);
    const view = new DataView(bytes.buffer);
    cells.forEach((cell, i) => {
      if (!Number.isInteger(cell) || cell < -0x80000000 || cell > 0xffffffff) {
        throw new ConfigError(
          `${path}:${name}`,
          `cell ${i} (${cell}) does not fit in 32 bits`,
          undefined,
          SUBJECT,
        );
      }
      view.setUint32(i * 4, cell >>> 0);
    });
    this.setProp(path, name, bytes);
  }

  /** A 64-bit value as two cells (high, low), as in `reg` and window addresses. */
  setPropU64(path: string, name: string, value: bigint): void {
    if (value < 0n || value > 0xffffffffffffffffn) {
      throw new ConfigError(`${path}:${name}`, `${value} does not fit in 64 bits`, undefined, SUBJECT);
    }
    this.setPropU32Cells(path, name, [Number(value >> 32n), Number(value & 0xffffffffn)]);
  }

  setPropString(path: string, name: string, value: string): void {
    this.setPropStrings(path, name, [value]);
  }

  /** A list of NUL-terminated strings back to back, as ibm,hypertas-functions holds. */
  setPropStrings(path: string, name: string, values: readonly string[]): void {
    for (const value of values) {
      if (value.includes('\0')) {
        throw new ConfigError(`${path}:${name}`, 'a string contains a NUL character', undefined, SUBJECT);
      }
    }
    this.setProp(path, name, encoder.encode(values.map((v) => `${v}\0`).join('')));
  }

  /** A property with no value: its presence is the information (e.g. "interrupt-controller"). */
  setPropEmpty(path: string, name: string): void {
    this.setProp(path, name, new Uint8Array(0));
  }

  removeProp(path: string, name: string): boolean {
    return this.node(path).props.delete(name);
  }

  /** A copy of the property's bytes, or undefined if the node or property does not exist. */
  getProp(path: string, name: string): Uint8Array | undefined {
    return this.nodeMap.get(checkPath(path))?.props.get(name)?.slice();
  }

  /** The property as unsigned 32-bit cells; a length not a multiple of 4 is a DdwError. */
  getPropU32Cells(path: string, name: string): number[] | undefined {
    const bytes = this.nodeMap.get(checkPath(path))?.props.get(name);
    if (bytes === undefined) return undefined;
    if (bytes.length % 4 !== 0) {
      throw new DdwError(
        'DEVICE_TREE',
        `device tree ${path}:${name} is ${bytes.length} bytes, not a list of 32-bit cells`,
      );
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Array.from({ length: bytes.length / 4 }, (_, i) => view.getUint32(i * 4));
  }

  /** The property as NUL-terminated strings; a value not ending in NUL is a DdwError. */
  getPropStrings(path: string, name: string): string[] | undefined {
    const bytes = this.nodeMap.get(checkPath(path))?.props.get(name);
    if (bytes === undefined) return undefined;
    if (bytes.length === 0) return [];
    if (bytes[bytes.length - 1] !== 0) {
      throw new DdwError(
        'DEVICE_TREE',
        `device tree ${path}:${name} is not a list of NUL-terminated strings`,
      );
    }
    return decoder.decode(bytes.subarray(0, bytes.length - 1)).split('\0');
  }

  private node(path: string): DtNode {
    const node = this.nodeMap.get(checkPath(path));
    if (node === undefined) {
      throw new ConfigError(path, 'no such node', 'add it with addNode() first', SUBJECT);
    }
    return node;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

/** Returns `path` if it is an absolute device-tree path, else throws a ConfigError saying why. */
function checkPath(path: string): string {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new ConfigError(
      String(path),
      'is not an absolute path',
      'start it with "/", e.g. "/rtas"',
      SUBJECT,
    );
  }
  if (path === '/') return path;
  for (const component of path.slice(1).split('/')) {
    if (!NODE_NAME.test(component)) {
      const problem =
        component === ''
          ? 'has an empty component (a doubled or trailing "/")'
          : `has an invalid node name "${component}"`;
      throw new ConfigError(
        path,
        problem,
        'write name[@unit-address] with the characters A-Z a-z 0-9 , . _ + -',
        SUBJECT,
      );
    }
  }
  return path;
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === 0 ? '/' : path.slice(0, slash);
}
