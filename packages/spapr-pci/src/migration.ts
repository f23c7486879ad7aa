import { VMState, type VMStateDescription } from '@ddw/machine';
import type { SpaprPhb } from './phb.js';

/** What the "spapr_pci" section saves from and checks against. */
export class PhbMigration {
  constructor(readonly phb: SpaprPhb) {}

  get buid(): bigint {
    return this.phb.buid;
  }

  /** dma_liobn[0], the default window's LIOBN (QEMU 2.8+ sends it as mig_liobn). */
  get mig_liobn(): number {
    return this.phb.liobn(0);
  }
}

/**
 * The "spapr_pci" section (hw/ppc/spapr_pci.c, vmstate_spapr_pci), instance id = PHB index,
 * version 2: the BUID, which must be equal, and, with `pre28Migration` (QEMU's
 * `pre-2.8-migration` PHB property, what QEMU 2.7 itself sent), the equality check of the default
 * window's LIOBN. No DMA window state travels here: the windows are the "spapr_iommu" sections'.
 * QEMU also carries the mem/io window checks of pre-2.8 streams, the LSI table and the MSI list;
 * ddw models none of those, so they are not in its stream.
 */
export function spaprPciVmstate(pre28Migration = false): VMStateDescription<PhbMigration> {
  return {
    name: 'spapr_pci',
    version: 2,
    minimumVersion: 2,
    fields: [
      VMState.uint64('buid', { equal: true }),
      ...(pre28Migration ? [VMState.uint32('mig_liobn', { equal: true })] : []),
    ],
  };
}
