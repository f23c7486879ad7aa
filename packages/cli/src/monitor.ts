import { LinuxGuest } from '@ddw/guest-linux';
import { ConfigError, formatHex, hexDigits, type Machine, MachineTokens, parseQemuSize } from '@ddw/machine';
import type { PciDevice } from '@ddw/pci';
import { HotplugError, memoryHotplugOf, parseOptionList } from '@ddw/pseries';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import type { CommandIO } from './io.js';
import { nextTurn } from './turn.js';

/**
 * QEMU human-monitor (HMP) commands run on a booted machine: `ddw run ... --hmp "CMD; CMD"` or a
 * file of them. The syntax is QEMU's (hmp-commands.hx and hmp-commands-info.hx); what each does
 * follows QEMU 10.0's pseries machine, with QEMU's messages for what it refuses.
 */

/** The commands ddw's monitor knows, as `help` would list them. */
export const HMP_COMMANDS = [
  'system_reset',
  'object_add',
  'object_del',
  'device_add',
  'device_del',
  'info mtree',
  'info pci',
  'info memory-devices',
] as const;

export type HmpCommand =
  | { readonly kind: 'system_reset'; readonly text: string }
  | {
      readonly kind: 'object_add';
      readonly text: string;
      readonly qomType: 'memory-backend-ram';
      readonly id: string;
      readonly size: bigint;
    }
  | { readonly kind: 'object_del'; readonly text: string; readonly id: string }
  | {
      readonly kind: 'device_add';
      readonly text: string;
      readonly driver: 'pc-dimm';
      readonly id?: string;
      readonly memdev?: string;
      readonly slot?: number;
      readonly addr?: bigint;
      readonly node?: number;
    }
  | { readonly kind: 'device_del'; readonly text: string; readonly id: string }
  | { readonly kind: 'info-mtree'; readonly text: string; readonly flat: boolean; readonly disabled: boolean }
  | { readonly kind: 'info-pci'; readonly text: string }
  | { readonly kind: 'info-memory-devices'; readonly text: string };

export interface ParseHmpOptions {
  /**
   * How errors name where the commands came from: `--hmp` (default) or a file name, which gets
   * the line number (`monitor.hmp:3`).
   */
  source?: string;
  /** Whether `source` is a file (one command per line; errors give line numbers). */
  file?: boolean;
}

/** memory-backend-ram properties ddw accepts; only size has an effect (hostmem.c, hostmem-ram.c). */
const BACKEND_PROPERTIES = new Set([
  'size',
  'merge',
  'dump',
  'prealloc',
  'share',
  'reserve',
  'policy',
  'host-nodes',
  'prealloc-threads',
  'x-use-canonical-path-for-ramblock-id',
]);

const QEMU_ID = /^[A-Za-z][A-Za-z0-9._-]*$/;

/**
 * Parses monitor commands: `;` or a new line separates them, `#` starts a comment (at a line's
 * start or after a blank). Every mistake is a ConfigError naming the command, e.g.
 * `--hmp "device_add pc-dimm": memdev: ...`; an unknown command lists the supported ones.
 */
export function parseHmpScript(text: string, options: ParseHmpOptions = {}): HmpCommand[] {
  const source = options.source ?? '--hmp';
  const commands: HmpCommand[] = [];
  for (const [i, rawLine] of text.split(/\r?\n/).entries()) {
    const line = stripComment(rawLine);
    for (const part of line.split(';')) {
      const command = part.trim().replace(/\s+/g, ' ');
      if (command === '') continue;
      const where = options.file ? `${source}:${i + 1} "${command}"` : `${source} "${command}"`;
      commands.push(parseCommand(command, where));
    }
  }
  return commands;
}

