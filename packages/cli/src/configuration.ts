/**
 * The configuration channel without files: browser-safe (no node: module). configure.ts adds
 * reading a DESCRIPTION.json from disk.
 */
import { DEFAULT_LINUX_GENERATION } from '@ddw/guest-linux';
import { ConfigError, DdwError } from '@ddw/machine';
import {
  type DescriptionLayer,
  fileLayer,
  guestLayer,
  hostLayer,
  parseQemuArgs,
  presetLayer,
  type QemuArgs,
  type QemuVersion,
  qemuLayer,
  qemuOptionTakesValue,
  qemuVersion,
  qemuVersionLayer,
  qemuVersionOf,
  type ResolvedDescription,
  resolveDescription,
  splitCommandLine,
} from '@ddw/pseries';

/** A mistake in how a command was called (exit code 2, like every configuration error). */
export class UsageError extends DdwError {
  override name = 'UsageError';
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** What a machine command (run, snapshot save|load, info mtree) was given on its command line. */
export interface MachineCommandLine {
  /** The words commander did not take: QEMU options, the command's operands, at most one DESCRIPTION.json. */
  words: readonly string[];
  /** The command's own operands, named for messages (`snapshot save FILE`: ["snapshot file"]). */
  operands?: readonly string[];
  /** Set by readCommandLine: the operands' values, the words being QEMU options only. */
  operandValues?: readonly string[];
  /** `--qemu-args` texts, in order; they come before the QEMU options given directly. */
  qemuArgs?: readonly string[];
  /** A description given as data rather than a file (the API's form); `name` is how errors name it. */
  description?: { name: string; data: unknown };
  host?: string;
  guest?: string;
  /** `--qemu VERSION`: the QEMU version the machine is. */
  qemu?: string;
  /**
   * Reads a DESCRIPTION.json word (configure.ts gives its file reader, in Node); without it a
   * file word is refused (a browser reads no files).
   */
  readDescription?: (file: string) => unknown;
}

/** A machine command's configuration: the parsed QEMU options and the one merged description. */
export interface MachineConfiguration {
  qemu: QemuArgs;
  /** The description file, if one was given. */
  file?: string;
  /** The command's operands, in the order of MachineCommandLine.operands. */
  operands: string[];
  resolved: ResolvedDescription;
}

/** The layer under the preset: what ddw itself chooses when nothing else does. */
export const DDW_DEFAULTS_LAYER: DescriptionLayer = {
  source: "ddw's defaults",
  data: { guest: { generation: DEFAULT_LINUX_GENERATION } },
};

/**
 * Separates QEMU options from the description file: a word after an option that takes a value is
 * that value; any other word not starting with `-` is the file.
 */
export function splitWords(words: readonly string[]): { qemu: string[]; files: string[] } {
  const qemu: string[] = [];
  const files: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word === '--') {
      // The end of the options, as for any command: what follows are file names.
      files.push(...words.slice(i + 1));
      break;
    }
    if (word.startsWith('-') && word !== '-') {
      qemu.push(word);
      if (qemuOptionTakesValue(word) && i + 1 < words.length) qemu.push(words[++i]!);
    } else files.push(word);
  }
  return { qemu, files };
}

/** ddw's own flags: given to a command that does not take one, they are refused as such. */
const DDW_FLAGS = ['--guest', '--json', '--host', '--qemu-args', '--print-description', '--check'];

/** The QEMU options of a command line (`--qemu-args` texts first, then the ones given directly). */
export function qemuOptionsOf(commandLine: MachineCommandLine, command = 'this command'): QemuArgs {
  refuseDdwFlags(commandLine.words, command);
  const line = readCommandLine(commandLine);
  const { qemu } = splitWords(line.words);
  const version = versionOf(line);
  return parseQemuArgs([...(line.qemuArgs ?? []).flatMap((text) => splitCommandLine(text)), ...qemu], {
    ...(version !== undefined ? { version } : {}),
  });
}

