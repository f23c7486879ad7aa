import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IommuTable } from '../src/index.js';

type Op = { kind: 'alloc'; count: number; align: number } | { kind: 'free'; pick: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('alloc' as const),
    count: fc.integer({ min: 1, max: 20 }),
    align: fc.constantFrom(1, 2, 4, 16),
  }),
  fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }),
);

describe('IommuTable allocator', () => {
  it('never overlaps, never hands out reserved entries, and fails only when no aligned gap exists', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 96 }),
        fc.boolean(),
        fc.tuple(fc.nat({ max: 96 }), fc.nat({ max: 16 })),
        fc.array(op, { maxLength: 80 }),
        (size, atZero, [resStart, resLength], ops) => {
          const table = new IommuTable(0x80000000, atZero ? 0n : 1n << 40n, 12, size);
          table.reserve(resStart, resStart + resLength);
          // The oracle: which entries are taken, by whom.
          const owner = new Array<string>(size).fill('');
          if (atZero) owner[0] = 'reserved';
          for (let i = resStart; i < Math.min(size, resStart + resLength); i++) owner[i] = 'reserved';
          const live: { start: number; count: number }[] = [];
          for (const o of ops) {
            if (o.kind === 'alloc') {
              const got = table.alloc(o.count, o.align);
              const fits = (s: number) =>
                s + o.count <= size && owner.slice(s, s + o.count).every((x) => x === '');
              if (got === undefined) {
                for (let s = 0; s < size; s += o.align) expect(fits(s)).toBe(false);
              } else {
                expect(got % o.align).toBe(0);
                expect(fits(got)).toBe(true);
                owner.fill(`a${live.length}`, got, got + o.count);
                live.push({ start: got, count: o.count });
                expect(table.allocationAt(got + o.count - 1)).toEqual({ start: got, end: got + o.count });
              }
            } else if (live.length > 0) {
              const [victim] = live.splice(o.pick % live.length, 1);
              expect(table.free(victim!.start, victim!.count)).toBe(true);
              expect(table.free(victim!.start, victim!.count)).toBe(false);
              owner.fill('', victim!.start, victim!.start + victim!.count);
            }
            expect(table.inUse()).toBe(live.length > 0);
          }
        },
      ),
    );
  });

  it('keeps bus address 0 and a reserved bus range out of a window at 0', () => {
    const table = new IommuTable(0x80000000, 0n, 16, 0x20000);
    table.reserveBus(0x80000000n, 0x100000000n);
    expect(table.alloc(1)).toBe(1);
    // Entries 0x8000-0xffff (bus 2-4 GiB in 64K pages) are MMIO. Allocation is next-fit, wrapping.
    expect(table.alloc(0x8000)).toBe(0x10000);
    expect(table.alloc(0x8000)).toBe(0x18000);
    expect(table.alloc(0x7ffe)).toBe(2);
    expect(table.alloc(1)).toBeUndefined();
    expect(table.inUse()).toBe(true);
  });
});
