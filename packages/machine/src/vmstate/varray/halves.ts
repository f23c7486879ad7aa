// 64-bit arithmetic on (high, low) halves for the VARRAY codec, without BigInt on the hot paths.
// A progression's entry k is @ddw/memory's runEntryHalves; what differs from @ddw/memory is
// named for how it differs (wrappingStrideBetween).

import { runEntryHalves, TWO_32 } from '@ddw/memory';
import { STRIDE_HIGH_LIMIT } from './format.js';

/**
 * The stride from (lastHigh:lastLow) to (high:low) modulo 2^64 if it is a valid stride (< 2^36),
 * else -1. Unlike @ddw/memory's strideBetween, a step that wraps through 2^64 (from
 * 0xffff_ffff_ffff_fff0 to 0x10) is a stride: a VARRAY's runs and affine records are
 * progressions modulo 2^64, so such a step continues one.
 */
export function wrappingStrideBetween(lastHigh: number, lastLow: number, high: number, low: number): number {
  let dl = low - lastLow;
  let dh = high - lastHigh;
  if (dl < 0) {
    dl += TWO_32;
    dh -= 1;
  }
  if (dh < 0) dh += TWO_32;
  return dh < STRIDE_HIGH_LIMIT ? dh * TWO_32 + dl : -1;
}

/** The 64-bit value of (high:low). */
export const big = (high: number, low: number): bigint => (BigInt(high) << 32n) | BigInt(low);

/** The k in [0, n) with v + k*s = 0 modulo 2^64, increasing (s > 0: at most 17 of them). */
function zeroPositions(v: bigint, s: bigint, n: number): number[] {
  const out: number[] = [];
  const last = v + BigInt(n - 1) * s;
  for (let m = v === 0n ? 0n : 1n; m << 64n <= last; m++) {
    const t = (m << 64n) - v;
    if (t % s === 0n) out.push(Number(t / s));
  }
  return out;
}

/** Where nonZeroStretches puts a stretch's first element (runEntryHalves writes [high, low]). */
const stretchStart = new Uint32Array(2);

/**
 * Calls `each(start, count, high, low)` for the stretches of a progression (value v, stride s,
 * n elements) between its zero elements (where it wraps through 2^64).
 */
export function nonZeroStretches(
  high: number,
  low: number,
  stride: number,
  n: number,
  each: (start: number, count: number, high: number, low: number) => void,
): void {
  const v = big(high, low);
  const s = BigInt(stride);
  if (s === 0n) {
    if (v !== 0n) each(0, n, high, low);
    return;
  }
  let from = 0;
  for (const zero of [...zeroPositions(v, s, n), n]) {
    if (zero > from) {
      runEntryHalves(high, low, stride, from, stretchStart);
      each(from, zero - from, stretchStart[0]!, stretchStart[1]!);
    }
    from = zero + 1;
  }
}
