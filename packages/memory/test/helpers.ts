import { type FlatView, MmioRegion } from '../src/index.js';

/** The flat view as `start-end:name@offset` strings, easy to compare whole. */
export function describeView(view: FlatView): string[] {
  return view.ranges.map(
    (r) =>
      `${r.start.toString(16)}-${(r.end - 1n).toString(16)}:${r.mr.name}${r.offsetInRegion ? `@${r.offsetInRegion.toString(16)}` : ''}`,
  );
}

/** An MMIO region whose bytes are a function of the offset, recording every access. */
export function patternMmio(name: string, size: bigint, options: { endianness?: 'little' | 'big' } = {}) {
  const log: string[] = [];
  const region = new MmioRegion(name, size, {
    endianness: options.endianness ?? 'big',
    valid: { minAccessSize: 1, maxAccessSize: 8 },
    impl: { minAccessSize: 1, maxAccessSize: 8 },
    read(offset, accessSize) {
      log.push(`r${accessSize}@${offset.toString(16)}`);
      return 0x1122334455667788n & ((1n << BigInt(accessSize * 8)) - 1n);
    },
    write(offset, value, accessSize) {
      log.push(`w${accessSize}@${offset.toString(16)}=${value.toString(16)}`);
      return undefined;
    },
  });
  return { region, log };
}
