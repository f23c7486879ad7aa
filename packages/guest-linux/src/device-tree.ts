import type { GuestDeviceTree } from '@ddw/machine';

/**
 * The device tree as this guest sees it: the machine's (read only for a guest) with the guest's
 * own changes on top. Linux edits its copy of the tree after a DDW (adds the window-info property,
 * drops ibm,dma-window when it removed the default window); the machine never sees those edits,
 * so they live here.
 */
export class GuestTreeView {
  private readonly added = new Map<string, Uint8Array>();
  private readonly removed = new Set<string>();

  constructor(readonly machine: GuestDeviceTree) {}

  getProp(path: string, name: string): Uint8Array | undefined {
    const key = keyOf(path, name);
    const own = this.added.get(key);
    if (own) return own.slice();
    if (this.removed.has(key)) return undefined;
    return this.machine.getProp(path, name);
  }

  getCells(path: string, name: string): number[] | undefined {
    const bytes = this.getProp(path, name);
    if (bytes === undefined) return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Array.from({ length: Math.floor(bytes.length / 4) }, (_, i) => view.getUint32(i * 4));
  }

  getStrings(path: string, name: string): string[] | undefined {
    const bytes = this.getProp(path, name);
    if (bytes === undefined) return undefined;
    if (bytes.length === 0) return [];
    const end = bytes[bytes.length - 1] === 0 ? bytes.length - 1 : bytes.length;
    return new TextDecoder().decode(bytes.subarray(0, end)).split('\0');
  }

  setProp(path: string, name: string, value: Uint8Array): void {
    const key = keyOf(path, name);
    this.removed.delete(key);
    this.added.set(key, value.slice());
  }

  removeProp(path: string, name: string): void {
    const key = keyOf(path, name);
    this.added.delete(key);
    this.removed.add(key);
  }

  /** The guest's own edits, for reports and tests. */
  edits(): { path: string; name: string; value: Uint8Array | undefined }[] {
    const out: { path: string; name: string; value: Uint8Array | undefined }[] = [];
    for (const [key, value] of this.added) out.push({ ...splitKey(key), value: value.slice() });
    for (const key of this.removed) out.push({ ...splitKey(key), value: undefined });
    return out;
  }

  nodes(): string[] {
    return this.machine.nodes();
  }
}

function keyOf(path: string, name: string): string {
  return `${path}\u0000${name}`;
}

function splitKey(key: string): { path: string; name: string } {
  const at = key.indexOf('\u0000');
  return { path: key.slice(0, at), name: key.slice(at + 1) };
}

/** Joins `count` 32-bit cells from `at` into one number (two cells make a 64-bit value). */
export function cellsToBigint(cells: readonly number[], at: number, count: number): bigint {
  let value = 0n;
  for (let i = 0; i < count; i++) value = (value << 32n) | BigInt((cells[at + i] ?? 0) >>> 0);
  return value;
}

/** The big-endian 32-bit cell at byte `at` of a raw property; 0 past its end. */
export function propertyCell(bytes: Uint8Array, at: number): number {
  if (at + 4 > bytes.length) return 0;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at);
}

/** A cell (token, argument, LIOBN, page mask) in hex without 0x, as the kernel prints %x. */
export function cellHex(n: number): string {
  return (n >>> 0).toString(16);
}

export function parentPath(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash <= 0 ? '/' : path.slice(0, slash);
}
