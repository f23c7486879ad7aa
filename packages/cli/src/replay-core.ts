/** The replay of a QEMU trace, without files: browser-safe (replay.ts reads the file in Node). */
import {
  ConfigError,
  H_GET_TCE,
  H_PUT_TCE,
  type Machine,
  type ParsedTraceLine,
  parseTraceLine,
  resolve,
  TraceBus,
  TraceSelection,
} from '@ddw/machine';
import { H_PUT_TCE_INDIRECT, H_STUFF_TCE, SpaprIommuTokens, TCE_LIST_MAX } from '@ddw/spapr-iommu';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import * as z from 'zod';
import type { CommandIO } from './io.js';
import { comparisonSummary, normalizeText, TraceComparer, type TraceComparison } from './trace-diff.js';
import type { InputLine } from './trace-lines.js';

/** Events the model reproduces; other lines of a QEMU log (MSI, LSI, ...) are outside its scope. */
const MODELLED = /^(spapr_iommu_|vfio_)/;
/** The same, as trace patterns: the replay's bus always traces all of them. */
const MODELLED_PATTERNS = ['spapr_iommu_*', 'vfio_*'];
/** Lines that stand for a guest-visible operation; the rest (VFIO's) are only its consequences. */
const OPERATION = /^spapr_iommu_/;

/**
 * How many model lines an input line may still account for after the model printed them (side
 * effects of an operation, e.g. the 262 144 translations of a VFIO replay of a 1 GiB window).
 */
const UNMATCHED_WINDOW = 1 << 19;
/** How far the replay looks ahead (in modelled input lines) for the operation after a new_table. */
const LOOKAHEAD = 4096;
/** Skip messages printed on stderr before the rest are only counted. */
const MAX_SKIP_MESSAGES = 20;
/** Skips kept for the JSON report (and for ReplayResult). */
const MAX_SKIPS_KEPT = 1000;
/** Characters of a skipped line echoed in its message. */
const ECHO_CHARS = 120;

/** The event name of a QEMU log line (as parseTraceLine reads it), without parsing its fields. */
const LOG_LINE_NAME = /^(?:\d+@\d+\.\d{6}:)?([A-Za-z_]\w*)(?: [^\n\r\u2028\u2029]*)?$/;

function eventName(line: string): string | undefined {
  return LOG_LINE_NAME.exec(line)?.[1];
}

/**
 * The events to compare when the user names none: the TCE events, and each VFIO event the trace
 * has (QEMU was run with some selection of them; an event it did not record says nothing).
 */
export function defaultReplayPatterns(input: Iterable<string>): string[] {
  const vfio = new Set<string>();
  for (const line of input) {
    const name = eventName(line.endsWith('\r') ? line.slice(0, -1) : line);
    if (name?.startsWith('vfio_')) vfio.add(name);
  }
  return ['spapr_iommu_*', ...vfio];
}

/** An input line the replay could not use, and why. */
export interface ReplaySkip {
  /** 1-based line number in the input. */
  line: number;
  event: string;
  /** The field whose value is impossible or missing, if the reason is one field. */
  field?: string;
  reason: string;
  /** The start of the line (ECHO_CHARS characters and an ellipsis at most). */
  echo: string;
}

/** `line N: <event>: <field>: <why>`. */
export function describeSkip(skip: ReplaySkip): string {
  return `line ${skip.line}: ${skip.event}: ${skip.field !== undefined ? `${skip.field}: ` : ''}${skip.reason}`;
}

export interface ReplayResult {
  /** The model's own trace lines the patterns select, in QEMU's log format. */
  lines: string[];
  /** The input lines that were in scope (modelled events selected by the patterns). */
  expected: string[];
  /** Input lines that named an operation the replay could not perform, as describeSkip prints them. */
  skipped: string[];
}

/** What a replay reports as it goes (each callback is optional). */
export interface ReplayListener {
  /** A model line the user's patterns select. */
  line?(line: string): void;
  /** An input line in scope for the comparison (`${name} ${text}`, no timestamp). */
  expected?(line: string): void;
  /** An input line the replay skipped. */
  skip?(skip: ReplaySkip): void;
}

