import { parseTraceLine } from '@ddw/machine';
import { normalize } from './replay.js';

export interface TraceComparison {
  /** Input lines compared. */
  compared: number;
  /** Lines only one side has: missing from the model, or printed by the model only. */
  differ: number;
  /**
   * A readable diff: `-N:` line N of QEMU's (in-scope) lines that the model did not print, `+N:`
   * line N of the model's output that QEMU did not print.
   */
  diff: string[];
}

/** The line as compared: name and text, with host pointers and fds blanked. */
function key(line: string): string {
  const p = parseTraceLine(line);
  return p ? `${p.name} ${normalize(p)}` : line;
}

/**
 * Compares QEMU's lines with the model's by longest common subsequence, so one missing line shows
 * as one line, not as every line after it. Identical runs at both ends are matched first, which
 * keeps the quadratic part to the region that actually differs.
 */
export function compareTraces(expected: readonly string[], actual: readonly string[]): TraceComparison {
  const a = expected.map(key);
  const b = actual.map(key);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const n = endA - start;
  const m = endB - start;
  const diff: string[] = [];
  let differ = 0;
  if (n * m > 50_000_000) {
    // Too large to align: report line by line.
    for (let i = 0; i < Math.max(n, m); i++) {
      if (a[start + i] === b[start + i]) continue;
      if (i < n) diff.push(`-${start + i + 1}: ${expected[start + i]}`);
      if (i < m) diff.push(`+${start + i + 1}: ${actual[start + i]}`);
      differ++;
    }
    return { compared: expected.length, differ, diff };
  }
  // lcs[i][j]: common subsequence length of a[start+i..endA) and b[start+j..endB).
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] =
        a[start + i] === b[start + j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[start + i] === b[start + j]) {
      i++;
      j++;
    } else if (j >= m || (i < n && lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      diff.push(`-${start + i + 1}: ${expected[start + i]}`);
      differ++;
      i++;
    } else {
      diff.push(`+${start + j + 1}: ${actual[start + j]}`);
      differ++;
      j++;
    }
  }
  return { compared: expected.length, differ, diff };
}
