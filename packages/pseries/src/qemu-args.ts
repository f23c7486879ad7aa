import { ConfigError, formatHex, parseQemuSize } from '@ddw/machine';
import { SPAPR_MAX_PHB_INDEX } from '@ddw/spapr-pci';
import { machineType } from './machine-types.js';
import type { QemuVersion } from './versions.js';

/**
 * QEMU command-line options, as far as they shape a pseries machine's DMA: the machine type, RAM
 * and hotplug space, PHBs with their properties, and PCI devices. Options that change nothing ddw
 * models (display, kernel, netdev, ...) are accepted and listed in `ignored`; anything else is
 * refused with a message that names it.
 */
export interface QemuArgs {
  /** Canonical machine type name ("pseries-7.2" for `-M pseries`). */
  type: string;
  /** `-M TYPE,KEY=VALUE` properties other than the type and accel. */
  machineProps: Record<string, string>;
  ram: bigint;
  maxmem?: bigint;
  slots?: number;
  accel: 'tcg' | 'kvm';
  /** `-global spapr-pci-host-bridge.PROP=VALUE`, by property. */
  globals: Record<string, string>;
  /** The PHBs, the default one (id "pci", bus "pci.0") first. */
  phbs: QemuPhb[];
  /** PCI devices other than PHBs, in command-line order. */
  devices: QemuDevice[];
  /** Options accepted without effect on the model, as given. */
  ignored: string[];
  /** What the options set explicitly (the rest are the machine type's defaults). */
  explicit: { type?: string; ram?: bigint; maxmem?: bigint; slots?: number; accel?: 'tcg' | 'kvm' };
  /**
   * Whether the options describe hardware (-M, -m, -device, -global): then they describe the whole
   * machine, as a qemu-system-ppc64 command line does.
   */
  hardware: boolean;
  /** Trace selection and output (-trace, -d trace:, -D, -msg timestamp=on). */
  trace: QemuTraceOptions;
  /** Help and version requests (`-M help`, `-device help`, `-device DRIVER,help`, `-trace help`, `-version`, `-h`). */
  requests: QemuRequests;
}

export interface QemuTraceOptions {
  /** Patterns in command-line order (`-trace PATTERN`, `-trace enable=PATTERN`, `-d trace:PATTERN`). */
  patterns: string[];
  /** `-trace events=FILE`: files of patterns, one a line, to read. */
  eventFiles: string[];
  /** `-D FILE` (or `-trace file=FILE`): where trace lines go instead of stderr. */
  logFile?: string;
  /** `-msg timestamp=on`: trace lines carry QEMU's `pid@seconds.micros:` prefix. */
  timestamps: boolean;
}

export interface QemuRequests {
  help?: true;
  version?: true;
  machineHelp?: true;
  /** `-device help` (true) or `-device DRIVER,help` (the driver). */
  deviceHelp?: true | string;
  traceHelp?: true;
}

export interface QemuPhb {
  /** The option as given (`-device spapr-pci-host-bridge,index=1`); absent for the default PHB. */
  option?: string;
  id: string;
  index: number;
  /** Root bus name: `<id>.0`, or `pci.N` for a PHB given without an id. */
  bus: string;
  /** Properties given on its `-device` (the default PHB has none). */
  props: Record<string, string>;
}

export interface QemuDevice {
  /** The option as given (`-device e1000e,id=net0`), for messages. */
  option: string;
  driver: string;
  id?: string;
  bus: string;
  slot?: number;
  fn?: number;
  /** Properties other than id, bus and addr (host=, netdev=, ...), for the driver. */
  props: Record<string, string>;
}

const PHB_DRIVER = 'spapr-pci-host-bridge';
/** PHB properties that decide DMA windows; ddw models these. */
const PHB_DMA_PROPS = [
  'dma_win_addr',
  'dma_win_size',
  'dma64_win_addr',
  'pgsz',
  'ddw',
  'x-ddw-windows',
] as const;
/** PHB properties QEMU has that change nothing about DMA windows: accepted and ignored. */
const PHB_OTHER_PROPS = [
  'mem_win_size',
  'mem64_win_size',
  'io_win_size',
  'dynamic-reconfiguration',
  'numa_node',
  'pre-2.8-migration',
  'pcie-extended-configuration-space',
  'pre-5.1-associativity',
];

export { SPAPR_MAX_PHB_INDEX };