export interface ReplayOptions extends ReplayListener {
  /** The user's selection, as QEMU -trace patterns (`-PATTERN` deselects). */
  patterns: readonly string[];
  /**
   * The modelled events the input has (all when absent): model lines of other events cannot
   * account for any input line, so the bookkeeping does not keep them.
   */
  inputEvents?: ReadonlySet<string>;
}

/** The user's --trace selection (QEMU's rules); an empty pattern is refused as a --trace mistake. */
function userSelection(patterns: readonly string[]): TraceSelection {
  for (const pattern of patterns) {
    if (pattern === '' || pattern === '-') {
      throw new ConfigError(
        '--trace',
        `the pattern "${pattern}" names no event`,
        'write an event name or a glob such as spapr_iommu_*, or -NAME to leave one out',
        { subject: 'ddw replay' },
      );
    }
  }
  return new TraceSelection(patterns);
}

/** An input line with a field no QEMU would print: the line is skipped, naming the field. */
class ImpossibleField extends Error {
  constructor(
    readonly field: string,
    readonly why: string,
  ) {
    super(`${field}: ${why}`);
  }
}

/** A modelled input line, read and checked. */
interface InputEvent {
  readonly number: number;
  readonly parsed: ParsedTraceLine;
  /** The name without spapr_iommu_ / vfio_. */
  readonly short: string;
  readonly key: string;
  readonly op: Operation | undefined;
  readonly raw: string;
}

/** What an operation line asks for, its fields checked. */
type Operation =
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
    throw new ImpossibleField(field, `0x${value.toString(16)} is not a power of two`);
  }
  return value.toString(2).length - 1;
}

