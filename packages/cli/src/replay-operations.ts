/**
 * The guest-visible operation a trace line stands for (an RTAS call, a TCE hypercall, a DMA
 * translation, a table allocation), its fields read and checked as QEMU prints them.
 */
import { formatHex, type ParsedTraceLine } from '@ddw/machine';
import { TCE_LIST_MAX } from '@ddw/spapr-iommu';

/** An input line with a field no QEMU would print: the line is skipped, naming the field. */
export class ImpossibleField extends Error {
  constructor(
    readonly field: string,
    readonly why: string,
  ) {
    super(`${field}: ${why}`);
  }
}

/** What an operation line asks for, its fields checked. */
export type Operation =
  | { kind: 'new_table'; liobn: number }
  | { kind: 'ddw_query'; buid: bigint; addr: number }
  | { kind: 'ddw_create'; buid: bigint; addr: number; pageShift: number; windowShift: number; liobn: number }
  | { kind: 'ddw_remove'; liobn: number }
  | { kind: 'ddw_reset'; buid: bigint; addr: number }
  | { kind: 'put'; liobn: bigint; ioba: bigint; tce: bigint }
  | { kind: 'get'; liobn: bigint; ioba: bigint }
  | { kind: 'stuff'; liobn: bigint; ioba: bigint; tce: bigint; npages: bigint }
  | { kind: 'indirect'; liobn: bigint; ioba: bigint; list: bigint; last: bigint; tceN: bigint }
  | { kind: 'xlate'; liobn: bigint; addr: bigint }
  | { kind: 'unsupported' };

const HEX = /^0x[0-9a-fA-F]+$/;
const DECIMAL = /^\d+$/;

function shown(value: string): string {
  return JSON.stringify(value.length > 24 ? `${value.slice(0, 24)}…` : value);
}

/** An unsigned field of `bits` bits, as QEMU prints them (0x-hex, or decimal). */
function unsigned(fields: Record<string, string>, field: string, bits: 32 | 64): bigint {
  const text = fields[field];
  if (text === undefined || text === '') throw new ImpossibleField(field, 'missing');
  if (!HEX.test(text) && !DECIMAL.test(text))
    throw new ImpossibleField(field, `not a number: ${shown(text)}`);
  const digits = text.startsWith('0x') ? text.length - 2 : text.length;
  // Bounded work on a 1 MB run of digits: anything this long cannot fit.
  if (digits > 24) throw new ImpossibleField(field, `${shown(text)} does not fit in ${bits} bits`);
  const value = BigInt(text);
  if (value >> BigInt(bits) !== 0n)
    throw new ImpossibleField(field, `${shown(text)} does not fit in ${bits} bits`);
  return value;
}

function powerOfTwoShift(fields: Record<string, string>, field: string): number {
  const value = unsigned(fields, field, 64);
  if (value === 0n || (value & (value - 1n)) !== 0n) {
    throw new ImpossibleField(field, `${formatHex(value)} is not a power of two`);
  }
  return value.toString(2).length - 1;
}

/** Reads the fields an operation needs; throws ImpossibleField for a missing or impossible one. */
export function readOperation(short: string, p: ParsedTraceLine): Operation {
  const f = p.fields;
  switch (short) {
    case 'new_table':
      return { kind: 'new_table', liobn: Number(unsigned(f, 'liobn', 32)) };
    case 'ddw_query':
      return { kind: 'ddw_query', buid: unsigned(f, 'buid', 64), addr: Number(unsigned(f, 'addr', 32)) };
    case 'ddw_create':
      return {
        kind: 'ddw_create',
        buid: unsigned(f, 'buid', 64),
        addr: Number(unsigned(f, 'addr', 32)),
        pageShift: powerOfTwoShift(f, 'page size'),
        windowShift: powerOfTwoShift(f, 'requested'),
        liobn: Number(unsigned(f, 'liobn', 32)),
      };
    case 'ddw_remove':
      return { kind: 'ddw_remove', liobn: Number(unsigned(f, 'liobn', 32)) };
    case 'ddw_reset':
      return { kind: 'ddw_reset', buid: unsigned(f, 'buid', 64), addr: Number(unsigned(f, 'addr', 32)) };
    case 'put':
    case 'pci_put':
      return {
        kind: 'put',
        liobn: unsigned(f, 'liobn', 64),
        ioba: unsigned(f, 'ioba', 64),
        tce: unsigned(f, 'tce', 64),
      };
    case 'get':
    case 'pci_get':
      return { kind: 'get', liobn: unsigned(f, 'liobn', 64), ioba: unsigned(f, 'ioba', 64) };
    case 'stuff':
    case 'pci_stuff': {
      const text = f.npages;
      // npages is printed signed (PRId64): a negative count is a uint64 above 2^63, more than
      // any window has entries, which QEMU refuses with H_PARAMETER before its trace point.
      if (text !== undefined && /^-\d+$/.test(text)) {
        throw new ImpossibleField(
          'npages',
          `${shown(text)} is negative as printed (QEMU prints npages signed), so the uint64 count is above 2^63: more than any window has entries (QEMU returns H_PARAMETER without tracing)`,
        );
      }
      return {
        kind: 'stuff',
        liobn: unsigned(f, 'liobn', 64),
        ioba: unsigned(f, 'ioba', 64),
        tce: unsigned(f, 'tcevalue', 64),
        npages: unsigned(f, 'npages', 64),
      };
    }
    case 'indirect':
    case 'pci_indirect': {
      const last = unsigned(f, 'iobaN', 64);
      if (last >= BigInt(TCE_LIST_MAX)) {
        throw new ImpossibleField(
          'iobaN',
          `${formatHex(last)} is above ${formatHex(TCE_LIST_MAX - 1)}: H_PUT_TCE_INDIRECT takes at most ${TCE_LIST_MAX} TCEs (QEMU returns H_PARAMETER without tracing)`,
        );
      }
      return {
        kind: 'indirect',
        liobn: unsigned(f, 'liobn', 64),
        ioba: unsigned(f, 'ioba', 64),
        list: unsigned(f, 'tcelist', 64),
        last,
        tceN: unsigned(f, 'tceN', 64),
      };
    }
    case 'xlate':
      return {
        kind: 'xlate',
        liobn: unsigned(f, 'liobn', 64),
        addr: unsigned({ ioba: p.positional[0] ?? '' }, 'ioba', 64),
      };
    default:
      return { kind: 'unsupported' };
  }
}
