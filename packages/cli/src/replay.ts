import { readFileSync } from 'node:fs';
import {
  H_GET_TCE,
  H_PUT_TCE,
  type Machine,
  type ParsedTraceLine,
  parseTraceLine,
  resolve,
  TraceBus,
} from '@ddw/machine';
import { H_PUT_TCE_INDIRECT, H_STUFF_TCE, SpaprIommuTokens } from '@ddw/spapr-iommu';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import type { CommandIO } from './io.js';
import { compareTraces } from './trace-diff.js';

/** Events the model reproduces; other lines of a QEMU log (MSI, LSI, ...) are outside its scope. */
const MODELLED = /^(spapr_iommu_|vfio_)/;
/** Lines that stand for a guest-visible operation; the rest (VFIO's) are only its consequences. */
const OPERATION = /^spapr_iommu_/;

/**
 * The events to compare when the user names none: the TCE events, and each VFIO event the trace
 * has (QEMU was run with some selection of them; an event it did not record says nothing).
 */
export function defaultReplayPatterns(input: readonly string[]): string[] {
  const vfio = new Set<string>();
  for (const line of input) {
    const name = parseTraceLine(line)?.name;
    if (name?.startsWith('vfio_')) vfio.add(name);
  }
  return ['spapr_iommu_*', ...vfio];
}

export interface ReplayResult {
  /** The model's own trace lines, in QEMU's log format. */
  lines: string[];
  /** The input lines that were in scope (modelled events selected by the patterns). */
  expected: string[];
  /** Input lines that named an operation the replay could not perform (with why). */
  skipped: string[];
}

/**
 * Drives `machine` with the guest-visible operations a QEMU trace implies and collects what the
 * model itself traces. Every output line is computed by the model: the input only decides which
 * RTAS calls, hypercalls, DMA translations and resets happen, and with which arguments.
 *
 * Lines the model already produced as a side effect of an earlier operation (a table allocation
 * during create or reset, the reset that follows removing the last window) are not replayed
 * twice; a table allocation nothing else explains is a machine reset.
 */
