/**
 * The replay of a QEMU trace on a model machine: the Replayer, which turns each input line into the
 * guest-visible operation it stands for and keeps the books of which model lines account for which
 * input lines, and replayTrace, the same over lines in memory. Browser-safe.
 */
import {
  ConfigError,
  formatHex,
  H_GET_TCE,
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_STUFF_TCE,
  type Machine,
  type ParsedTraceLine,
  parseTraceLine,
  TraceBus,
  TraceSelection,
} from '@ddw/machine';
import { SpaprIommuTokens } from '@ddw/spapr-iommu';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import {
  eventName,
  MODELLED_EVENT,
  MODELLED_PATTERNS,
  modelledEvents,
  OPERATION_EVENT,
} from './replay-events.js';
import { ImpossibleField, type Operation, readOperation } from './replay-operations.js';
import { normalizeText } from './trace-diff.js';
import type { InputLine } from './trace-lines.js';

/**
 * How many model lines an input line may still account for after the model printed them (side
 * effects of an operation, e.g. the 262 144 translations of a VFIO replay of a 1 GiB window).
 */
const UNMATCHED_WINDOW = 1 << 19;
/** How far the replay looks ahead (in modelled input lines) for the operation after a new_table. */
const LOOKAHEAD = 4096;
/** Skips kept for the JSON report (and for ReplayResult). */
export const MAX_SKIPS_KEPT = 1000;
/** Characters of a skipped line echoed in its message. */
const ECHO_CHARS = 120;

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
      if (name !== undefined && MODELLED_EVENT.test(name)) {
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
    if (!parsed || !MODELLED_EVENT.test(parsed.name)) return;
    const short = parsed.name.replace(MODELLED_EVENT, '');
    let op: Operation | undefined;
    if (OPERATION_EVENT.test(parsed.name)) {
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
            `${op.npages} is more than the ${table.nbTable} entries of LIOBN ${formatHex(table.liobn)}'s window in this model (QEMU returns H_PARAMETER without tracing); not replayed, but compared: the diff shows it`,
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
        if (!table || !phb) throw new Error(`no PHB window has LIOBN ${formatHex(op.liobn)}`);
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

function phbsOf(machine: Machine) {
  return machine.get(SpaprPciTokens.Phbs);
}

function tablesOf(machine: Machine) {
  return machine.get(SpaprIommuTokens.Tables);
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
