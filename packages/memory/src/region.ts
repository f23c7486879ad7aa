import { UINT64_SPAN } from './constants.js';
import { describeValue, MemoryArgumentError, MemoryConfigError } from './errors.js';
import { formatHex } from './format.js';
import { markChanged, type TopologyObserver, transaction } from './transaction.js';

export type RegionKind = 'container' | 'ram' | 'mmio' | 'alias' | 'iommu';

export interface SubregionOptions {
  /**
   * Priority among overlapping siblings (signed, default 0): the highest is visible. Equal
   * priorities: the region added last wins, as in QEMU.
   */
  priority?: number;
}

/**
 * A node of the memory graph (QEMU's MemoryRegion). Subclasses say what the region does with an
 * access; this class holds what every region has: a size, a place in its container, and children.
 *
 * Any region except an alias may have subregions; a region that is not a pure container still
 * answers in the holes its subregions leave (memory.rst, "Overlapping regions and priority").
 */
export abstract class MemoryRegion {
  abstract readonly kind: RegionKind;
  /** The container this region is mapped into, if any. */
  container: MemoryRegion | null = null;
  /** Offset inside the container. */
  addr = 0n;
  priority = 0;
  enabled = true;
  /** ROM-like: writes through any view of this region are refused. */
  readonly: boolean = false;
  /** Children in visibility order: highest priority first, the newest first among equals. */
  readonly subregions: MemoryRegion[] = [];
  /** Aliases that show this region; a change here changes what they show. */
  readonly aliasedBy = new Set<MemoryRegion>();
  /** Address spaces rooted at this region. */
  readonly addressSpaces = new Set<TopologyObserver>();
  #size: bigint;

  constructor(
    readonly name: string,
    size: bigint,
  ) {
    if (typeof name !== 'string') {
      throw new MemoryArgumentError(
        `new ${new.target.name}(name, size)`,
        `name ${describeValue(name)} is not a string; every region needs the name info mtree shows`,
      );
    }
    this.#size = checkSize(name, size);
  }

  get size(): bigint {
    return this.#size;
  }

  /** True for regions that answer accesses themselves (everything but containers and aliases). */
  get terminates(): boolean {
    return this.kind !== 'container' && this.kind !== 'alias';
  }

  /** Maps `sub` at `offset` inside this region (memory_region_add_subregion[_overlap]). */
  addSubregion(offset: bigint, sub: MemoryRegion, options: SubregionOptions = {}): void {
    if (!(sub instanceof MemoryRegion)) {
      throw new MemoryArgumentError(
        `"${this.name}".addSubregion(offset, sub)`,
        `sub is ${describeValue(sub)}, not a MemoryRegion`,
      );
    }
    if (typeof offset !== 'bigint') {
      throw new MemoryArgumentError(
        `"${this.name}".addSubregion(offset, "${sub.name}")`,
        `offset ${describeValue(offset)} is not a bigint`,
      );
    }
    if (this.kind === 'alias') {
      throw new MemoryConfigError(
        this.name,
        `cannot add subregion "${sub.name}": an alias has no subregions`,
      );
    }
    if (sub.container) {
      throw new MemoryConfigError(
        sub.name,
        `already mapped in "${sub.container.name}"; remove it there first or map an alias of it`,
      );
    }
    if (reaches(sub, this)) {
      throw new MemoryConfigError(
        sub.name,
        `mapping it inside "${this.name}" would make a cycle (through subregions or alias targets)`,
      );
    }
    if (offset < 0n || offset >= UINT64_SPAN) {
      throw new MemoryConfigError(sub.name, `offset ${formatHex(offset)} is outside the 64-bit space`);
    }
    const priority = options.priority ?? 0;
    if (!Number.isInteger(priority)) {
      throw new MemoryConfigError(sub.name, `priority must be an integer, got ${priority}`);
    }
    sub.container = this;
    sub.addr = offset;
    sub.priority = priority;
    const at = this.subregions.findIndex((other) => priority >= other.priority);
    if (at < 0) this.subregions.push(sub);
    else this.subregions.splice(at, 0, sub);
    markChanged(this);
  }

  /** Unmaps a direct subregion (memory_region_del_subregion). */
  removeSubregion(sub: MemoryRegion): void {
    if (!(sub instanceof MemoryRegion)) {
      throw new MemoryArgumentError(
        `"${this.name}".removeSubregion(sub)`,
        `sub is ${describeValue(sub)}, not a MemoryRegion`,
      );
    }
    const at = this.subregions.indexOf(sub);
    if (at < 0 || sub.container !== this) {
      throw new MemoryConfigError(sub.name, `is not a subregion of "${this.name}"`);
    }
    this.subregions.splice(at, 1);
    sub.container = null;
    markChanged(this);
  }

  /** Shows or hides this region without unmapping it (memory_region_set_enabled). */
  setEnabled(enabled: boolean): void {
    if (this.enabled === enabled) return;
    this.enabled = enabled;
    markChanged(this);
  }

  /** Resizes the region (memory_region_set_size); 2^64 covers the whole 64-bit space. */
  setSize(size: bigint): void {
    const checked = checkSize(this.name, size);
    if (checked === this.#size) return;
    this.#size = checked;
    markChanged(this);
  }

  /** Moves the region inside its container (memory_region_set_address). */
  setAddress(offset: bigint): void {
    if (typeof offset !== 'bigint') {
      throw new MemoryArgumentError(
        `"${this.name}".setAddress(offset)`,
        `offset ${describeValue(offset)} is not a bigint`,
      );
    }
    if (offset === this.addr) return;
    const container = this.container;
    if (!container) {
      this.addr = offset;
      return;
    }
    // Re-inserting keeps the visibility order rules in one place.
    transaction(() => {
      const priority = this.priority;
      container.removeSubregion(this);
      container.addSubregion(offset, this, { priority });
    });
  }

  setReadonly(readonly: boolean): void {
    if (this.readonly === readonly) return;
    this.readonly = readonly;
    markChanged(this);
  }

  /** The address of this region inside the root it is mapped under, and that root. */
  absoluteAddress(): { root: MemoryRegion; addr: bigint } {
    let addr = 0n;
    let r: MemoryRegion = this;
    while (r.container) {
      addr += r.addr;
      r = r.container;
    }
    return { root: r, addr };
  }
}

/** A pure container: shows its subregions and nothing in the holes between them. */
export class ContainerRegion extends MemoryRegion {
  readonly kind = 'container' as const;
}

/** Whether `to` can be reached from `from` through subregions and alias targets. */
function reaches(from: MemoryRegion, to: MemoryRegion): boolean {
  const seen = new Set<MemoryRegion>();
  const stack = [from];
  while (stack.length > 0) {
    const r = stack.pop()!;
    if (r === to) return true;
    if (seen.has(r)) continue;
    seen.add(r);
    stack.push(...r.subregions);
    const target = (r as { target?: MemoryRegion }).target;
    if (r.kind === 'alias' && target) stack.push(target);
  }
  return false;
}

function checkSize(name: string, size: bigint): bigint {
  if (typeof size !== 'bigint') {
    throw new MemoryConfigError(name, `size must be a bigint, got ${describeValue(size)}`);
  }
  if (size < 0n || size > UINT64_SPAN) {
    throw new MemoryConfigError(name, `size ${formatHex(size)} is outside 0..2^64`);
  }
  return size;
}