/** Options that take a value and do not affect the model. */
const IGNORED_WITH_VALUE = new Set([
  '-cpu',
  '-smp',
  '-kernel',
  '-initrd',
  '-append',
  '-dtb',
  '-bios',
  '-netdev',
  '-nic',
  '-net',
  '-drive',
  '-blockdev',
  '-chardev',
  '-serial',
  '-monitor',
  '-mon',
  '-display',
  '-vga',
  '-name',
  '-boot',
  '-rtc',
  '-object',
  '-numa',
  '-L',
  '-uuid',
  '-vnc',
  '-qmp',
  '-pidfile',
  '-k',
  '-icount',
  '-run-with',
]);
/** Flags that do not affect the model. */
const IGNORED_FLAGS = new Set([
  '-nographic',
  '-nodefaults',
  '-no-reboot',
  '-no-shutdown',
  '-S',
  '-snapshot',
  '-daemonize',
  '-no-user-config',
]);
/** Machine properties of pseries that change nothing ddw models. */
const IGNORED_MACHINE_PROPS =
  /^(cap-[a-z0-9-]+|ic-mode|max-cpu-compat|resize-hpt|vsmt|kernel-irqchip|kvm-type|usb|graphics|dump-guest-core|mem-merge|memory-backend|nvdimm|x-[a-z0-9-]+|host-serial|host-model|rtas-base|vof|dt-compatible|firmware|smp-cache|suppress-vmdesc)$/;

const QEMU_OPTIONS = 'QEMU options';

/** Options with a value that ddw reads (the rest of what parseQemuArgs knows is in the ignore lists). */
const MODELLED_WITH_VALUE = new Set([
  '-M',
  '-machine',
  '-m',
  '-accel',
  '-global',
  '-device',
  '-trace',
  '-D',
  '-d',
  '-msg',
]);
const MODELLED_FLAGS = new Set(['-enable-kvm', '-version', '-h', '-help']);

/**
 * Whether a QEMU option takes a value (`-m 4G`) or not (`-nographic`); undefined for an option ddw
 * does not know (parseQemuArgs refuses it). `--name` is read as `-name`, as QEMU does.
 */
export function qemuOptionTakesValue(word: string): boolean | undefined {
  const option = word.startsWith('--') ? word.slice(1) : word;
  if (MODELLED_WITH_VALUE.has(option) || IGNORED_WITH_VALUE.has(option)) return true;
  if (MODELLED_FLAGS.has(option) || IGNORED_FLAGS.has(option)) return false;
  return undefined;
}

const isHelp = (text: string | undefined) => text === 'help' || text === '?';

function refuse(field: string, problem: string, fix?: string): never {
  throw new ConfigError(field, problem, fix, { subject: QEMU_OPTIONS });
}

/**
 * Splits a command line the way a POSIX shell would for these options: whitespace separates words,
 * single and double quotes group, a backslash escapes the next character (and joins lines).
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) word += line[++i];
      else word += c;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      const next = line[++i]!;
      if (next !== '\n') {
        word += next;
        inWord = true;
      }
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) refuse('command line', `unterminated ${quote} quote`, 'close the quote');
  if (inWord) words.push(word);
  return words;
}

/** QEMU's option list syntax: `a,b=c,d=e` with `,,` for a literal comma; a bare first item is the implied key. */
export function parseOptionList(
  text: string,
  impliedKey?: string,
): { implied?: string; props: [string, string][] } {
  const items: string[] = [];
  let item = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ',') {
      if (text[i + 1] === ',') {
        item += ',';
        i++;
        continue;
      }
      items.push(item);
      item = '';
    } else item += text[i];
  }
  items.push(item);
  const props: [string, string][] = [];
  let implied: string | undefined;
  for (const [k, raw] of items.entries()) {
    const eq = raw.indexOf('=');
    if (k === 0 && eq < 0 && impliedKey !== undefined) {
      implied = raw;
      continue;
    }
    if (eq < 0)
      props.push([raw, 'on']); // QEMU's boolean shorthand: `multifunction` means =on
    else props.push([raw.slice(0, eq), raw.slice(eq + 1)]);
  }
  return implied !== undefined ? { implied, props } : { props };
}

/** A uint64 property value as QEMU parses one (strtoull base 0: hex, octal or decimal). */
export function parseQemuU64(text: string, field: string): bigint {
  const t = text.trim();
  let value: bigint | undefined;
  if (/^0x[0-9a-f]+$/i.test(t)) value = BigInt(t);
  else if (/^0[0-7]+$/.test(t)) value = BigInt(`0o${t.slice(1)}`);
  else if (/^\d+$/.test(t)) value = BigInt(t);
  if (value === undefined) refuse(field, `"${text}" is not a number`, 'write a decimal or 0x-prefixed value');
  if (value >= 1n << 64n) refuse(field, `"${text}" does not fit in 64 bits`, 'use a smaller value');
  return value;
}

