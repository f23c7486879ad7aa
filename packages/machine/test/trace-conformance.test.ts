import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type ParsedTraceLine, parseTraceLine, type TraceArg, TraceBus } from '../src/trace/index.js';

// The declarations exactly as QEMU 7.2's hw/ppc/trace-events has them (reference section 8.1).
const HW_PPC_TRACE_EVENTS = `
spapr_iommu_new_table(uint64_t liobn, void *table, int fd) "liobn=0x%"PRIx64" table=%p fd=%d"
spapr_iommu_pci_put(uint64_t liobn, uint64_t ioba, uint64_t tce, uint64_t ret) "liobn=0x%"PRIx64" ioba=0x%"PRIx64" tce=0x%"PRIx64" ret=%"PRId64
spapr_iommu_pci_get(uint64_t liobn, uint64_t ioba, uint64_t ret, uint64_t tce) "liobn=0x%"PRIx64" ioba=0x%"PRIx64" ret=%"PRId64" tce=0x%"PRIx64
spapr_iommu_pci_indirect(uint64_t liobn, uint64_t ioba, uint64_t tce, uint64_t iobaN, uint64_t tceN, uint64_t ret) "liobn=0x%"PRIx64" ioba=0x%"PRIx64" tcelist=0x%"PRIx64" iobaN=0x%"PRIx64" tceN=0x%"PRIx64" ret=%"PRId64
spapr_iommu_pci_stuff(uint64_t liobn, uint64_t ioba, uint64_t tce_value, uint64_t npages, uint64_t ret) "liobn=0x%"PRIx64" ioba=0x%"PRIx64" tcevalue=0x%"PRIx64" npages=%"PRId64" ret=%"PRId64
spapr_iommu_ddw_query(uint64_t buid, uint32_t cfgaddr, unsigned wa, uint64_t win_size, uint32_t pgmask) "buid=0x%"PRIx64" addr=0x%"PRIx32", %u windows available, max window size=0x%"PRIx64", mask=0x%"PRIx32
spapr_iommu_ddw_create(uint64_t buid, uint32_t cfgaddr, uint64_t pg_size, uint64_t req_size, uint64_t start, uint32_t liobn) "buid=0x%"PRIx64" addr=0x%"PRIx32", page size=0x%"PRIx64", requested=0x%"PRIx64", start addr=0x%"PRIx64", liobn=0x%"PRIx32
`;

// The public QEMU 7.2 sample traces, kept in the repository as test fixtures.
const TRACE_DIR = fileURLToPath(new URL('../../../test/fixtures/qemu-7.2', import.meta.url));

/** A field that must be present, as a bigint (hex with 0x, or signed decimal). */
function num(parsed: ParsedTraceLine, key: string): bigint {
  const text = parsed.fields[key];
  if (text === undefined) throw new Error(`${parsed.name}: no field "${key}" in "${parsed.text}"`);
  return BigInt(text);
}

/** How QEMU passes a signed return code to a uint64_t trace parameter. */
const asU64 = (value: bigint) => BigInt.asUintN(64, value);

/**
 * The arguments QEMU passed, recovered from the printed fields. Each is a number parsed from the
 * text, converted as the C caller would convert it; the formatter then has to reproduce the text.
 */
const ARGUMENTS: Record<string, (p: ParsedTraceLine) => TraceArg[]> = {
  spapr_iommu_new_table: (p) => [num(p, 'liobn'), num(p, 'table'), Number(num(p, 'fd'))],
  spapr_iommu_pci_stuff: (p) => [
    num(p, 'liobn'),
    num(p, 'ioba'),
    num(p, 'tcevalue'),
    num(p, 'npages'),
    asU64(num(p, 'ret')),
  ],
  spapr_iommu_pci_indirect: (p) => [
    num(p, 'liobn'),
    num(p, 'ioba'),
    num(p, 'tcelist'),
    num(p, 'iobaN'),
    num(p, 'tceN'),
    asU64(num(p, 'ret')),
  ],
  spapr_iommu_ddw_query: (p) => [
    num(p, 'buid'),
    Number(num(p, 'addr')),
    Number(p.positional[0]),
    num(p, 'max window size'),
    Number(num(p, 'mask')),
  ],
  spapr_iommu_ddw_create: (p) => [
    num(p, 'buid'),
    Number(num(p, 'addr')),
    num(p, 'page size'),
    num(p, 'requested'),
    num(p, 'start addr'),
    Number(num(p, 'liobn')),
  ],
};

describe.each(['v1-basic', 'v2-64k'])('re-formatting the real QEMU 7.2 trace %s', (sample) => {
  const lines = readFileSync(`${TRACE_DIR}/${sample}.trace`, 'utf8')
    .split('\n')
    .filter((l) => l !== '');
  const iommuLines = lines.filter((l) => l.startsWith('spapr_iommu_'));

  it('reproduces every spapr_iommu_* line from values parsed out of it', () => {
    const bus = new TraceBus();
    bus.defineAll(HW_PPC_TRACE_EVENTS, 'hw/ppc');
    bus.enable('spapr_iommu_*');
    const out = bus.collect();
    for (const line of iommuLines) {
      const parsed = parseTraceLine(line)!;
      const toArguments = ARGUMENTS[parsed.name];
      if (!toArguments) throw new Error(`no argument recovery for ${parsed.name}`);
      bus.event(parsed.name)!.emit(...toArguments(parsed));
    }
    expect(out.lines).toEqual(iommuLines);
    expect(iommuLines.length).toBeGreaterThan(500);
  });

  it('covers the query, create, stuff and indirect events', () => {
    const names = new Set(iommuLines.map((l) => parseTraceLine(l)!.name));
    expect([...names].sort()).toEqual(
      sample === 'v1-basic'
        ? [
            'spapr_iommu_ddw_create',
            'spapr_iommu_ddw_query',
            'spapr_iommu_new_table',
            'spapr_iommu_pci_indirect',
            'spapr_iommu_pci_stuff',
          ]
        : expect.arrayContaining([
            'spapr_iommu_ddw_create',
            'spapr_iommu_ddw_query',
            'spapr_iommu_pci_indirect',
          ]),
    );
  });

  it('adds the -msg timestamp=on prefix that parseTraceLine strips again', () => {
    const bus = new TraceBus({ timestamps: true, clock: () => 1_700_000_000_123_456, pid: 31337 });
    bus.defineAll(HW_PPC_TRACE_EVENTS);
    bus.enable('*');
    const out = bus.collect();
    const parsed = parseTraceLine(iommuLines[1]!)!;
    bus.event(parsed.name)!.emit(...ARGUMENTS[parsed.name]!(parsed));
    expect(out.lines[0]).toBe(`31337@1700000000.123456:${iommuLines[1]}`);
    expect(parseTraceLine(out.lines[0]!)).toEqual({
      ...parsed,
      pid: 31337,
      timestamp: 1_700_000_000_123_456,
    });
  });
});

it('prints a failed H_PUT_TCE_INDIRECT with its negative return code as QEMU does', () => {
  const bus = new TraceBus();
  bus.defineAll(HW_PPC_TRACE_EVENTS);
  bus.enable('spapr_iommu_pci_indirect');
  const out = bus.collect();
  bus.event('spapr_iommu_pci_indirect')!.emit(0x80000001n, 0x800000000000000n, 0x10008n, 0n, 0n, asU64(-4n));
  expect(out.lines).toEqual([
    'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000000000000 tcelist=0x10008 iobaN=0x0 tceN=0x0 ret=-4',
  ]);
});
