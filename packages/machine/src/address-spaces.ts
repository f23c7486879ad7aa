import { AddressSpace } from '@ddw/memory';
import { injectable } from './di.js';
import { InvalidArgumentError } from './errors.js';

/**
 * The address spaces of a machine that `info mtree` shows and dispose() destroys: guest memory
 * first, then whatever plugins add (a PHB's DMA address space).
 */
@injectable()
export class AddressSpaceList {
  readonly #list: AddressSpace[] = [];

  get list(): readonly AddressSpace[] {
    return this.#list;
  }

  add(as: AddressSpace): AddressSpace {
    if (!(as instanceof AddressSpace)) {
      throw new InvalidArgumentError(
        'AddressSpaceList.add(as)',
        "as must be an AddressSpace from @ddw/memory, e.g. a PHB's DMA address space",
      );
    }
    if (!this.#list.includes(as)) this.#list.push(as);
    return as;
  }

  /** Destroys every address space, newest first. */
  destroyAll(): void {
    for (const as of [...this.#list].reverse()) as.destroy();
  }
}
