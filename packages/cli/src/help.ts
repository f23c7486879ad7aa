import { PciTokens } from '@ddw/pci';
import {
  buildPseries,
  DEFAULT_QEMU_VERSION,
  machineType,
  machineTypesOf,
  QEMU_VERSIONS,
  type QemuArgs,
  type QemuVersion,
} from '@ddw/pseries';
import { UsageError } from './configuration.js';
import type { CommandIO } from './io.js';
import { DDW_VERSION } from './version.js';

/** QEMU's -device name for a PHB, which pseries itself models (not a PCI driver). */
const PHB_DRIVER = 'spapr-pci-host-bridge';

/**
 * Answers what QEMU answers before building anything: `-h`, `-version`, `-M help`, `-device
 * help`, `-device DRIVER,help`, `-trace help`. Returns whether there was such a request.
 */
export async function answerRequests(
  qemu: QemuArgs,
  io: CommandIO,
  help: () => string,
  version: QemuVersion = DEFAULT_QEMU_VERSION,
): Promise<boolean> {
  const r = qemu.requests;
  if (r.help) io.out(help());
  else if (r.version) io.out(versionText());
  else if (r.machineHelp) io.out(machineHelp(version));
  else if (r.deviceHelp !== undefined) io.out(await deviceHelp(r.deviceHelp));
  else if (r.traceHelp) io.out(await traceHelp());
  else return false;
  return true;
}

export function versionText(): string {
  const versions = QEMU_VERSIONS.map((v) => `${v}${v === DEFAULT_QEMU_VERSION ? ' (default)' : ''}`);
  return `ddw version ${DDW_VERSION}\nQEMU versions modelled: ${versions.join(', ')} (--qemu VERSION; -M help lists each one's machine types)\n`;
}

/** QEMU's `-machine help`: the version's types, newest first, its alias and what is deprecated. */
function machineHelp(version: QemuVersion): string {
  const types = machineTypesOf(version);
  const newest = machineType('pseries', '-M', version);
  const rows = [
    ['pseries', `${newest.description} (alias of ${newest.name})`],
    ...types.map((t) => [t.name, `${t.description}${t.deprecated ? ' (deprecated)' : ''}`]),
  ];
  const width = Math.max(...rows.map((r) => r[0]!.length));
  return `Supported machines are (QEMU ${version}):\n${rows.map(([n, d]) => `${n!.padEnd(width)}  ${d}\n`).join('')}`;
}

/** A machine with every plugin, for what only the plugins know (their drivers and trace events). */
function bareMachine() {
  return buildPseries('-M pseries');
}

async function deviceHelp(request: true | string): Promise<string> {
  const machine = await bareMachine();
  try {
    const drivers = machine.get(PciTokens.Drivers).list();
    if (request === true) {
      const rows = [
        [PHB_DRIVER, 'sPAPR PCI host bridge (index=N mandatory)'],
        ...drivers.map((d) => [d.name, d.description]),
      ];
      return `PCI devices:\n${rows.map(([n, d]) => `name "${n}", bus PCI, desc "${d}"\n`).join('')}`;
    }
    if (request === PHB_DRIVER) {
      return `${PHB_DRIVER} options:\n  index=<uint32>  the PHB number (BUID, LIOBNs, windows)\n  ddw=<bool>  offer dynamic DMA windows\n  dma_win_addr=<uint64>\n  dma_win_size=<uint64>\n  dma64_win_addr=<uint64>\n  pgsz=<uint64>  page sizes offered (bitmap)\n`;
    }
    const driver = drivers.find((d) => d.name === request);
    if (!driver) {
      throw new UsageError(
        `-device ${request},help: '${request}' is not a valid device model name; -device help lists them`,
      );
    }
    const width = Math.max(0, ...driver.properties.map((p) => `${p.name}=<${p.kind}>`.length));
    const lines = [...driver.properties]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((p) => `  ${`${p.name}=<${p.kind}>`.padEnd(width)}  - ${p.description}\n`);
    return `${driver.name} options:\n${lines.join('')}`;
  } finally {
    machine.dispose();
  }
}

async function traceHelp(): Promise<string> {
  const machine = await bareMachine();
  try {
    return machine.trace
      .events()
      .map((e) => `${e.name}\n`)
      .join('');
  } finally {
    machine.dispose();
  }
}
