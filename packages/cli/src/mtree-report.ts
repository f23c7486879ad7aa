import { formatHex, type Machine } from '@ddw/machine';
import { type AliasRegion, type MemoryRegion, regionTypeName } from '@ddw/memory';
import * as z from 'zod';

const hex = z.string().regex(/^0x[0-9a-f]+$/);

export interface MtreeRegion {
  name: string;
  /** Where the region starts, absolute in its address space, and its last address. */
  start: string;
  end: string;
  priority: number;
  /** QEMU's type: ram, rom, ramd or i/o. */
  type: string;
  kind: string;
  enabled: boolean;
  alias?: { target: string; offset: string };
  subregions: MtreeRegion[];
}

const regionSchema: z.ZodType<MtreeRegion> = z.lazy(() =>
  z.object({
    name: z.string(),
    start: hex,
    end: hex,
    priority: z.number().int(),
    type: z.string(),
    kind: z.string(),
    enabled: z.boolean(),
    alias: z.object({ target: z.string(), offset: hex }).optional(),
    subregions: z.array(regionSchema),
  }),
);

/** `ddw info mtree --json`: the memory tree (or with --flat the flat views) as data. */
export const mtreeReportSchema = z.object({
  schemaVersion: z.literal(1),
  kind: z.literal('mtree'),
  addressSpaces: z.array(
    z.object({
      name: z.string(),
      root: z.string(),
      tree: regionSchema.optional(),
      flat: z
        .array(
          z.object({
            start: hex,
            end: hex,
            type: z.string(),
            region: z.string(),
            offsetInRegion: hex,
            priority: z.number().int(),
          }),
        )
        .optional(),
    }),
  ),
});

export type MtreeReport = z.infer<typeof mtreeReportSchema>;

function lastAddress(start: bigint, size: bigint): bigint {
  return start + (size === 0n ? 0n : size - 1n);
}

function regionOf(mr: MemoryRegion, base: bigint, disabled: boolean): MtreeRegion | undefined {
  if (!mr.enabled && !disabled) return undefined;
  const start = base + mr.addr;
  const children = [...mr.subregions].sort((a, b) =>
    a.addr !== b.addr ? (a.addr < b.addr ? -1 : 1) : b.priority - a.priority,
  );
  const alias = mr.kind === 'alias' ? (mr as AliasRegion) : undefined;
  return {
    name: mr.name,
    start: formatHex(BigInt.asUintN(64, start)),
    end: formatHex(BigInt.asUintN(64, lastAddress(start, mr.size))),
    priority: mr.priority,
    type: regionTypeName(mr),
    kind: mr.kind,
    enabled: mr.enabled,
    ...(alias ? { alias: { target: alias.target.name, offset: formatHex(alias.offset) } } : {}),
    subregions: children
      .map((c) => regionOf(c, start, disabled))
      .filter((c): c is MtreeRegion => c !== undefined),
  };
}

/** The machine's address spaces as `info mtree` shows them, as data. */
export function mtreeReport(machine: Machine, options: { flat: boolean; disabled: boolean }): MtreeReport {
  return {
    schemaVersion: 1,
    kind: 'mtree',
    addressSpaces: machine.addressSpaces.map((as) => {
      const entry = { name: as.name, root: as.root.name };
      if (options.flat) {
        return {
          ...entry,
          flat: as.flatView.ranges.map((r) => ({
            start: formatHex(r.start),
            end: formatHex(lastAddress(r.start, r.size)),
            type: r.readonly ? 'rom' : regionTypeName(r.mr),
            region: r.mr.name,
            offsetInRegion: formatHex(r.offsetInRegion),
            priority: r.mr.priority,
          })),
        };
      }
      const tree = regionOf(as.root, 0n, options.disabled);
      return tree ? { ...entry, tree } : entry;
    }),
  };
}
