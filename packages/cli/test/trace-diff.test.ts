import { applyPatch } from 'diff';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareTraces } from '../src/index.js';
import { comparisonSummary, TraceComparer } from '../src/trace-diff.js';

const put = (ioba: number, ret = 0) =>
  `spapr_iommu_pci_put liobn=0x80000000 ioba=0x${ioba.toString(16)} tce=0x3 ret=${ret}`;

describe('compareTraces', () => {
  it('shows one missing line as one line in a unified diff with 3 lines of context', () => {
    const expected = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => put(i * 0x1000));
    const actual = expected.filter((_, i) => i !== 4);
    const cmp = compareTraces(expected, actual);
    expect(cmp).toMatchObject({ compared: 9, differ: 1, exact: true });
    expect(cmp.diff).toEqual([
      '--- qemu',
      '+++ ddw',
      '@@ -2,7 +2,6 @@',
      ` ${put(0x1000)}`,
      ` ${put(0x2000)}`,
      ` ${put(0x3000)}`,
      `-${put(0x4000)}`,
      ` ${put(0x5000)}`,
      ` ${put(0x6000)}`,
      ` ${put(0x7000)}`,
    ]);
  });

  it('numbers QEMU lines and model lines each in their own sequence, one hunk for nearby changes', () => {
    const cmp = compareTraces([put(0), put(0x1000)], [put(0), put(0x1000, -4), put(0x2000)]);
    expect(cmp.differ).toBe(3);
    expect(cmp.diff).toEqual([
      '--- qemu',
      '+++ ddw',
      '@@ -1,2 +1,3 @@',
      ` ${put(0)}`,
      `-${put(0x1000)}`,
      `+${put(0x1000, -4)}`,
      `+${put(0x2000)}`,
    ]);
  });

  it('splits changes more than 6 lines apart into hunks with their own line numbers', () => {
    const expected = Array.from({ length: 20 }, (_, i) => put(i * 0x1000));
    const actual = [...expected];
    actual.splice(15, 1); // QEMU line 16 missing
    actual.splice(2, 0, put(0xabc000)); // an extra model line 3
    const cmp = compareTraces(expected, actual);
    expect(cmp.differ).toBe(2);
    expect(cmp.diff.filter((l) => l.startsWith('@@'))).toEqual(['@@ -1,5 +1,6 @@', '@@ -13,7 +14,6 @@']);
  });

  it('ignores host pointers and fds, and timestamps, and says so with an empty diff', () => {
    const cmp = compareTraces(
      ['1234@1700000000.000001:spapr_iommu_new_table liobn=0x80000000 table=0x5566 fd=-1'],
      ['spapr_iommu_new_table liobn=0x80000000 table=0x7f0000000000 fd=3'],
    );
    expect(cmp).toEqual({ compared: 1, differ: 0, exact: true, diff: [] });
    expect(comparisonSummary(cmp)).toBe('1 compared, 0 differ');
  });

  it('past maxEditLength gives up with a message and a lower bound, not a wrong count', () => {
    const expected = Array.from({ length: 50 }, (_, i) => put(i * 0x1000));
    const actual = Array.from({ length: 50 }, (_, i) => put(i * 0x1000, -4));
    const cmp = compareTraces(expected, actual, { maxEditLength: 10 });
    expect(cmp.exact).toBe(false);
    expect(cmp.diff).toEqual([]);
    expect(cmp.message).toBe(
      "the traces differ from line 1 of QEMU's on by more than 10 lines; no diff printed",
    );
    expect(comparisonSummary(cmp)).toBe('50 compared, at least 11 differ');
    // The true count (100) is above the bound; within the limit it is exact.
    expect(compareTraces(expected, actual).differ).toBe(100);
  });
});

describe('TraceComparer', () => {
  it('holds only the context lines while both sides agree, however long the trace', () => {
    const comparer = new TraceComparer();
    for (let i = 0; i < 20_000; i++) {
      comparer.addExpected(put(i));
      comparer.addActual(put(i));
    }
    expect(comparer.held()).toBeLessThanOrEqual(3);
    expect(comparer.finish()).toMatchObject({ compared: 20_000, differ: 0 });
  });
});

/** Lines of a minimal edit between a and b: n + m - 2 * LCS. */
function minimalEdit(a: readonly string[], b: readonly string[]): number {
  const row = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = 0;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = a[i - 1] === b[j - 1] ? diagonal + 1 : Math.max(row[j]!, row[j - 1]!);
      diagonal = above;
    }
  }
  return a.length + b.length - 2 * row[b.length]!;
}

describe('compareTraces on random edits (property)', () => {
  // Few distinct lines, so alignments are ambiguous and a greedy diff would miscount.
  const line = fc.integer({ min: 0, max: 5 }).map((n) => put(n * 0x1000));
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), line }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  );

  it('counts the lines of a minimal edit, and its hunks turn QEMU lines into the model lines', () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 40 }), fc.array(edit, { maxLength: 12 }), (expected, edits) => {
        const actual = [...expected];
        for (const e of edits) {
          if (e.kind === 'insert') actual.splice(e.at % (actual.length + 1), 0, e.line);
          else if (actual.length > 0) actual.splice(e.at % actual.length, 1);
        }
        const cmp = compareTraces(expected, actual);
        expect(cmp.differ).toBe(minimalEdit(expected, actual));
        expect(cmp.diff.filter((l) => /^[-+](?!--|\+\+)/.test(l))).toHaveLength(cmp.differ);
        const text = (lines: readonly string[]) => lines.map((l) => `${l}\n`).join('');
        const patched =
          cmp.diff.length === 0 ? text(expected) : applyPatch(text(expected), `${cmp.diff.join('\n')}\n`);
        expect(patched).toBe(text(actual));
      }),
      { numRuns: 300 },
    );
  });
});
