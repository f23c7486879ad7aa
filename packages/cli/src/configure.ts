import type { QemuArgs } from '@ddw/pseries';
import * as core from './configuration.js';
import { type MachineCommandLine, type MachineConfiguration, parseDescriptionText } from './configuration.js';
import { readInputFile } from './files.js';

// The configuration channel (configuration.ts, browser-safe) with DESCRIPTION.json read from disk:
// the functions below are configuration.ts's, given this file reader. Everything else of the
// channel (UsageError, the command-line types, refuseDdwFlags) is imported from configuration.ts.

/** Reads and parses a description file; every failure is one line naming the file. */
export function readDescriptionFile(file: string): unknown {
  return parseDescriptionText(file, readInputFile(file, 'description file', 'utf8'));
}

function withFiles(line: MachineCommandLine): MachineCommandLine {
  return line.readDescription ? line : { ...line, readDescription: readDescriptionFile };
}

/** See configuration.ts; a DESCRIPTION.json word is read from disk. */
export function readCommandLine(line: MachineCommandLine): MachineCommandLine {
  return core.readCommandLine(withFiles(line));
}

/** See configuration.ts; a DESCRIPTION.json word is read from disk. */
export function configureMachine(commandLine: MachineCommandLine, qemu?: QemuArgs): MachineConfiguration {
  return core.configureMachine(withFiles(commandLine), qemu);
}

/** See configuration.ts; a DESCRIPTION.json word is read from disk. */
export function qemuOptionsOf(commandLine: MachineCommandLine, command?: string): QemuArgs {
  return core.qemuOptionsOf(withFiles(commandLine), command);
}

/** See configuration.ts; a DESCRIPTION.json word is read from disk. */
export function versionOf(commandLine: MachineCommandLine): ReturnType<typeof core.versionOf> {
  return core.versionOf(withFiles(commandLine));
}
