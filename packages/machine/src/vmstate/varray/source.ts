import { TWO_32 } from '@ddw/memory';
// What a VARRAY is saved from.

/**
 * What a VARRAY is saved from: its length and its non-zero elements in increasing index order,
 * each as two 32-bit halves (high is 0 for elements narrower than 64 bits). A TCE table's sparse
 * storage is one directly: saving aliases the live entries, as QEMU's pre_save does.
 */
export interface VarraySource {
  readonly length: number;
  forEachNonZero(fn: (index: number, high: number, low: number) => void): void;
  /**
   * Visits the non-zero elements as runs, in increasing index order, runs not overlapping:
   * element first+k (k < count) is the 64-bit value (high:low) + k*stride, modulo 2^64. stride is
   * an integer 0 <= stride < 2^36. Optional: a uint64 VARRAY whose source has it is saved from its
   * runs, and a block that is one progression costs 21 bytes, however long.
   */
  forEachRun?(fn: (first: number, count: number, high: number, low: number, stride: number) => void): void;
  /**
   * Visits every element in index order as the source holds it: runs (as forEachRun, but they
   * need not be maximal) and stretches of plain slots (element first + k is
   * (slots[2k]:slots[2k + 1]), zeros included). Optional, uint64 only: preferred over forEachRun,
   * so a table of random entries is copied out a block at a time. The encoding is the same.
   */
  forEachSpan?(
    onRun: (first: number, count: number, high: number, low: number, stride: number) => void,
    onSlots: (first: number, count: number, slots: Uint32Array) => void,
  ): void;
}

/** A VarraySource over an array of numbers or bigints. */
export function varrayOf(values: ArrayLike<number> | ArrayLike<bigint>): VarraySource {
  return {
    length: values.length,
    forEachNonZero(fn) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        if (typeof v === 'bigint') {
          const u = BigInt.asUintN(64, v);
          if (u !== 0n) fn(i, Number(u >> 32n), Number(u & 0xffffffffn));
        } else if (v !== 0) {
          fn(i, Math.floor(v / TWO_32) >>> 0, v >>> 0);
        }
      }
    },
  };
}
