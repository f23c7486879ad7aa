import type { MemoryRegion } from './region.js';

/**
 * Memory transactions, as QEMU's memory_region_transaction_begin/commit: changes made inside a
 * transaction are rendered once, at the outermost commit, and listeners see one consistent diff.
 *
 * The depth is process-wide, as QEMU's is under its big lock (JavaScript is single-threaded), but
 * only the address spaces whose root can reach a changed region are re-rendered, so machines that
 * share a process do not pay for each other's changes.
 */

/** What a transaction needs of an address space: re-render and tell its listeners. */
export interface TopologyObserver {
  updateTopology(): void;
}

let depth = 0;
const pendingRoots = new Set<MemoryRegion>();

export function beginTransaction(): void {
  depth++;
}

export function commitTransaction(): void {
  if (depth === 0) {
    throw new Error('commitTransaction() without a matching beginTransaction()');
  }
  depth--;
  if (depth > 0 || pendingRoots.size === 0) return;
  // An update may itself change regions (a listener reacting to region_add): keep going until
  // quiet. A listener that throws does not stop the other address spaces from being updated.
  const errors: unknown[] = [];
  while (pendingRoots.size > 0) {
    const roots = [...pendingRoots];
    pendingRoots.clear();
    depth++;
    try {
      for (const root of roots) {
        for (const as of root.addressSpaces) {
          try {
            as.updateTopology();
          } catch (error) {
            errors.push(error);
          }
        }
      }
    } finally {
      depth--;
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, 'several memory listeners failed');
}

/** Runs `fn` inside one transaction and returns its value. */
export function transaction<T>(fn: () => T): T {
  beginTransaction();
  try {
    return fn();
  } finally {
    commitTransaction();
  }
}

export function transactionDepth(): number {
  return depth;
}

/**
 * Records that what `region` shows has changed: every root that can see it (through containers and
 * aliases) will be re-rendered at the end of the current transaction.
 */
export function markChanged(region: MemoryRegion): void {
  const seen = new Set<MemoryRegion>();
  const stack: MemoryRegion[] = [region];
  while (stack.length > 0) {
    const r = stack.pop()!;
    if (seen.has(r)) continue;
    seen.add(r);
    for (const alias of r.aliasedBy) stack.push(alias);
    if (r.container) stack.push(r.container);
    else if (r.addressSpaces.size > 0) pendingRoots.add(r);
  }
  if (depth === 0) {
    depth++;
    commitTransaction();
  }
}
