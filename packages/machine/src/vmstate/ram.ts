// Guest RAM as a section: "ram", QEMU's RAM stream over the sparse backing.

import { formatHex, type RamRegion, type SparseRam, TWO_32 } from '@ddw/memory';
import { VMState, type VMStateDescription, type VMStateInfo } from './description.js';
import type { VmstateRegistry } from './registry.js';

/** QEMU's RAM stream flags (migration/ram.c): a page record, and the end of the RAM stream. */
const RAM_SAVE_FLAG_PAGE = 0x08;
const RAM_SAVE_FLAG_EOS = 0x10;
/**
 * Guest RAM is written in pages of QEMU's TARGET_PAGE_SIZE for ppc64 (4 KiB) since version 2 of the
 * section, so a guest that wrote a few TCE lists saves a few KiB; version 1 wrote the sparse
 * backing's 64 KiB chunks, and still loads.
 */
export const RAM_SNAPSHOT_CHUNK = 1 << 12;
const RAM_V1_CHUNK = 1 << 16;

/** The pages of a loaded RAM section, as views into the snapshot. */
export interface RamImage {
  readonly chunks: readonly { readonly offset: number; readonly data: Uint8Array }[];
}

function allZero(chunk: Uint8Array): boolean {
  const words =
    chunk.byteOffset % 4 === 0 && chunk.length % 4 === 0
      ? new Uint32Array(chunk.buffer, chunk.byteOffset, chunk.length / 4)
      : chunk;
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/**
 * The sparse RAM encoding: per non-zero page of the touched chunks a be64 (offset | PAGE) and its
 * bytes, in increasing offset order, then be64 EOS. Untouched memory costs nothing.
 */
export const SPARSE_RAM_INFO: VMStateInfo<SparseRam, RamImage> = {
  name: 'sparse-ram',
  put(w, ram) {
    for (const [chunkOffset, chunk] of ram.chunks()) {
      for (let at = 0; at < chunk.length; at += RAM_SNAPSHOT_CHUNK) {
        const page = chunk.subarray(at, at + RAM_SNAPSHOT_CHUNK);
        if (allZero(page)) continue;
        const offset = chunkOffset + at;
        w.u64Halves(Math.floor(offset / TWO_32), ((offset % TWO_32) | RAM_SAVE_FLAG_PAGE) >>> 0);
        w.bytes(page);
      }
    }
    w.u64Halves(0, RAM_SAVE_FLAG_EOS);
  },
  get(r, version) {
    const size = version >= 2 ? RAM_SNAPSHOT_CHUNK : RAM_V1_CHUNK;
    const chunks: { offset: number; data: Uint8Array }[] = [];
    let last = -1;
    for (;;) {
      const high = r.u32();
      const low = r.u32();
      // The flags sit below the page offset (QEMU: addr & ~TARGET_PAGE_MASK).
      const flags = low & (size - 1);
      const offset = high * TWO_32 + (low - flags);
      if (flags === RAM_SAVE_FLAG_EOS) {
        if (offset !== 0) r.fail(`the end-of-RAM record carries offset ${formatHex(offset)}`);
        break;
      }
      if (flags !== RAM_SAVE_FLAG_PAGE) r.fail(`unknown RAM record flags ${formatHex(flags)}`);
      if (high >= 0x100000) r.fail(`RAM offset ${formatHex(offset)} is beyond 2^52`);
      if (offset <= last) r.fail(`RAM chunk ${formatHex(offset)} is out of order`);
      last = offset;
      if (offset % size !== 0) r.fail(`RAM page ${formatHex(offset)} is not aligned to ${formatHex(size)}`);
      chunks.push({ offset, data: r.bytes(size) });
    }
    return { chunks };
  },
};

/** The opaque of the RAM section: the RAM's size (EQUAL) and its backing. */
class RamOpaque {
  constructor(readonly region: RamRegion) {}
  get size(): bigint {
    return this.region.size;
  }
  get pages(): SparseRam {
    return this.region.ram;
  }
}

/** Guest RAM as a section: "ram", version 2, its size (must be equal) and its non-zero pages. */
export const RAM_VMSTATE: VMStateDescription<RamOpaque, RamImage> = {
  name: 'ram',
  version: 2,
  minimumVersion: 1,
  fields: [VMState.uint64('size', { equal: true }), VMState.custom('pages', SPARSE_RAM_INFO)],
  validate(opaque, loaded) {
    const image = loaded.fields.pages as RamImage;
    const limit = opaque.region.ram.size;
    for (const { offset } of image.chunks) {
      if (offset >= limit)
        throw new Error(`RAM chunk at ${formatHex(offset)} lies beyond the RAM (${formatHex(limit)} bytes)`);
    }
    return image;
  },
  postLoad(opaque, _loaded, image) {
    const ram = opaque.region.ram;
    ram.clear();
    for (const { offset, data } of image.chunks) {
      ram.write(offset, data, 0, Math.min(data.length, ram.size - offset));
    }
  },
};

/** Registers guest RAM's section (the machine does this for its RAM region). */
export function registerRamVmstate(
  registry: VmstateRegistry,
  region: RamRegion,
  owner = '@ddw/machine',
): () => void {
  return registry.register(RAM_VMSTATE, 0, new RamOpaque(region), owner);
}