/** A ddw flag given to a command that does not take it is refused as such, not read as a QEMU option. */
export function refuseDdwFlags(words: readonly string[], command = 'this command'): void {
  const flag = words.find((w) => DDW_FLAGS.includes(w.split('=')[0]!));
  if (flag !== undefined)
    throw new UsageError(`${flag.split('=')[0]} is not an option of ${command}; see --help`);
}

/**
 * The QEMU version a command line asks for, before its layers are merged (QEMU's options are
 * checked against it): `--qemu`, else the description file's `qemu.version`. A file that cannot
 * be read or has no valid version says nothing here; reading it later reports what is wrong.
 */
export function versionOf(commandLine: MachineCommandLine): QemuVersion | undefined {
  if (commandLine.qemu !== undefined) return qemuVersion(commandLine.qemu, '--qemu');
  const data = readCommandLine(commandLine).description?.data;
  try {
    return data !== null && typeof data === 'object' && !Array.isArray(data)
      ? qemuVersionOf(data as Record<string, unknown>)
      : undefined;
  } catch {
    // A bad `qemu` section is reported, naming the file, when the layers are merged.
    return undefined;
  }
}

function readDescription(line: MachineCommandLine, file: string): unknown {
  if (!line.readDescription) {
    throw new UsageError(
      `unexpected argument "${file}": description files are not read here; give QEMU options only`,
    );
  }
  return line.readDescription(file);
}

/**
 * Sorts a command line's words once: the command's operands, at most one DESCRIPTION.json (read
 * here, once, into `description`), and the QEMU options, which stay in `words`. Idempotent.
 */
export function readCommandLine(line: MachineCommandLine): MachineCommandLine {
  if (line.operandValues !== undefined) return line;
  const { qemu, files: positionals } = splitWords(line.words);
  const wanted = line.operands ?? [];
  if (positionals.length < wanted.length) {
    throw new UsageError(`missing the ${wanted[positionals.length]}; see --help`);
  }
  const files = positionals.slice(wanted.length);
  if (files.length > 1) {
    throw new UsageError(
      `unexpected argument "${files[1]}": give at most one description file (the first was "${files[0]}")`,
    );
  }
  const file = files[0];
  return {
    ...line,
    words: qemu,
    operandValues: positionals.slice(0, wanted.length),
    ...(file !== undefined ? { description: { name: file, data: readDescription(line, file) } } : {}),
  };
}

/**
 * The one place a command line becomes a machine description:
 * ddw's defaults < preset < DESCRIPTION.json < QEMU options < --qemu < --host < --guest.
 */
export function configureMachine(commandLine: MachineCommandLine, qemu?: QemuArgs): MachineConfiguration {
  const line = readCommandLine(commandLine);
  const args = qemu ?? qemuOptionsOf(line);
  const described = line.description ? fileLayer(line.description.name, line.description.data) : undefined;
  const layers: DescriptionLayer[] = [DDW_DEFAULTS_LAYER, presetLayer(args, described?.requestedPreset)];
  if (described) layers.push(described);
  layers.push(qemuLayer(args));
  if (line.qemu !== undefined) layers.push(qemuVersionLayer(line.qemu));
  if (line.host !== undefined) layers.push(hostLayer(line.host));
  if (line.guest !== undefined) layers.push(guestLayer(line.guest));
  return {
    qemu: args,
    ...(line.description ? { file: line.description.name } : {}),
    operands: [...(line.operandValues ?? [])],
    resolved: resolveDescription(layers),
  };
}

/** Parses a description file's text; a failure is one line naming the file. */
export function parseDescriptionText(file: string, text: string): unknown {
  try {
    // A byte order mark is not JSON, but editors write one.
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (error) {
    throw new ConfigError(
      '(document)',
      `is not JSON (${error instanceof Error ? error.message : String(error)})`,
      'write the description as a JSON object, e.g. { "ram": "2G" }',
      { subject: file },
    );
  }
}