/** Reads the fields an operation needs; throws ImpossibleField for a missing or impossible one. */
function readOperation(short: string, p: ParsedTraceLine): Operation {
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
          `0x${last.toString(16)} is above 0x${(TCE_LIST_MAX - 1).toString(16)}: H_PUT_TCE_INDIRECT takes at most ${TCE_LIST_MAX} TCEs (QEMU returns H_PARAMETER without tracing)`,
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

function echo(text: string): string {
  return text.length > ECHO_CHARS ? `${text.slice(0, ECHO_CHARS)}…` : text;
}

/**
 * Drives a machine with the guest-visible operations a QEMU trace implies, one input line at a
 * time, and reports what the model itself traces. Every output line is computed by the model: the
 * input only decides which RTAS calls, hypercalls, DMA translations and resets happen, and with
 * which arguments.
 *
 * The machine's bus always traces every modelled event, whatever the user selected: the
 * bookkeeping below works from the model's own lines, and the selection only filters what is
 * reported. Lines the model already produced as a side effect of an earlier operation (a table
 * allocation during create or reset, the reset that follows removing the last window) are not
 * replayed twice; a table allocation nothing else explains is a machine reset.
 *
 * Memory: the model lines no input line has accounted for yet (at most UNMATCHED_WINDOW, the
 * oldest forgotten first), and up to LOOKAHEAD input lines while a new_table waits for the next
 * operation.
 */
export class Replayer {
  private finished = false;
  private readonly queue: InputEvent[] = [];
  /** Operation lines in the queue. */
  private queuedOperations = 0;
  /** Model lines not yet accounted for: key -> their sequence numbers, oldest first. */
  private readonly unmatched = new Map<string, number[]>();
  private unmatchedCount = 0;
  private sequence = 0;
  /** The operation being replayed, and the lines of its own event the model printed meanwhile. */
  private current: { name: string; printed: { key: string; seq: number }[] } | undefined;
  /** The last two operations replayed (short names), newest first. */
  private readonly previous: string[] = [];
  /** The IOMMU page shift the traced guest used per LIOBN, from its ddw_create lines. */
  private readonly tracedShift = new Map<number, number>();
  private readonly selection: TraceSelection;
  private machineRef: Machine | undefined;
  private phbs!: ReturnType<typeof phbsOf>;
  private tables!: ReturnType<typeof tablesOf>;

  private constructor(
    private readonly trace: TraceBus,
    private readonly options: ReplayOptions,
  ) {
    this.selection = userSelection(options.patterns);
  }

  /** Builds the machine on a bus that traces every modelled event; its boot is traced like the rest. */
  static async start(
    buildMachine: (trace: TraceBus) => Promise<Machine>,
    options: ReplayOptions,
  ): Promise<Replayer> {
    const trace = new TraceBus();
    trace.setPatterns(MODELLED_PATTERNS);
    const replayer = new Replayer(trace, options);
    trace.addSink({ write: (line) => replayer.modelLine(line) });
    const machine = await buildMachine(trace);
    replayer.machineRef = machine;
    replayer.phbs = phbsOf(machine);
    replayer.tables = tablesOf(machine);
    return replayer;
  }

  get machine(): Machine {
    return this.machineRef!;
  }

  /** What the bookkeeping holds now: model lines not accounted for, input lines queued. */
  held(): { unmatched: number; queued: number } {
    return { unmatched: this.unmatchedCount, queued: this.queue.length };
  }

  /** The user's patterns that select none of the events the model traces. */
  patternsMatchingNothing(): string[] {
    return this.selection.matchingNone(this.trace.events().map((e) => e.name));
  }

  private modelLine(line: string): void {
    if (this.finished) return;
    const space = line.indexOf(' ');
    const name = space < 0 ? line : line.slice(0, space);
    if (this.selection.selects(name)) this.options.line?.(line);
    if (this.options.inputEvents && !this.options.inputEvents.has(name)) return;
    const key = normalizeText(line);
    const seq = this.sequence++;
    const list = this.unmatched.get(key);
    if (list) list.push(seq);
    else this.unmatched.set(key, [seq]);
    this.unmatchedCount++;
    if (this.current?.name === name) this.current.printed.push({ key, seq });
    if (this.unmatchedCount > UNMATCHED_WINDOW) this.forgetOld();
  }

  /** Forgets model lines printed more than UNMATCHED_WINDOW lines ago. */
  private forgetOld(): void {
    const oldest = this.sequence - UNMATCHED_WINDOW / 2;
    for (const [key, list] of this.unmatched) {
      let drop = 0;
      while (drop < list.length && list[drop]! < oldest) drop++;
      if (drop === 0) continue;
      this.unmatchedCount -= drop;
      if (drop === list.length) this.unmatched.delete(key);
      else list.splice(0, drop);
    }
  }

  /** Accounts for an input line with a line the model has already printed, if there is one. */
  private consume(key: string): boolean {
    const list = this.unmatched.get(key);
    if (!list) return false;
    list.shift();
    if (list.length === 0) this.unmatched.delete(key);
    this.unmatchedCount--;
    return true;
  }

  private forget(key: string, seq: number): void {
    const list = this.unmatched.get(key);
    const at = list?.indexOf(seq) ?? -1;
    if (!list || at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) this.unmatched.delete(key);
    this.unmatchedCount--;
  }

  private skip(number: number, event: string, raw: string, reason: string, field?: string): void {
    this.options.skip?.({
      line: number,
      event,
      reason,
      echo: echo(raw),
      ...(field !== undefined ? { field } : {}),
    });
  }

  /** One line of the input. */
  push(input: InputLine): void {
    if (this.finished) throw new Error('Replayer.push after finish');
    const raw = input.text;
    if (input.length !== undefined) {
      const name = eventName(raw.slice(0, 200).split(' ')[0] ?? '');
      if (name !== undefined && MODELLED.test(name)) {
        this.skip(
          input.number,
          name,
          raw,
          `the line is ${input.length} characters long: not a QEMU trace line`,
        );
      }
      return;
    }
    const parsed = parseTraceLine(raw);
    if (!parsed || !MODELLED.test(parsed.name)) return;
    const short = parsed.name.replace(MODELLED, '');
    let op: Operation | undefined;
    if (OPERATION.test(parsed.name)) {
      try {
        op = readOperation(short, parsed);
      } catch (error) {
        if (!(error instanceof ImpossibleField)) throw error;
        this.skip(input.number, parsed.name, raw, error.why, error.field);
        return;
      }
    }
    const key = normalizeText(`${parsed.name} ${parsed.text}`);
    if (this.trace.event(parsed.name) && this.selection.selects(parsed.name)) {
      this.options.expected?.(`${parsed.name} ${parsed.text}`);
    }
    this.queue.push({ number: input.number, parsed, short, key, op, raw });
    if (op) this.queuedOperations++;
    this.drain(false);
  }

  /** Replays queued lines; a new_table waits until the operation after it is known. */
  private drain(final: boolean): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (
        head.short === 'new_table' &&
        !final &&
        this.queuedOperations < 2 &&
        this.queue.length <= LOOKAHEAD
      ) {
        return;
      }
      this.queue.shift();
      if (head.op) this.queuedOperations--;
      this.replay(head);
    }
  }

  /** The end of the input: replays what is queued and stops listening to the model. */
  finish(): Machine {
    this.drain(true);
    // What the machine prints later (its teardown) is not part of the replay.
    this.finished = true;
    return this.machine;
  }

  private pageShift(liobn: number): bigint {
    const traced = this.tracedShift.get(liobn);
    if (traced !== undefined) return BigInt(traced);
    const table = this.tables.get(liobn);
    return BigInt(table?.enabled ? table.pageShift : 12);
  }

  private replay(line: InputEvent): void {
    const op = line.op;
    // What the traced guest set up, whether or not the model printed the line already.
    if (op?.kind === 'ddw_create') this.tracedShift.set(op.liobn, op.pageShift);
    if (op?.kind === 'ddw_reset') {
      for (const t of this.phbs.byBuid(op.buid)?.windows ?? []) this.tracedShift.delete(t.liobn);
    }
    const followsRemove =
      this.previous[0] === 'ddw_remove' ||
      (this.previous[0] === 'new_table' && this.previous[1] === 'ddw_remove');
    if (op) {
      this.previous.unshift(op.kind === 'unsupported' ? line.short : op.kind);
      this.previous.length = Math.min(this.previous.length, 2);
    }
    if (this.consume(line.key)) return;
    if (!op) return; // a consequence the model did not produce: the diff shows it
    this.current = { name: line.parsed.name, printed: [] };
    try {
      this.perform(op, followsRemove);
    } catch (error) {
      this.skip(
        line.number,
        line.parsed.name,
        line.raw,
        error instanceof Error ? error.message : String(error),
      );
    }
    const printed = this.current.printed;
    this.current = undefined;
    // The operation's own line, if it printed one, is now accounted for; one that differs from
    // QEMU's is a difference, not a line a later input line may claim.
    if (!this.consume(line.key)) {
      const own = printed[printed.length - 1];
      if (own) this.forget(own.key, own.seq);
    }
  }

  private perform(op: Operation, followsRemove: boolean): void {
    const { machine, phbs, tables } = this;
    switch (op.kind) {
      case 'new_table': {
        // The next operation (VFIO lines in between are consequences of this allocation).
        const next = this.queue.find((l) => l.op !== undefined)?.op;
        const explained =
          next !== undefined &&
          ((next.kind === 'ddw_create' && next.liobn === op.liobn) || next.kind === 'ddw_reset');
        if (!explained && tables.get(op.liobn)) {
          machine.reset();
          this.tracedShift.clear();
        }
        break;
      }
      case 'ddw_query': {
        const phb = phbs.byBuid(op.buid);
        const nret = phb && offersQueryNret6(machine, phb) ? 6 : 5;
        rtas(machine, 'ibm,query-pe-dma-window', [op.addr, ...buidCells(op.buid)], nret);
        break;
      }
      case 'ddw_create':
        rtas(
          machine,
          'ibm,create-pe-dma-window',
          [op.addr, ...buidCells(op.buid), op.pageShift, op.windowShift],
          4,
        );
        break;
      case 'ddw_remove':
        rtas(machine, 'ibm,remove-pe-dma-window', [op.liobn], 1);
        break;
      case 'ddw_reset':
        // QEMU 7.1+ resets by itself after removing the last non-default window, tracing it
        // right after the remove: the guest made no such call, so a model without that rule
        // makes none either.
        if (!(followsRemove && op.addr === 0)) {
          rtas(machine, 'ibm,reset-pe-dma-window', [op.addr, ...buidCells(op.buid)], 1);
        }
        break;
      case 'put':
        machine.guest.hcall(H_PUT_TCE, op.liobn, op.ioba, op.tce);
        break;
      case 'get':
        machine.guest.hcall(H_GET_TCE, op.liobn, op.ioba);
        break;
      case 'stuff': {
        const table = tables.find(op.liobn);
        if (table?.enabled && op.npages > BigInt(table.nbTable)) {
          throw new ImpossibleField(
            'npages',
            `${op.npages} is more than the ${table.nbTable} entries of LIOBN 0x${table.liobn.toString(16)}'s window in this model (QEMU returns H_PARAMETER without tracing); not replayed, but compared: the diff shows it`,
          );
        }
        // The trace prints where the loop ended: the start is npages pages before it.
        const shift = this.pageShift(Number(op.liobn & 0xffffffffn));
        const start = BigInt.asUintN(64, op.ioba - (op.npages << shift));
        machine.guest.hcall(H_STUFF_TCE, op.liobn, start, op.tce, op.npages);
        break;
      }
      case 'indirect': {
        // The list is not in the trace; Linux fills it with consecutive pages ending in tceN.
        // op.last < 512 (checked when read), so this writes at most one 4 KiB page.
        const shift = this.pageShift(Number(op.liobn & 0xffffffffn));
        const perm = op.tceN & 3n;
        const base = op.tceN & ~((1n << shift) - 1n);
        for (let k = 0n; k <= op.last; k++) {
          const addr = BigInt.asUintN(64, base - ((op.last - k) << shift));
          machine.guest.memory.store(op.list + 8n * k, 8, addr | perm);
        }
        machine.guest.hcall(H_PUT_TCE_INDIRECT, op.liobn, op.ioba, op.list, op.last + 1n);
        break;
      }
      case 'xlate': {
        const liobn = Number(op.liobn & 0xffffffffn);
        const table = op.liobn >> 32n === 0n ? tables.get(liobn) : undefined;
        const phb = phbs.list.find((b) => b.tableFor(liobn));
        if (!table || !phb) throw new Error(`no PHB window has LIOBN 0x${op.liobn.toString(16)}`);
        if (!table.enabled) break; // nothing is mapped there: no device access reaches the IOMMU
        phb.dmaAddressSpace.translate(table.busOffset + op.addr, false);
        break;
      }
      case 'unsupported':
        throw new Error('not a guest-visible operation ddw replays');
    }
  }
}

