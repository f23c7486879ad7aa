import { type ParsedTraceLine, parseTraceLine } from '@ddw/machine';
import { diffArrays, FILE_HEADERS_ONLY, formatPatch, type StructuredPatchHunk } from 'diff';

export interface TraceComparison {
  /** Input lines compared. */
  compared: number;
  /**
   * Lines only one side has (missing from the model, or printed by the model only), as a minimal
   * edit counts them. When `exact` is false the traces were too far apart to align and this is
   * only a lower bound.
   */
  differ: number;
  /** False when the alignment gave up (see `message`): `differ` is a lower bound, `diff` is empty. */
  exact: boolean;
  /**
   * A unified diff of the compared lines (host pointers and fds blanked): `--- qemu`, `+++ ddw`,
   * then `@@ -a,b +c,d @@` hunks with 3 lines of context; empty when nothing differs.
   */
  diff: string[];
  /** Why there is no diff when `exact` is false. */
  message?: string;
}

export interface CompareOptions {
  /** Lines of context around each change (3). */
  context?: number;
  /** The alignment gives up past this many differing lines (10 000): Myers' cost grows with it. */
  maxEditLength?: number;
  /** ... or after this many milliseconds (60 s), whichever comes first. */
  timeoutMs?: number;
}

const DEFAULTS = { context: 3, maxEditLength: 10_000, timeoutMs: 60_000 };

/** The text of a line without what differs between runs of the same QEMU (host pointers, fds). */
export function normalizeText(text: string): string {
  return text
    .replace(/\btable=\S+/, 'table=*')
    .replace(/\bfd=\S+/, 'fd=*')
    .replace(/\bva=\S+/, 'va=*');
}

/** Two lines are the same event, host pointers and fds aside. */
export function sameEvent(a: ParsedTraceLine, b: ParsedTraceLine): boolean {
  return a.name === b.name && normalizeText(a.text) === normalizeText(b.text);
}

/** The line as compared: name and text, with timestamps, host pointers and fds blanked. */
export function compareKey(line: string): string {
  const p = parseTraceLine(line.endsWith('\r') ? line.slice(0, -1) : line);
  return p ? normalizeText(`${p.name} ${p.text}`) : line;
}

/**
 * Compares QEMU's lines (expected) with the model's (actual) as they arrive, keeping only what
 * the comparison needs: while both sides agree, only the last few common lines (the context of a
 * first hunk); from the first difference on, every key of both sides. `finish()` aligns the rest
 * with Myers' algorithm (the `diff` package).
 */
export class TraceComparer {
  private readonly options: typeof DEFAULTS;
  private compared = 0;
  /** Lines both sides had, in order, before the first difference. */
  private common = 0;
  /** The last `context` of those. */
  private recent: string[] = [];
  private expected: string[] = [];
  private actual: string[] = [];
  private expectedHead = 0;
  private actualHead = 0;
  private diverged = false;
  /**
   * Keys seen on one side and not yet on the other: the same line on both sides is then stored
   * once (the sides mostly agree, a few lines apart).
   */
  private readonly pairing = new Map<string, string>();

  constructor(options: CompareOptions = {}) {
    this.options = { ...DEFAULTS, ...options };
  }

  /** One of QEMU's in-scope lines, as its compareKey. */
  addExpected(key: string): void {
    this.compared++;
    this.expected.push(this.diverged ? this.shared(key) : key);
    this.advance();
  }

  /** One of the model's lines, as its compareKey. */
  addActual(key: string): void {
    this.actual.push(this.diverged ? this.shared(key) : key);
    this.advance();
  }

  private shared(key: string): string {
    const other = this.pairing.get(key);
    if (other !== undefined) {
      this.pairing.delete(key);
      return other;
    }
    if (this.pairing.size >= 1 << 16) this.pairing.clear();
    this.pairing.set(key, key);
    return key;
  }

  /** Drops the common prefix as it grows, so an agreeing replay keeps next to nothing. */
  private advance(): void {
    if (this.diverged) return;
    const a = this.expected;
    const b = this.actual;
    while (this.expectedHead < a.length && this.actualHead < b.length) {
      const key = a[this.expectedHead]!;
      if (key !== b[this.actualHead]) {
        this.diverged = true;
        break;
      }
      this.expectedHead++;
      this.actualHead++;
      this.common++;
      this.recent.push(key);
      if (this.recent.length > this.options.context) this.recent.shift();
    }
    if (this.expectedHead === a.length && this.actualHead === b.length) {
      a.length = 0;
      b.length = 0;
      this.expectedHead = 0;
      this.actualHead = 0;
    } else if (this.diverged) {
      this.expected = a.slice(this.expectedHead);
      this.actual = b.slice(this.actualHead);
      this.expectedHead = 0;
      this.actualHead = 0;
    } else if (this.expectedHead + this.actualHead > 4096) {
      this.expected = a.slice(this.expectedHead);
      this.actual = b.slice(this.actualHead);
      this.expectedHead = 0;
      this.actualHead = 0;
    }
  }

