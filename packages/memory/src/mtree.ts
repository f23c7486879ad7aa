import type { AddressSpace } from './address-space.js';
import type { AliasRegion } from './alias.js';
import type { RamRegion } from './ram.js';
import type { MemoryRegion } from './region.js';

export interface MtreeOptions {
  /** Print the rendered flat views instead of the region hierarchy (`info mtree -f`). */
  flat?: boolean;
  /** Also print disabled regions, marked [disabled] (`info mtree -D`). */
  disabled?: boolean;
}

const INDENT = '  ';

/** QEMU's `info mtree` text for these address spaces. */
export function mtree(addressSpaces: readonly AddressSpace[], options: MtreeOptions = {}): string {
  return options.flat ? flatViews(addressSpaces) : hierarchy(addressSpaces, options.disabled ?? false);
}

function hex64(v: bigint): string {
  return BigInt.asUintN(64, v).toString(16).padStart(16, '0');
}

/** The last address of a region of `size` bytes placed at `start` (QEMU's MR_SIZE arithmetic). */
function lastAddress(start: bigint, size: bigint): bigint {
  return start + (size === 0n ? 0n : size - 1n);
}

/** QEMU's memory_region_type: what an access to the region does. */
export function regionTypeName(mr: MemoryRegion): string {
  if (mr.kind === 'alias') return regionTypeName((mr as AliasRegion).target);
  if (mr.kind === 'ram') return (mr as RamRegion).ramDevice ? 'ramd' : mr.readonly ? 'rom' : 'ram';
  return 'i/o';
}

function groupByRoot(addressSpaces: readonly AddressSpace[]): Map<MemoryRegion, AddressSpace[]> {
  const groups = new Map<MemoryRegion, AddressSpace[]>();
  for (const as of addressSpaces) {
    const group = groups.get(as.root);
    if (group) group.push(as);
    else groups.set(as.root, [as]);
  }
  return groups;
}

function hierarchy(addressSpaces: readonly AddressSpace[], showDisabled: boolean): string {
  const out: string[] = [];
  const aliasTargets: MemoryRegion[] = [];
  for (const [root, group] of groupByRoot(addressSpaces)) {
    for (const as of [...group].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      out.push(`address-space: ${as.name}\n`);
    }
    printRegion(out, root, 1, 0n, aliasTargets, showDisabled);
    out.push('\n');
  }
  // Regions reached only through aliases are printed on their own, as QEMU does.
  for (let i = 0; i < aliasTargets.length; i++) {
    const mr = aliasTargets[i]!;
    out.push(`memory-region: ${mr.name}\n`);
    printRegion(out, mr, 1, 0n, aliasTargets, showDisabled);
    out.push('\n');
  }
  return out.join('');
}

function printRegion(
  out: string[],
  mr: MemoryRegion,
  level: number,
  base: bigint,
  aliasTargets: MemoryRegion[],
  showDisabled: boolean,
): void {
  const start = base + mr.addr;
  const end = lastAddress(start, mr.size);
  const disabled = mr.enabled ? '' : ' [disabled]';
  const head = `${INDENT.repeat(level)}${hex64(start)}-${hex64(end)} (prio ${mr.priority}, ${regionTypeName(mr)}): `;
  if (mr.kind === 'alias') {
    const alias = mr as AliasRegion;
    if (!aliasTargets.includes(alias.target)) aliasTargets.push(alias.target);
    if (mr.enabled || showDisabled) {
      const aliasEnd = lastAddress(alias.offset, mr.size);
      out.push(
        `${head}alias ${mr.name} @${alias.target.name} ${hex64(alias.offset)}-${hex64(aliasEnd)}${disabled}\n`,
      );
    }
  } else if (mr.enabled || showDisabled) {
    out.push(`${head}${mr.name}${disabled}\n`);
  }
  // Children by address, and by descending priority at the same address.
  const children = [...mr.subregions].sort((a, b) =>
    a.addr !== b.addr ? (a.addr < b.addr ? -1 : 1) : b.priority - a.priority,
  );
  for (const sub of children) printRegion(out, sub, level + 1, start, aliasTargets, showDisabled);
}

function flatViews(addressSpaces: readonly AddressSpace[]): string {
  const out: string[] = [];
  let counter = 0;
  for (const [root, group] of groupByRoot(addressSpaces)) {
    out.push(`FlatView #${counter++}\n`);
    for (const as of group) {
      const aliasNote = root.kind === 'alias' ? `, alias ${(root as AliasRegion).target.name}` : '';
      out.push(` AS "${as.name}", root: ${root.name}${aliasNote}\n`);
    }
    out.push(` Root memory region: ${root.name}\n`);
    const ranges = group[0]!.flatView.ranges;
    if (ranges.length === 0) {
      out.push(`${INDENT}No rendered FlatView\n\n`);
      continue;
    }
    for (const r of ranges) {
      const type = r.readonly ? 'rom' : regionTypeName(r.mr);
      const at = r.offsetInRegion !== 0n ? ` @${hex64(r.offsetInRegion)}` : '';
      out.push(
        `${INDENT}${hex64(r.start)}-${hex64(lastAddress(r.start, r.size))} (prio ${r.mr.priority}, ${type}): ${r.mr.name}${at}\n`,
      );
    }
    out.push('\n');
  }
  return out.join('');
}
