import { describeValue, MemoryArgumentError, MemoryConfigError } from './errors.js';
import { MemoryRegion } from './region.js';
import { markChanged } from './transaction.js';

/** A window onto part of another region (memory_region_init_alias). */
export class AliasRegion extends MemoryRegion {
  readonly kind = 'alias' as const;
  #offset: bigint;

  constructor(
    name: string,
    readonly target: MemoryRegion,
    offset: bigint,
    size: bigint,
  ) {
    super(name, size);
    if (!(target instanceof MemoryRegion)) {
      throw new MemoryArgumentError(
        `new AliasRegion("${name}", target, offset, size)`,
        `target is ${describeValue(target)}, not a MemoryRegion`,
      );
    }
    checkOffset(name, offset);
    for (let r: MemoryRegion = target; r.kind === 'alias'; r = (r as AliasRegion).target) {
      if (r === this) throw new MemoryConfigError(name, 'an alias may not point back to itself');
    }
    if (offset < 0n) throw new MemoryConfigError(name, 'alias offset must not be negative');
    this.#offset = offset;
    target.aliasedBy.add(this);
  }

  /** Offset inside the target that this alias's offset 0 shows. */
  get offset(): bigint {
    return this.#offset;
  }

  /** memory_region_set_alias_offset. */
  setOffset(offset: bigint): void {
    checkOffset(this.name, offset);
    if (offset < 0n) throw new MemoryConfigError(this.name, 'alias offset must not be negative');
    if (offset === this.#offset) return;
    this.#offset = offset;
    markChanged(this);
  }
}

function checkOffset(name: string, offset: unknown): void {
  if (typeof offset !== 'bigint') {
    throw new MemoryArgumentError(`alias "${name}"`, `offset ${describeValue(offset)} is not a bigint`);
  }
}