/**
 * Replays `input` (the lines of a QEMU trace) on the machine `buildMachine` makes and collects
 * what the model traces. `patterns` selects the lines reported (and in scope), not what runs.
 * The machine is returned undisposed.
 */
export async function replayTrace(
  buildMachine: (trace: TraceBus) => Promise<Machine>,
  input: readonly string[],
  patterns: readonly string[],
): Promise<ReplayResult & { machine: Machine }> {
  const lines: string[] = [];
  const expected: string[] = [];
  const skipped: string[] = [];
  const replayer = await Replayer.start(buildMachine, {
    patterns,
    inputEvents: modelledEvents(input),
    line: (l) => lines.push(l),
    expected: (l) => expected.push(l),
    skip: (s) => {
      if (skipped.length < MAX_SKIPS_KEPT) skipped.push(describeSkip(s));
    },
  });
  input.forEach((text, i) => {
    replayer.push({ number: i + 1, text: text.endsWith('\r') ? text.slice(0, -1) : text });
  });
  return { machine: replayer.finish(), lines, expected, skipped };
}

function modelledEvents(input: Iterable<string>): Set<string> {
  const names = new Set<string>();
  for (const line of input) {
    const name = eventName(line.endsWith('\r') ? line.slice(0, -1) : line);
    if (name !== undefined && MODELLED.test(name)) names.add(name);
  }
  return names;
}

