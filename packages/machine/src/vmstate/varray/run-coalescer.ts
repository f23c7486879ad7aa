// Joining a loaded VARRAY's elements and runs into maximal runs.

import { runEntryHalves } from '@ddw/memory';
import { wrappingStrideBetween } from './halves.js';

/** Where runEntryHalves puts a run's last entry: [high, low]. */
const lastEntry = new Uint32Array(2);

/** Joins elements and runs that continue one progression into one run before passing it on. */
export class RunCoalescer {
  private count = 0;
  private first = 0;
  private high = 0;
  private low = 0;
  private stride = 0;
  private lastHigh = 0;
  private lastLow = 0;

  constructor(
    private readonly fn: (first: number, count: number, high: number, low: number, stride: number) => void,
  ) {}

  element(i: number, high: number, low: number): void {
    if (this.count > 0 && i === this.first + this.count) {
      const d = wrappingStrideBetween(this.lastHigh, this.lastLow, high, low);
      if (d >= 0 && (this.count === 1 || d === this.stride)) {
        this.stride = d;
        this.count++;
        this.lastHigh = high;
        this.lastLow = low;
        return;
      }
    }
    this.emit();
    this.first = i;
    this.count = 1;
    this.high = high;
    this.low = low;
    this.stride = 0;
    this.lastHigh = high;
    this.lastLow = low;
  }

  /** `n` non-zero elements from high:low by `stride`. */
  run(first: number, n: number, high: number, low: number, stride: number): void {
    if (n === 1) {
      this.element(first, high, low);
      return;
    }
    runEntryHalves(high, low, stride, n - 1, lastEntry);
    const lastHigh = lastEntry[0]!;
    const lastLow = lastEntry[1]!;
    if (this.count > 0 && first === this.first + this.count) {
      const d = wrappingStrideBetween(this.lastHigh, this.lastLow, high, low);
      if (d === stride && (this.count === 1 || this.stride === stride)) {
        this.stride = stride;
        this.count += n;
        this.lastHigh = lastHigh;
        this.lastLow = lastLow;
        return;
      }
    }
    this.emit();
    this.first = first;
    this.count = n;
    this.high = high;
    this.low = low;
    this.stride = stride;
    this.lastHigh = lastHigh;
    this.lastLow = lastLow;
  }

  end(): void {
    this.emit();
  }

  private emit(): void {
    if (this.count === 0) return;
    this.fn(this.first, this.count, this.high, this.low, this.count === 1 ? 0 : this.stride);
    this.count = 0;
  }
}