/** A bool property value as QEMU parses one. */
export function parseQemuBool(text: string, field: string): boolean {
  if (/^(on|yes|true|y)$/.test(text)) return true;
  if (/^(off|no|false|n)$/.test(text)) return false;
  return refuse(field, `"${text}" is not a boolean`, 'use on or off');
}

function parseUint(text: string, field: string, max: number): number {
  const value = parseQemuU64(text, field);
  if (value > BigInt(max)) refuse(field, `${text} is too large (max ${max})`, `use 0..${max}`);
  return Number(value);
}

/** A PCI `addr=SLOT[.FN]`, both hexadecimal as QEMU reads them. */
function parsePciAddr(text: string, field: string): { slot: number; fn: number } {
  const m = /^(?:0x)?([0-9a-f]+)(?:\.(?:0x)?([0-9a-f]+))?$/i.exec(text);
  const slot = m ? Number.parseInt(m[1]!, 16) : Number.NaN;
  const fn = m?.[2] !== undefined ? Number.parseInt(m[2], 16) : 0;
  if (!m || slot > 31 || fn > 7) {
    refuse(
      field,
      `"${text}" is not a PCI address`,
      'write SLOT[.FN] in hexadecimal, slot 0..1f and function 0..7',
    );
  }
  return { slot, fn };
}

/** Checks one PHB property (from -global or -device) and returns it normalized. */
function checkPhbProp(prop: string, value: string, field: string): void {
  if (prop === 'ddw') parseQemuBool(value, field);
  else if ((PHB_DMA_PROPS as readonly string[]).includes(prop)) parseQemuU64(value, field);
  else if (!PHB_OTHER_PROPS.includes(prop)) {
    refuse(
      field,
      `${PHB_DRIVER} has no property "${prop}"`,
      `its properties: index, id, ${[...PHB_DMA_PROPS, ...PHB_OTHER_PROPS].join(', ')}`,
    );
  }
}

/**
 * Parses QEMU options (a command line, or its words) into what a pseries machine is built from;
 * `-M` is checked against the types QEMU `version` offers (see machineType for the default).
 */