function stripComment(line: string): string {
  const at = line.search(/(^|\s)#/);
  return at < 0 ? line : line.slice(0, at);
}

function parseCommand(text: string, where: string): HmpCommand {
  const refuse = (field: string, problem: string, fix?: string): never => {
    throw new ConfigError(field, problem, fix, { subject: where });
  };
  const space = text.indexOf(' ');
  const name = space < 0 ? text : text.slice(0, space);
  const rest = space < 0 ? '' : text.slice(space + 1).trim();
  switch (name) {
    case 'system_reset':
      if (rest !== '') refuse('arguments', 'system_reset takes no arguments', 'write system_reset alone');
      return { kind: 'system_reset', text };
    case 'object_add':
      return parseObjectAdd(text, rest, refuse);
    case 'object_del':
      return { kind: 'object_del', text, id: singleId(rest, 'object_del', refuse) };
    case 'device_add':
      return parseDeviceAdd(text, rest, refuse);
    case 'device_del':
      return { kind: 'device_del', text, id: singleId(rest, 'device_del', refuse) };
    case 'info':
      return parseInfo(text, rest, refuse);
    default:
      return refuse(
        'command',
        `unknown command: '${name}'`,
        `ddw's monitor supports: ${HMP_COMMANDS.join(', ')}`,
      );
  }
}

type Refuse = (field: string, problem: string, fix?: string) => never;

function singleId(rest: string, command: string, refuse: Refuse): string {
  if (rest === '') refuse('id', "Parameter 'id' is missing", `write ${command} ID`);
  if (rest.includes(' ')) refuse('id', `too many arguments: '${rest}'`, `write ${command} ID`);
  return rest;
}

function parseObjectAdd(text: string, rest: string, refuse: Refuse): HmpCommand {
  if (rest === '')
    refuse(
      'qom-type',
      "Parameter 'qom-type' is missing",
      'write object_add memory-backend-ram,id=m1,size=1G',
    );
  const { implied, props } = parseOptionList(rest, 'qom-type');
  const values = new Map<string, string>();
  for (const [key, value] of props) {
    if (values.has(key)) refuse(key, `Parameter '${key}' given twice`, 'give each property once');
    values.set(key, value);
  }
  const qomType = implied ?? values.get('qom-type');
  if (implied !== undefined && values.has('qom-type')) {
    refuse('qom-type', "Parameter 'qom-type' given twice", 'give the type once');
  }
  values.delete('qom-type');
  if (qomType === undefined)
    refuse('qom-type', "Parameter 'qom-type' is missing", 'start with the type, e.g. memory-backend-ram');
  if (qomType !== 'memory-backend-ram') {
    refuse(
      'qom-type',
      qomType.startsWith('memory-backend-')
        ? `ddw models only memory-backend-ram, not ${qomType}`
        : `invalid object type: ${qomType}`,
      'use memory-backend-ram',
    );
  }
  const id = values.get('id');
  values.delete('id');
  if (id === undefined) refuse('id', "Parameter 'id' is missing", 'give id=NAME');
  if (!QEMU_ID.test(id)) {
    refuse(
      'id',
      `Parameter 'id' expects an identifier`,
      'start with a letter; use letters, digits, -, . and _',
    );
  }
  for (const key of values.keys()) {
    if (!BACKEND_PROPERTIES.has(key)) {
      refuse(
        key,
        `Property 'memory-backend-ram.${key}' not found`,
        `known: ${[...BACKEND_PROPERTIES].join(', ')}`,
      );
    }
  }
  const sizeText = values.get('size');
  if (sizeText === undefined)
    refuse('size', "can't create backend with size 0", 'give size=SIZE, e.g. size=1G');
  let size = 0n;
  try {
    size = parseQemuSize(sizeText, 'size');
  } catch (error) {
    refuse('size', error instanceof ConfigError ? error.problem : String(error), 'write a size such as 1G');
  }
  if (size === 0n) refuse('size', "can't create backend with size 0", 'give a size above 0');
  return { kind: 'object_add', text, qomType: 'memory-backend-ram', id, size };
}

function parseDeviceAdd(text: string, rest: string, refuse: Refuse): HmpCommand {
  if (rest === '')
    refuse('driver', "Parameter 'driver' is missing", 'write device_add pc-dimm,id=d1,memdev=m1');
  const { implied, props } = parseOptionList(rest, 'driver');
  const values = new Map<string, string>();
  for (const [key, value] of props) {
    if (values.has(key)) refuse(key, `Parameter '${key}' given twice`, 'give each property once');
    values.set(key, value);
  }
  const driver = implied ?? values.get('driver');
  values.delete('driver');
  if (driver === undefined)
    refuse('driver', "Parameter 'driver' is missing", 'start with the driver, e.g. pc-dimm');
  if (driver !== 'pc-dimm') {
    refuse(
      'driver',
      driver === 'nvdimm' || driver === 'virtio-mem-pci' || driver === 'virtio-pmem-pci'
        ? `ddw models only pc-dimm hotplug, not ${driver}`
        : `ddw's monitor hot-adds only pc-dimm, not '${driver}' (PCI hotplug is not modelled)`,
      'give PCI devices with -device on the command line',
    );
  }
  const out: {
    kind: 'device_add';
    text: string;
    driver: 'pc-dimm';
    id?: string;
    memdev?: string;
    slot?: number;
    addr?: bigint;
    node?: number;
  } = { kind: 'device_add', text, driver: 'pc-dimm' };
  for (const [key, value] of values) {
    switch (key) {
      case 'id':
        if (!QEMU_ID.test(value)) {
          refuse(
            'id',
            `Parameter 'id' expects an identifier`,
            'start with a letter; use letters, digits, -, . and _',
          );
        }
        out.id = value;
        break;
      case 'memdev':
        out.memdev = value;
        break;
      case 'slot':
      case 'node': {
        const n = /^(0|[1-9]\d*)$/.test(value) ? Number(value) : Number.NaN;
        if (!Number.isSafeInteger(n) || n > 0x7fffffff) {
          refuse(key, `Parameter '${key}' expects ${key === 'slot' ? 'int32' : 'uint32'}`, 'write a number');
        }
        out[key] = n;
        break;
      }
      case 'addr':
        try {
          out.addr = parseQemuSize(value, 'addr');
        } catch {
          refuse('addr', "Parameter 'addr' expects uint64", 'write an address such as 0x80000000');
        }
        break;
      default:
        refuse(
          key,
          `Property 'pc-dimm.${key}' not found`,
          'pc-dimm properties: id, memdev, slot, addr, node',
        );
    }
  }
  return out;
}

function parseInfo(text: string, rest: string, refuse: Refuse): HmpCommand {
  const words = rest === '' ? [] : rest.split(' ');
  const what = words[0];
  const flags = words.slice(1);
  const infos = HMP_COMMANDS.filter((c) => c.startsWith('info ')).map((c) => c.slice(5));
  if (what === undefined)
    refuse('command', 'info needs a subcommand', `ddw's monitor has: info ${infos.join(', info ')}`);
  if (what === 'mtree') {
    let flat = false;
    let disabled = false;
    for (const flag of flags) {
      if (flag === '-f') flat = true;
      else if (flag === '-D') disabled = true;
      else if (flag === '-d' || flag === '-o') {
        refuse('flags', `info mtree ${flag} is not modelled`, 'use -f (flat views) or -D (disabled regions)');
      } else refuse('flags', `invalid option '${flag}'`, 'info mtree takes -f and -D');
    }
    return { kind: 'info-mtree', text, flat, disabled };
  }
  if (what === 'pci' || what === 'memory-devices') {
    if (flags.length > 0) refuse('arguments', `info ${what} takes no arguments`);
    return what === 'pci' ? { kind: 'info-pci', text } : { kind: 'info-memory-devices', text };
  }
  return refuse(
    'command',
    `unknown command: 'info ${what}'`,
    `ddw's monitor supports: ${HMP_COMMANDS.join(', ')}`,
  );
}

/** What one command did. */
export interface HmpCommandResult {
  readonly command: HmpCommand;
  /** False when QEMU would have answered with an error (printed as `Error: ...`). */
  readonly ok: boolean;
  /** What the command printed to the monitor (info output), without the prompt. */
  readonly output: string;
  /** QEMU's error text when not ok. */
  readonly error?: string;
  /** Notes on what the guest did (memory online/offline, reboot), for reports. */
  readonly notes: readonly string[];
}

export interface HmpContext {
  machine: Machine;
  /** The booted guest, if any (a `--guest none` run has none). */
  guest?: LinuxGuest;
  io: CommandIO;
  /**
   * The guest that boots after system_reset (default: a new LinuxGuest of the same generation
   * and page size on the same machine).
   */
  rebootGuest?: (previous: LinuxGuest) => LinuxGuest;
  /** Print `(qemu) COMMAND` before each command's output (default true). */
  echo?: boolean;
}

export interface HmpRunResult {
  /** The guest after the commands: a new one when system_reset rebooted it. */
  guest: LinuxGuest | undefined;
  results: HmpCommandResult[];
  /** Every command succeeded. */
  ok: boolean;
}

/**
 * Runs monitor commands in order on a booted, negotiated machine. A command QEMU would refuse
 * prints `Error: MESSAGE` (QEMU's text) to io.err and the next command runs, as in QEMU's monitor.
 * Async so that a long script can yield between commands (a Ctrl-C handler runs between them).
 */
export async function runHmp(commands: readonly HmpCommand[], ctx: HmpContext): Promise<HmpRunResult> {
  let guest = ctx.guest;
  const results: HmpCommandResult[] = [];
  const echo = ctx.echo ?? true;
  for (const command of commands) {
    if (echo) ctx.io.out(`(qemu) ${command.text}\n`);
    const notes: string[] = [];
    const print: string[] = [];
    try {
      guest = execute(command, { ...ctx, guest }, print, notes) ?? guest;
      const output = print.join('');
      if (output !== '') ctx.io.out(output);
      for (const note of notes) ctx.io.err(`${note}\n`);
      results.push({ command, ok: true, output, notes });
    } catch (error) {
      if (!(error instanceof HotplugError)) throw error;
      ctx.io.err(`Error: ${error.message}\n`);
      results.push({ command, ok: false, output: '', error: error.message, notes });
    }
    await nextTurn();
  }
  return { guest, results, ok: results.every((r) => r.ok) };
}

/** One command; returns the guest when it changed (a reboot). */
function execute(
  command: HmpCommand,
  ctx: HmpContext,
  print: string[],
  notes: string[],
): LinuxGuest | undefined {
  const { machine, guest } = ctx;
  switch (command.kind) {
    case 'system_reset': {
      machine.reset();
      if (!guest) return undefined;
      const next = ctx.rebootGuest
        ? ctx.rebootGuest(guest)
        : new LinuxGuest(machine.guest, { generation: guest.generation, pageSize: guest.pageSize });
      next.boot();
      next.probeAll();
      notes.push(`guest rebooted (${next.generation}): DMA windows negotiated again`);
      return next;
    }
    case 'object_add':
      memoryHotplugOf(machine).addBackend({ id: command.id, type: command.qomType, size: command.size });
      return undefined;
    case 'object_del':
      memoryHotplugOf(machine).deleteBackend(command.id);
      return undefined;
    case 'device_add': {
      const hotplug = memoryHotplugOf(machine);
      const dimm = hotplug.plugDimm({
        ...(command.id !== undefined ? { id: command.id } : {}),
        ...(command.memdev !== undefined ? { memdev: command.memdev } : {}),
        ...(command.slot !== undefined ? { slot: command.slot } : {}),
        ...(command.addr !== undefined ? { addr: command.addr } : {}),
        ...(command.node !== undefined ? { node: command.node } : {}),
      });
      const lmbs = dimm.size >> 28n;
      if (guest) {
        // The hotplug event (spapr_hotplug_req_add_by_count_indexed) makes the guest's DLPAR code
        // add the LMBs; each block coming online goes through the memory notifier.
        const online = guest.memoryAdded(dimm.addr, dimm.size);
        notes.push(
          `guest: ${lmbs} LMB(s) at ${formatHex(dimm.addr)} ${online ? 'online' : 'refused by the memory notifier'}`,
        );
      }
      return undefined;
    }
    case 'device_del':
      return deviceDel(command.id, ctx, notes);
    case 'info-mtree':
      print.push(machine.mtree({ flat: command.flat, disabled: command.disabled }));
      return undefined;
    case 'info-pci':
      print.push(infoPci(machine));
      return undefined;
    case 'info-memory-devices':
      print.push(infoMemoryDevices(machine));
      return undefined;
  }
}

function deviceDel(id: string, ctx: HmpContext, notes: string[]): undefined {
  const { machine, guest } = ctx;
  const hotplug = memoryHotplugOf(machine);
  const dimm = hotplug.dimm(id);
  if (dimm) {
    // spapr_memory_unplug_request: a hotplug event asks the guest to release the LMBs; the DIMM
    // goes when the last one is released (spapr_lmb_release), or stays if the guest refuses.
    hotplug.requestUnplug(dimm);
    if (!guest) {
      notes.push(`${id}: unplug requested; no guest releases the LMBs, so the DIMM stays`);
      return undefined;
    }
    if (guest.memoryRemoved(dimm.addr, dimm.size)) {
      hotplug.completeUnplug(dimm);
      notes.push(`guest: ${dimm.size >> 28n} LMB(s) at ${formatHex(dimm.addr)} offline; ${id} unplugged`);
    } else {
      hotplug.rollbackUnplug(dimm);
      notes.push(`Memory hotunplug rejected by the guest for device ${id}`);
    }
    return undefined;
  }
  const phbs = machine.get(SpaprPciTokens.Phbs).list;
  if (phbs.some((phb) => phb.id === id)) {
    throw new HotplugError(`ddw does not model PHB hot unplug: '${id}' is a PCI host bridge`);
  }
  const pci = phbs.flatMap((phb) => phb.devices).find((d) => d.id === id);
  if (!pci) throw new HotplugError(`Device '${id}' not found`);
  // spapr_pci_unplug_request -> the guest releases the function -> unrealize. The machine's device
  // unrealizes the model and takes it off its PHB; the PHB's node loses the function's child.
  const device = machine.get(MachineTokens.Devices).get(id);
  if (!device?.unrealize) throw new HotplugError(`Device '${id}' does not support hotplugging`);
  device.unrealize();
  phbs.find((phb) => phb.name === pci.bus.name)?.writeDeviceTree();
  notes.push(`${id}: unplugged from ${pci.bus.name}`);
  return undefined;
}

/** PCI class descriptions QEMU's `info pci` prints (hw/pci/pci.c pci_class_descriptions, the ones ddw's devices use). */
const PCI_CLASS_DESCRIPTIONS: Readonly<Record<number, string>> = {
  256: 'SCSI controller',
  262: 'SATA controller',
  512: 'Ethernet controller',
  768: 'VGA controller',
  1540: 'PCI bridge',
  3075: 'USB controller',
};

/**
 * QEMU's `info pci` (hw/pci/pci-hmp-cmds.c): every function of every PHB's root bus, in PHB then
 * slot order. Each root bus is bus 0 of its own PCI domain, as in QEMU. ddw models no BARs or
 * interrupts, so those lines are absent.
 */
export function infoPci(machine: Machine): string {
  const lines: string[] = [];
  for (const phb of machine.get(SpaprPciTokens.Phbs).list) {
    const devices = [...phb.devices].sort((a: PciDevice, b: PciDevice) => a.devfn - b.devfn);
    for (const d of devices) {
      const cls = d.ids.classCode >> 8;
      lines.push(
        `  Bus ${String(0).padStart(2)}, device ${String(d.address.slot).padStart(3)}, function ${d.address.fn}:`,
        `    ${PCI_CLASS_DESCRIPTIONS[cls] ?? `Class ${hexDigits(cls, 4)}`}: PCI device ${hexDigits(d.ids.vendorId, 4)}:${hexDigits(d.ids.deviceId, 4)}`,
        `      id "${d.id}"`,
      );
    }
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/** QEMU's `info memory-devices` (hw/core/machine-hmp-cmds.c) for the plugged DIMMs. */
export function infoMemoryDevices(machine: Machine): string {
  const out: string[] = [];
  for (const d of memoryHotplugOf(machine).dimms()) {
    out.push(
      `Memory device [dimm]: "${d.id ?? ''}"`,
      `  addr: ${formatHex(d.addr)}`,
      `  slot: ${d.slot}`,
      `  node: ${d.node}`,
      `  size: ${d.size}`,
      `  memdev: /objects/${d.memdev}`,
      '  hotplugged: true',
      '  hotpluggable: true',
    );
  }
  return out.length ? `${out.join('\n')}\n` : '';
}