  /** Keys held for the final alignment (both sides). */
  held(): number {
    return (
      this.expected.length - this.expectedHead + this.actual.length - this.actualHead + this.recent.length
    );
  }

  /** Aligns what is left and returns the comparison. */
  finish(): TraceComparison {
    const { context, maxEditLength, timeoutMs } = this.options;
    const a = [...this.recent, ...this.expected.slice(this.expectedHead)];
    const b = [...this.recent, ...this.actual.slice(this.actualHead)];
    // Line numbers of a[0] and b[0] in the full sequences, minus one.
    const offset = this.common - this.recent.length;
    const started = Date.now();
    const changes = diffArrays(a, b, { maxEditLength, timeout: timeoutMs });
    if (changes === undefined) {
      const timedOut = Date.now() - started >= timeoutMs;
      const atLeast = Math.max(maxEditLength + 1, Math.abs(a.length - b.length));
      const differ = timedOut ? Math.max(1, Math.abs(a.length - b.length)) : atLeast;
      const from = `from line ${this.common + 1} of QEMU's on`;
      const message = timedOut
        ? `the traces differ ${from} in a way that could not be aligned within ${timeoutMs / 1000} s; no diff printed`
        : `the traces differ ${from} by more than ${maxEditLength} lines; no diff printed`;
      return { compared: this.compared, differ, exact: false, diff: [], message };
    }
    const hunks = unifiedHunks(changes, context, offset);
    let differ = 0;
    for (const change of changes) if (change.added || change.removed) differ += change.count ?? 0;
    if (hunks.length === 0) return { compared: this.compared, differ, exact: true, diff: [] };
    const text = formatPatch(
      { oldFileName: 'qemu', newFileName: 'ddw', oldHeader: undefined, newHeader: undefined, hunks },
      FILE_HEADERS_ONLY,
    );
    return { compared: this.compared, differ, exact: true, diff: text.replace(/\n$/, '').split('\n') };
  }
}

/** `N compared, M differ`, or what is known when the alignment gave up. */
export function comparisonSummary(cmp: TraceComparison): string {
  if (cmp.exact) return `${cmp.compared} compared, ${cmp.differ} differ`;
  return `${cmp.compared} compared, at least ${cmp.differ} differ`;
}

/**
 * Hunks with `context` lines around each run of changes; runs closer than 2 * context share one.
 * `offset` is how many lines precede both sequences (their numbering starts at offset + 1).
 */
function unifiedHunks(
  changes: readonly { value: string[]; added: boolean; removed: boolean }[],
  context: number,
  offset: number,
): StructuredPatchHunk[] {
  const hunks: StructuredPatchHunk[] = [];
  let oldLine = offset + 1;
  let newLine = offset + 1;
  let current: StructuredPatchHunk | undefined;
  for (let c = 0; c < changes.length; c++) {
    const change = changes[c]!;
    const lines = change.value;
    if (change.added || change.removed) {
      if (!current) {
        // Open a hunk with up to `context` lines before it (the previous equal run's tail).
        const prev = c > 0 ? changes[c - 1] : undefined;
        const before = prev && !prev.added && !prev.removed ? prev.value.slice(-context) : [];
        current = {
          oldStart: oldLine - before.length,
          oldLines: before.length,
          newStart: newLine - before.length,
          newLines: before.length,
          lines: before.map((l) => ` ${l}`),
        };
      }
      for (const l of lines) current.lines.push(`${change.added ? '+' : '-'}${l}`);
      if (change.added) {
        current.newLines += lines.length;
        newLine += lines.length;
      } else {
        current.oldLines += lines.length;
        oldLine += lines.length;
      }
      continue;
    }
    // An equal run.
    if (current) {
      const last = c === changes.length - 1;
      const keep = !last && lines.length <= 2 * context ? lines.length : Math.min(context, lines.length);
      for (const l of lines.slice(0, keep)) current.lines.push(` ${l}`);
      current.oldLines += keep;
      current.newLines += keep;
      if (keep < lines.length || last) {
        hunks.push(current);
        current = undefined;
      }
    }
    oldLine += lines.length;
    newLine += lines.length;
  }
  if (current) hunks.push(current);
  return hunks;
}

/**
 * Compares QEMU's lines with the model's: a minimal edit (Myers), printed as a unified diff.
 * Lines are compared without timestamps, host pointers and fds.
 */
export function compareTraces(
  expected: readonly string[],
  actual: readonly string[],
  options: CompareOptions = {},
): TraceComparison {
  const comparer = new TraceComparer(options);
  for (const line of expected) comparer.addExpected(compareKey(line));
  for (const line of actual) comparer.addActual(compareKey(line));
  return comparer.finish();
}