/** What a first read of the file found. */
interface TraceScan {
  lines: number;
  /** Modelled lines. */
  modelled: number;
  /** The modelled events it has, in order of first appearance. */
  events: Set<string>;
}

async function scanTrace(source: TraceSource): Promise<TraceScan> {
  const scan: TraceScan = { lines: 0, modelled: 0, events: new Set() };
  for await (const line of source.lines()) {
    scan.lines++;
    const name = line.length === undefined ? eventName(line.text) : undefined;
    if (name === undefined || !MODELLED.test(name)) continue;
    scan.modelled++;
    scan.events.add(name);
  }
  return scan;
}

/** A QEMU trace log to replay: read twice (a scan, then the replay), so each call starts over. */
export interface TraceSource {
  /** How messages and the JSON report name it (the path as given). */
  readonly name: string;
  lines(): AsyncIterable<InputLine>;
}

/** What `ddw replay` was asked to do. */
export interface ReplayCommandOptions {
  /** The QEMU trace log to replay. */
  file: string;
  /** Events to print and compare, as QEMU -trace (empty: the default selection). */
  patterns: readonly string[];
  /** Compare with the input and print a diff and "N compared, M differ". */
  check: boolean;
  /** Print one JSON object instead of text. */
  json: boolean;
  /** Builds the traced run's machine (from its QEMU options) on the given trace bus. */
  build: (trace: TraceBus) => Promise<Machine>;
}

