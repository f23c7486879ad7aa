import type { DmaWindowInfo } from './api.js';

/** The property the guest adds to a PE node for a direct DDW (RAM mapped 1:1). */
export const DIRECT64_PROP = 'linux,direct64-ddr-window-info';
/** The property the guest adds to a PE node for a dynamic DDW (mapped per DMA request). */
export const DMA64_PROP = 'linux,dma64-ddr-window-info';

/**
 * The 24-byte window-info property: be32 liobn, 4 bytes of alignment padding, be64 bus address,
 * be32 TCE shift, be32 window shift.
 */
export function windowInfoProperty(info: DmaWindowInfo): Uint8Array {
  const bytes = new Uint8Array(24);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, info.liobn);
  view.setBigUint64(8, info.busOffset);
  view.setUint32(16, info.pageShift);
  view.setUint32(20, info.windowShift);
  return bytes;
}
