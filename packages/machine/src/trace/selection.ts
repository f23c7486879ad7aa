// Selecting trace events by name, as QEMU's `-trace` patterns do.

import { DdwError } from '../errors.js';

/** QEMU's trace glob: `*` any run of characters, `?` one character, everything else literal. */
export function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\*?]/g, (ch) =>
    ch === '*' ? '.*' : ch === '?' ? '.' : `\\${ch}`,
  );
  return new RegExp(`^${body}$`);
}

/**
 * A selection of trace events as QEMU's `-trace` patterns make one: each pattern a glob, a leading
 * `-` deselects, and the last pattern matching an event decides.
 */
export class TraceSelection {
  private rules: { pattern: string; enable: boolean; regexp: RegExp }[] = [];
  /** Answers by event name: a replay asks once per traced line. Cleared when a rule is added. */
  private readonly answers = new Map<string, boolean>();

  constructor(patterns: readonly string[] = []) {
    for (const p of patterns) this.add(p.startsWith('-') ? p.slice(1) : p, !p.startsWith('-'));
  }

  /** Appends a glob that selects (or, with `enable` false, deselects) what it matches. */
  add(pattern: string, enable: boolean): RegExp {
    if (pattern === '') {
      throw new DdwError(
        'TRACE',
        'an empty trace pattern selects nothing; write an event name or a glob such as spapr_iommu_*, or -NAME to leave one out',
      );
    }
    const regexp = globToRegExp(pattern);
    this.rules = [...this.rules, { pattern, enable, regexp }];
    this.answers.clear();
    return regexp;
  }

  /** The selection in pattern form (`-NAME` for a deselection). */
  patterns(): string[] {
    return this.rules.map((r) => (r.enable ? r.pattern : `-${r.pattern}`));
  }

  /** Whether the event is selected (`initial` when no pattern matches it). */
  selects(name: string, initial = false): boolean {
    const key = initial ? `+${name}` : name;
    let selected = this.answers.get(key);
    if (selected === undefined) {
      selected = initial;
      for (const rule of this.rules) if (rule.regexp.test(name)) selected = rule.enable;
      this.answers.set(key, selected);
    }
    return selected;
  }

  /** The patterns (in pattern form, each once) that match none of `events`: likely typos. */
  matchingNone(events: readonly string[]): string[] {
    const none: string[] = [];
    for (const rule of this.rules) {
      const p = rule.enable ? rule.pattern : `-${rule.pattern}`;
      if (!none.includes(p) && !events.some((e) => rule.regexp.test(e))) none.push(p);
    }
    return none;
  }
}