export function parseQemuArgs(
  input: string | readonly string[],
  options: { version?: QemuVersion } = {},
): QemuArgs {
  const words = typeof input === 'string' ? splitCommandLine(input) : [...input];
  let type = 'pseries';
  let machineProps: Record<string, string> = {};
  let accel: 'tcg' | 'kvm' = 'tcg';
  let ramText: { size?: string; maxmem?: string; slots?: string } = {};
  const globals: Record<string, string> = {};
  const phbArgs: { props: [string, string][]; field: string; option: string }[] = [];
  const deviceArgs: { driver: string; props: [string, string][]; field: string; option: string }[] = [];
  const ignored: string[] = [];
  const explicit: QemuArgs['explicit'] = {};
  const trace: QemuTraceOptions = { patterns: [], eventFiles: [], timestamps: false };
  const requests: QemuRequests = {};
  let hardware = false;
  let acceleratorGiven = false;

  for (let i = 0; i < words.length; i++) {
    // QEMU accepts --option as -option.
    const option = words[i]!.startsWith('--') ? words[i]!.slice(1) : words[i]!;
    const value = (): string => {
      const v = words[i + 1];
      if (v === undefined) refuse(option, 'requires an argument', `write ${option} VALUE`);
      i++;
      return v;
    };
    switch (option) {
      case '-M':
      case '-machine': {
        const field = option;
        const { implied, props } = parseOptionList(value(), 'type');
        if (isHelp(implied) || props.some(([k, v]) => k === 'type' && isHelp(v))) {
          requests.machineHelp = true;
          break;
        }
        hardware = true;
        machineProps = {};
        for (const [k, v] of props) {
          if (k === 'type') type = explicit.type = v;
          else if (k === 'accel') accel = explicit.accel = parseAccel(v, `${field} accel`);
          else if (IGNORED_MACHINE_PROPS.test(k)) machineProps[k] = v;
          else refuse(`${field} ${k}`, `the pseries machine has no property "${k}"`);
        }
        if (implied !== undefined) type = explicit.type = implied;
        break;
      }
      case '-m': {
        const { implied, props } = parseOptionList(value(), 'size');
        hardware = true;
        ramText = implied !== undefined ? { size: implied } : {};
        for (const [k, v] of props) {
          if (k === 'size' || k === 'maxmem' || k === 'slots') ramText[k] = v;
          else refuse(`-m ${k}`, `-m has no option "${k}"`, 'use -m SIZE[,maxmem=SIZE][,slots=N]');
        }
        break;
      }
      case '-accel': {
        const { implied, props } = parseOptionList(value(), 'accel');
        const chosen = parseAccel(implied ?? new Map(props).get('accel') ?? '', '-accel');
        // Several -accel are tried in order and the first that works is used: in ddw, the first.
        if (!acceleratorGiven) accel = explicit.accel = chosen;
        acceleratorGiven = true;
        break;
      }
      case '-enable-kvm':
        accel = explicit.accel = 'kvm';
        break;
      case '-version':
        requests.version = true;
        break;
      case '-h':
      case '-help':
        requests.help = true;
        break;
      case '-trace': {
        const text = value();
        const { implied, props } = parseOptionList(text, 'enable');
        for (const [k, v] of implied !== undefined ? [['enable', implied] as const, ...props] : props) {
          if (k === 'enable' && isHelp(v)) requests.traceHelp = true;
          else if (k === 'enable') trace.patterns.push(v);
          else if (k === 'events') trace.eventFiles.push(v);
          else if (k === 'file') trace.logFile = v;
          else
            refuse(
              `-trace ${k}`,
              `-trace has no option "${k}"`,
              'use -trace [enable=]PATTERN[,events=FILE][,file=FILE]',
            );
        }
        break;
      }
      case '-d': {
        // QEMU's log items; `trace:PATTERN` enables trace events, the rest change nothing here.
        const text = value();
        for (const item of text.split(',')) {
          if (item.startsWith('trace:')) trace.patterns.push(item.slice('trace:'.length));
        }
        ignored.push(`-d ${text}`);
        break;
      }
      case '-D':
        trace.logFile = value();
        break;
      case '-msg': {
        for (const [k, v] of parseOptionList(value()).props) {
          if (k === 'timestamp') trace.timestamps = parseQemuBool(v, '-msg timestamp');
          else if (k !== 'guest-name')
            refuse(`-msg ${k}`, `-msg has no option "${k}"`, 'use -msg timestamp=on|off');
        }
        break;
      }
      case '-global': {
        const text = value();
        const { props } = parseOptionList(text);
        let driver: string;
        let prop: string;
        let v: string;
        const fields = new Map(props);
        if (fields.has('driver')) {
          driver = fields.get('driver')!;
          prop = fields.get('property') ?? '';
          v = fields.get('value') ?? '';
        } else {
          const [[key, val] = ['', '']] = props;
          const dot = key.lastIndexOf('.');
          if (dot < 0) refuse('-global', `"${text}" is not DRIVER.PROPERTY=VALUE`);
          driver = key.slice(0, dot);
          prop = key.slice(dot + 1);
          v = val;
        }
        const field = `-global ${driver}.${prop}`;
        hardware = true;
        if (driver !== PHB_DRIVER)
          refuse(field, `ddw models no "${driver}" globals`, `only ${PHB_DRIVER}.PROPERTY is modelled`);
        if (prop === 'index') refuse(field, 'index cannot be global', 'give each PHB its index on -device');
        checkPhbProp(prop, v, field);
        globals[prop] = v;
        break;
      }
      case '-device': {
        const text = value();
        const { implied, props } = parseOptionList(text, 'driver');
        const driver = implied ?? new Map(props).get('driver');
        if (isHelp(driver)) {
          requests.deviceHelp = true;
          break;
        }
        if (!driver) refuse('-device', 'names no device', 'write -device DRIVER[,PROP=VALUE...]');
        if (props.some(([k]) => isHelp(k))) {
          requests.deviceHelp = driver;
          break;
        }
        hardware = true;
        const rest = props.filter(([k]) => k !== 'driver');
        const field = `-device ${driver}`;
        if (driver === PHB_DRIVER) phbArgs.push({ props: rest, field, option: `-device ${text}` });
        else deviceArgs.push({ driver, props: rest, field, option: `-device ${text}` });
        break;
      }
      default:
        if (IGNORED_FLAGS.has(option)) ignored.push(option);
        else if (IGNORED_WITH_VALUE.has(option)) ignored.push(`${option} ${value()}`);
        else
          refuse(
            option,
            `unknown or unsupported option "${words[i]}"`,
            'see the README for the QEMU options ddw accepts',
          );
    }
  }

  if (Object.keys(requests).length > 0) {
    // QEMU answers help and version requests before it builds anything.
    return {
      type,
      machineProps,
      ram: 0n,
      accel,
      globals,
      phbs: [],
      devices: [],
      ignored,
      explicit,
      hardware,
      trace,
      requests,
    };
  }
  const info = machineType(type, '-M', options.version);
  const ram = ramText.size !== undefined ? parseQemuSize(ramText.size, '-m size', 20n) : info.defaultRam;
  const maxmem = ramText.maxmem !== undefined ? parseQemuSize(ramText.maxmem, '-m maxmem') : undefined;
  const slots = ramText.slots !== undefined ? parseUint(ramText.slots, '-m slots', 0xffffffff) : undefined;
  if (ramText.size !== undefined) explicit.ram = ram;
  if (maxmem !== undefined) explicit.maxmem = maxmem;
  if (slots !== undefined) explicit.slots = slots;

  // The machine creates the default PHB before -device ones; QEMU numbers id-less PCI buses in
  // creation order (pci.0, pci.1, ...).
  const phbs: QemuPhb[] = [{ id: 'pci', index: 0, bus: 'pci.0', props: {} }];
  let automaticBus = 1;
  for (const { props, field, option } of phbArgs) {
    const map: Record<string, string> = {};
    let id: string | undefined;
    let index: number | undefined;
    for (const [k, v] of props) {
      if (k === 'id') id = v;
      else if (k === 'index') index = parseUint(v, `${field} index`, 0xffffffff);
      else {
        checkPhbProp(k, v, `${field} ${k}`);
        map[k] = v;
      }
    }
    if (index === undefined)
      refuse(`${field} index`, '"index" for PAPR PHB is mandatory', `write -device ${PHB_DRIVER},index=N`);
    if (index > SPAPR_MAX_PHB_INDEX) {
      refuse(
        `${field} index`,
        `"index" for PAPR PHB is too large (max ${SPAPR_MAX_PHB_INDEX})`,
        `use 1..${SPAPR_MAX_PHB_INDEX}`,
      );
    }
    const clash = phbs.find((p) => p.index === index);
    if (clash)
      refuse(
        `${field} index`,
        `a PHB with index ${index} (BUID ${formatHex(0x800000020000000n + BigInt(index))}) already exists`,
        'give each PHB its own index',
      );
    if (id !== undefined && phbs.some((p) => p.id === id))
      refuse(`${field} id`, `duplicate ID '${id}'`, 'give each device its own id');
    phbs.push({
      option,
      id: id ?? `${PHB_DRIVER}-${index}`,
      index,
      bus: id !== undefined ? `${id}.0` : `pci.${automaticBus++}`,
      props: map,
    });
  }

  const devices: QemuDevice[] = deviceArgs.map(({ driver, props, field, option }) => {
    const device: QemuDevice = { option, driver, bus: 'pci.0', props: {} };
    for (const [k, v] of props) {
      if (k === 'id') device.id = v;
      else if (k === 'bus') device.bus = v;
      else if (k === 'addr') Object.assign(device, parsePciAddr(v, `${field} addr`));
      else device.props[k] = v;
    }
    if (!phbs.some((p) => p.bus === device.bus)) {
      refuse(`${field} bus`, `Bus '${device.bus}' not found`, `buses: ${phbs.map((p) => p.bus).join(', ')}`);
    }
    return device;
  });

  return {
    type: info.name,
    machineProps,
    ram,
    ...(maxmem !== undefined ? { maxmem } : {}),
    ...(slots !== undefined ? { slots } : {}),
    accel,
    globals,
    phbs,
    devices,
    ignored,
    explicit,
    hardware,
    trace,
    requests,
  };
}

function parseAccel(value: string, field: string): 'tcg' | 'kvm' {
  if (value === 'tcg' || value === 'kvm') return value;
  return refuse(field, `unknown accelerator "${value}"`, 'use tcg or kvm');
}

/**
 * The DMA properties of PHB `index` as QEMU would set them: machine-type defaults are applied by
 * the PHB model; here come -global values, overridden by the PHB's own -device properties.
 * Values are in the machine description's form (hex strings, booleans).
 */
export function resolvePhbConfig(args: QemuArgs, index: number): Record<string, string | boolean | number> {
  const phb = args.phbs.find((p) => p.index === index);
  const merged = { ...args.globals, ...(phb?.props ?? {}) };
  const out: Record<string, string | boolean | number> = {};
  for (const prop of PHB_DMA_PROPS) {
    const v = merged[prop];
    if (v === undefined) continue;
    if (prop === 'x-ddw-windows') {
      out[prop] = Number(parseQemuU64(v, prop));
      continue;
    }
    out[prop] = prop === 'ddw' ? parseQemuBool(v, prop) : formatHex(parseQemuU64(v, prop));
  }
  return out;
}