/** The object `ddw replay --json` prints. */
export const replayReportSchema = z
  .object({
    schemaVersion: z.literal(1),
    kind: z.literal('replay'),
    /** The trace file replayed. */
    trace: z.string(),
    /** The selection used: the user's --trace patterns, or the default one. */
    patterns: z.array(z.string()),
    /** Whether the model was compared with the input (--check). */
    check: z.boolean(),
    /** With --check: the input lines in scope. */
    compared: z.number().int().nonnegative().optional(),
    /** With --check: lines only one side has (a lower bound when `exact` is false). */
    differ: z.number().int().nonnegative().optional(),
    /** With --check: false when the traces were too far apart to align (see `message`). */
    exact: z.boolean().optional(),
    /** With --check: the unified diff (`--- qemu`, `+++ ddw`, hunks); empty when nothing differs. */
    diff: z.string().optional(),
    /** With --check, when `exact` is false: why there is no diff. */
    message: z.string().optional(),
    /** Without --check: the model's lines the patterns select. */
    lines: z.array(z.string()).optional(),
    /** The first skipped input lines (at most 1000). */
    skipped: z.array(
      z.object({
        line: z.number().int().positive(),
        event: z.string(),
        reason: z.string(),
      }),
    ),
    /** How many input lines were skipped in all. */
    skippedTotal: z.number().int().nonnegative(),
  })
  .strict();

export type ReplayReport = z.infer<typeof replayReportSchema>;

/** Collects output into chunks: one write per 64 KiB, not one per line. */
class Output {
  private buffer = '';
  constructor(private readonly write: (text: string) => void) {}
  add(text: string): void {
    this.buffer += text;
    if (this.buffer.length >= 1 << 16) this.flush();
  }
  flush(): void {
    if (this.buffer !== '') this.write(this.buffer);
    this.buffer = '';
  }
}

/**
 * `ddw replay` on any source of lines (replay.ts reads a file; a browser a File): replays it and
 * prints the model's lines, or with `check` the comparison.
 * Returns the exit code: 0, or 1 when the model differs from QEMU. Input errors throw DdwErrors
 * (ConfigError for an unreadable file, a file with no trace line, a --check that compared nothing).
 */