export async function replayTrace(
  buildMachine: (trace: TraceBus) => Promise<Machine>,
  input: readonly string[],
  patterns: readonly string[],
): Promise<ReplayResult & { machine: Machine }> {
  const trace = new TraceBus();
  trace.setPatterns(patterns);
  const lines: string[] = [];
  const unmatched: ParsedTraceLine[] = []; // model lines no input line has accounted for yet
  trace.addSink({
    write(line) {
      lines.push(line);
      unmatched.push(parseTraceLine(line)!);
    },
  });
  // The model's boot (its first system reset) is traced like everything after it.
  const machine = await buildMachine(trace);
  const parsed = input.map((l) => parseTraceLine(l)).filter((p): p is ParsedTraceLine => p !== undefined);
  const relevant = parsed.filter((p) => MODELLED.test(p.name));
  const selected = relevant.filter((p) => trace.event(p.name)?.enabled ?? false);
  const skipped: string[] = [];
  const phbs = resolve(machine.container, SpaprPciTokens.Phbs);
  const tables = resolve(machine.container, SpaprIommuTokens.Tables);

  // The IOMMU page size the traced guest used per LIOBN, from its ddw_create lines: stuff and
  // indirect lines only make sense with it (a model under other options may have no such window).
  const tracedShift = new Map<number, number>();
  const pageShift = (liobn: number): bigint => {
    const traced = tracedShift.get(liobn);
    if (traced !== undefined) return BigInt(traced);
    const table = tables.get(liobn);
    return BigInt(table?.enabled ? table.pageShift : 12);
  };

  /** Accounts for `p` with a line the model has already printed, if there is one. */
  const consume = (p: ParsedTraceLine): boolean => {
    const at = unmatched.findIndex((l) => sameEvent(l, p));
    if (at < 0) return false;
    unmatched.splice(at, 1);
    return true;
  };

  for (let i = 0; i < relevant.length; i++) {
    const p = relevant[i]!;
    const f = p.fields;
    // What the traced guest set up, whether or not the model printed the line already.
    if (shortName(p.name) === 'ddw_create') tracedShift.set(Number(f.liobn), log2(BigInt(f['page size']!)));
    if (shortName(p.name) === 'ddw_reset') {
      const phb = phbs.byBuid(BigInt(f.buid!));
      for (const t of phb?.windows ?? []) tracedShift.delete(t.liobn);
    }
    if (consume(p)) continue;
    if (!OPERATION.test(p.name)) continue; // a consequence the model did not produce: the diff shows it
    try {
      switch (shortName(p.name)) {
        case 'new_table': {
          const liobn = Number(f.liobn);
          // The next operation (VFIO lines in between are consequences of this allocation).
          const next = relevant.slice(i + 1).find((l) => OPERATION.test(l.name));
          const explained =
            next !== undefined &&
            ((shortName(next.name) === 'ddw_create' && Number(next.fields.liobn) === liobn) ||
              shortName(next.name) === 'ddw_reset');
          if (!explained && tables.get(liobn)) {
            machine.reset();
            tracedShift.clear();
          }
          break;
        }
        case 'ddw_query': {
          const phb = phbs.byBuid(BigInt(f.buid!));
          const nret = phb && offersQueryNret6(machine, phb) ? 6 : 5;
          rtas(machine, 'ibm,query-pe-dma-window', [Number(f.addr), ...buidCells(f.buid!)], nret);
          break;
        }
        case 'ddw_create':
          rtas(
            machine,
            'ibm,create-pe-dma-window',
            [
              Number(f.addr),
              ...buidCells(f.buid!),
              log2(BigInt(f['page size']!)),
              log2(BigInt(f.requested!)),
            ],
            4,
          );
          break;
        case 'ddw_remove':
          rtas(machine, 'ibm,remove-pe-dma-window', [Number(f.liobn)], 1);
          break;
        case 'ddw_reset':
          // QEMU 7.1+ resets by itself after removing the last non-default window, tracing it
          // right after the remove: the guest made no such call, so a model without that rule
          // makes none either.
          if (!followsRemove(relevant, i)) {
            rtas(machine, 'ibm,reset-pe-dma-window', [Number(f.addr), ...buidCells(f.buid!)], 1);
          }
          break;
        case 'put':
        case 'pci_put':
          machine.guest.hcall(H_PUT_TCE, BigInt(f.liobn!), BigInt(f.ioba!), BigInt(f.tce!));
          break;
        case 'get':
        case 'pci_get':
          machine.guest.hcall(H_GET_TCE, BigInt(f.liobn!), BigInt(f.ioba!));
          break;
        case 'stuff':
        case 'pci_stuff': {
          // The trace prints where the loop ended: the start is npages pages before it.
          const npages = BigInt(f.npages!);
          const shift = pageShift(Number(f.liobn));
          const start = BigInt.asUintN(64, BigInt(f.ioba!) - (npages << shift));
          machine.guest.hcall(H_STUFF_TCE, BigInt(f.liobn!), start, BigInt(f.tcevalue!), npages);
          break;
        }
        case 'indirect':
        case 'pci_indirect': {
          // The list is not in the trace; Linux fills it with consecutive pages ending in tceN.
          const last = BigInt(f.iobaN!);
          const tceN = BigInt(f.tceN!);
          const shift = pageShift(Number(f.liobn));
          const perm = tceN & 3n;
          const base = tceN & ~((1n << shift) - 1n);
          const list = BigInt(f.tcelist!);
          for (let k = 0n; k <= last; k++) {
            const addr = BigInt.asUintN(64, base - ((last - k) << shift));
            machine.guest.memory.store(list + 8n * k, 8, addr | perm);
          }
          machine.guest.hcall(H_PUT_TCE_INDIRECT, BigInt(f.liobn!), BigInt(f.ioba!), list, last + 1n);
          break;
        }
        case 'xlate': {
          const liobn = Number(f.liobn);
          const table = tables.get(liobn);
          const phb = phbs.list.find((b) => b.tableFor(liobn));
          if (!table || !phb) {
            skipped.push(`${p.name} ${p.text}: no PHB window has LIOBN 0x${liobn.toString(16)}`);
            break;
          }
          if (!table.enabled) break; // nothing is mapped there: no device access reaches the IOMMU
          phb.dmaAddressSpace.translate(table.busOffset + BigInt(p.positional[0]!), false);
          break;
        }
        default:
          skipped.push(`${p.name} ${p.text}: not a guest-visible operation ddw replays`);
      }
    } catch (error) {
      skipped.push(`${p.name} ${p.text}: ${error instanceof Error ? error.message : String(error)}`);
    }
    // The operation's own line, if it printed one, is now accounted for.
    consume(p);
  }
  // A snapshot: what the machine prints later (its teardown) is not part of the replay.
  return { machine, lines: [...lines], expected: selected.map((p) => `${p.name} ${p.text}`), skipped };
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

/**
 * `ddw replay`: replays the file and prints the model's lines, or with `check` the comparison.
 * Returns the exit code: 0, or 1 when the model differs from QEMU. Input errors throw DdwErrors.
 */
export async function replayCommand(options: ReplayCommandOptions, io: CommandIO): Promise<number> {
  const input = readFileSync(options.file, 'utf8').split('\n');
  const patterns = options.patterns.length > 0 ? options.patterns : defaultReplayPatterns(input);
  const result = await replayTrace(
    async (trace) => {
      const machine = await options.build(trace);
      // QEMU's error_report goes to stderr; so do the model's host-side errors.
      machine.events.on('host-error', (e) => io.err(`ddw: ${e.source}: ${e.message}\n`));
      return machine;
    },
    input,
    patterns,
  );
  result.machine.dispose();
  for (const why of result.skipped) io.err(`ddw replay: skipped ${why}\n`);
  if (!options.check) {
    io.out(result.lines.map((l) => `${l}\n`).join(''));
    return 0;
  }
  const cmp = compareTraces(result.expected, result.lines);
  if (cmp.diff.length > 0) io.out(`${cmp.diff.join('\n')}\n`);
  io.out(`${cmp.compared} compared, ${cmp.differ} differ\n`);
  return cmp.differ > 0 ? 1 : 0;
}

/**
 * Whether line `i` (a ddw_reset) is the one QEMU 7.1+ prints for its own reset after a remove:
 * it comes right after a ddw_remove, with only the default window's new_table between them.
 */
function followsRemove(lines: readonly ParsedTraceLine[], i: number): boolean {
  let k = i - 1;
  const skipConsequences = () => {
    while (k >= 0 && !OPERATION.test(lines[k]!.name)) k--;
  };
  skipConsequences();
  if (k >= 0 && shortName(lines[k]!.name) === 'new_table') k--;
  skipConsequences();
  return k >= 0 && shortName(lines[k]!.name) === 'ddw_remove' && Number(lines[i]!.fields.addr) === 0;
}

/** "pci_put" from "spapr_iommu_pci_put". */
function shortName(name: string): string {
  return name.replace(MODELLED, '');
}

/** Two lines are the same event, host pointers and fds aside. */
export function sameEvent(a: ParsedTraceLine, b: ParsedTraceLine): boolean {
  return a.name === b.name && normalize(a) === normalize(b);
}

/** The text of a line without what differs between runs of the same QEMU (host pointers, fds). */
export function normalize(p: ParsedTraceLine): string {
  return p.text
    .replace(/\btable=\S+/, 'table=*')
    .replace(/\bfd=\S+/, 'fd=*')
    .replace(/\bva=\S+/, 'va=*');
}

function buidCells(buid: string): [number, number] {
  const value = BigInt(buid);
  return [Number(value >> 32n), Number(value & 0xffffffffn)];
}

function log2(value: bigint): number {
  let n = 0;
  while (value > 1n) {
    value >>= 1n;
    n++;
  }
  return n;
}

/** The PHB advertises the 6-output query in ibm,ddw-extensions (a second entry of 1). */
function offersQueryNret6(machine: Machine, phb: SpaprPhb): boolean {
  const ext = machine.guest.deviceTree.getPropU32Cells(phb.nodePath, 'ibm,ddw-extensions');
  return ext !== undefined && ext[0]! >= 2 && ext[2] === 1;
}

function rtas(machine: Machine, call: string | number, args: number[], nret: number): void {
  machine.guest.rtasCall(call, args, nret);
}
