import { hexDigits } from '@ddw/machine';
import type { KnownDriver } from './api.js';

/**
 * The drivers the model binds by PCI vendor:device, with the DMA mask each sets. All three ask
 * for 64 bits, which is what makes Linux try a DDW.
 */
export const KNOWN_DRIVERS: ReadonlyMap<string, KnownDriver> = new Map([
  ['8086:10d3', { name: 'e1000e', dmaMaskBits: 64 }],
  ['1234:11e8', { name: 'ddw-dma', dmaMaskBits: 64 }],
  ['15b3:1017', { name: 'mlx5_core', dmaMaskBits: 64 }],
]);

export function knownDriver(vendorId: number, deviceId: number): KnownDriver | undefined {
  return KNOWN_DRIVERS.get(`${hexDigits(vendorId, 4)}:${hexDigits(deviceId, 4)}`);
}