export async function replaySource(
  source: TraceSource,
  options: Omit<ReplayCommandOptions, 'file'>,
  io: CommandIO,
): Promise<number> {
  const { check, json } = options;
  const file = source.name;
  const scan = await scanTrace(source);
  if (scan.modelled === 0) {
    const what =
      scan.lines === 0
        ? 'the file is empty'
        : `none of its ${scan.lines} lines is a trace line of an event ddw models (spapr_iommu_*, vfio_*)`;
    throw new ConfigError('content', what, "record one with qemu ... -trace 'spapr_iommu_*' -D FILE", {
      subject: `trace ${file}`,
    });
  }
  const patterns =
    options.patterns.length > 0
      ? [...options.patterns]
      : ['spapr_iommu_*', ...[...scan.events].filter((e) => e.startsWith('vfio_'))];

  const out = new Output(io.out);
  const comparer = check ? new TraceComparer() : undefined;
  const skips: ReplaySkip[] = [];
  let skippedTotal = 0;
  let firstLine = true;
  if (json && !check) {
    const head = JSON.stringify({ schemaVersion: 1, kind: 'replay', trace: file, patterns, check }, null, 2);
    out.add(`${head.slice(0, -2)},\n  "lines": [`);
  }
  const replayer = await Replayer.start(
    async (trace) => {
      const machine = await options.build(trace);
      // QEMU's error_report goes to stderr; so do the model's host-side errors.
      machine.events.on('host-error', (e) => io.err(`ddw: ${e.source}: ${e.message}\n`));
      return machine;
    },
    {
      patterns,
      inputEvents: scan.events,
      line: comparer
        ? (l) => comparer.addActual(normalizeText(l))
        : json
          ? (l) => {
              out.add(`${firstLine ? '' : ','}\n    ${JSON.stringify(l)}`);
              firstLine = false;
            }
          : (l) => out.add(`${l}\n`),
      expected: comparer ? (l) => comparer.addExpected(normalizeText(l)) : undefined,
      skip: (s) => {
        skippedTotal++;
        if (skips.length < MAX_SKIPS_KEPT) skips.push(s);
        if (!json && skippedTotal <= MAX_SKIP_MESSAGES) {
          io.err(`ddw replay: skipped ${describeSkip(s)}\n    ${s.echo}\n`);
        }
      },
    },
  );
  try {
    if (options.patterns.length > 0) {
      for (const pattern of replayer.patternsMatchingNothing()) {
        io.err(`ddw replay: warning: pattern "${pattern}" matches no trace event\n`);
      }
    }
    for await (const line of source.lines()) replayer.push(line);
    replayer.finish();
  } finally {
    replayer.machine.dispose();
  }
  if (!json && skippedTotal > MAX_SKIP_MESSAGES) {
    io.err(`ddw replay: ... and ${skippedTotal - MAX_SKIP_MESSAGES} more skipped lines\n`);
  }
  const skipped = skips.map((s) => ({
    line: s.line,
    event: s.event,
    reason: s.field !== undefined ? `${s.field}: ${s.reason}` : s.reason,
  }));

  if (!comparer) {
    if (json) {
      const tail = JSON.stringify({ skipped, skippedTotal }, null, 2);
      out.add(`${firstLine ? '' : '\n  '}],\n${tail.slice(2)}\n`);
    }
    out.flush();
    return 0;
  }
  const cmp = comparer.finish();
  if (cmp.compared === 0) {
    throw new ConfigError(
      '--trace',
      `${patterns.map((p) => JSON.stringify(p)).join(' ')} selects none of the ${scan.modelled} modelled lines of ${file}: nothing was compared`,
      `select events the trace has (it has ${[...scan.events].slice(0, 5).join(', ')}${scan.events.size > 5 ? ', ...' : ''})`,
      { subject: 'replay --check' },
    );
  }
  if (json) {
    const report: ReplayReport = {
      schemaVersion: 1,
      kind: 'replay',
      trace: file,
      patterns,
      check,
      compared: cmp.compared,
      differ: cmp.differ,
      exact: cmp.exact,
      diff: cmp.diff.length > 0 ? `${cmp.diff.join('\n')}\n` : '',
      ...(cmp.message !== undefined ? { message: cmp.message } : {}),
      skipped,
      skippedTotal,
    };
    out.add(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    if (cmp.message !== undefined) io.err(`ddw replay: ${cmp.message}\n`);
    for (const l of cmp.diff) out.add(`${l}\n`);
    out.add(`${comparisonSummary(cmp)}\n`);
  }
  out.flush();
  return cmp.differ > 0 ? 1 : 0;
}

export type { TraceComparison };

/** Two lines are the same event, host pointers and fds aside. */
export function sameEvent(a: ParsedTraceLine, b: ParsedTraceLine): boolean {
  return a.name === b.name && normalize(a) === normalize(b);
}

/** The text of a line without what differs between runs of the same QEMU (host pointers, fds). */
export function normalize(p: ParsedTraceLine): string {
  return normalizeText(p.text);
}

function phbsOf(machine: Machine) {
  return resolve(machine.container, SpaprPciTokens.Phbs);
}

function tablesOf(machine: Machine) {
  return resolve(machine.container, SpaprIommuTokens.Tables);
}

function buidCells(buid: bigint): [number, number] {
  return [Number(buid >> 32n), Number(buid & 0xffffffffn)];
}

/** The PHB advertises the 6-output query in ibm,ddw-extensions (a second entry of 1). */
function offersQueryNret6(machine: Machine, phb: SpaprPhb): boolean {
  const ext = machine.guest.deviceTree.getPropU32Cells(phb.nodePath, 'ibm,ddw-extensions');
  return ext !== undefined && ext[0]! >= 2 && ext[2] === 1;
}

function rtas(machine: Machine, call: string | number, args: number[], nret: number): void {
  machine.guest.rtasCall(call, args, nret);
}
