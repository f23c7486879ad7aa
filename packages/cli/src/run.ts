import {
  type DeviceDmaState,
  type GuestChoice,
  guestOf,
  guestPageSize,
  LinuxGuest,
  linuxGuestSection,
  type PeDecision,
} from '@ddw/guest-linux';
import { formatHostConfig } from '@ddw/host-linux';
import { formatHex, type HostErrorEvent, type Machine, MachineTokens, type TraceBus } from '@ddw/machine';
import type { PciDevice } from '@ddw/pci';
import { buildResolved, type ResolvedDescription } from '@ddw/pseries';
import { mappedTces } from '@ddw/spapr-iommu';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { VfioTokens } from '@ddw/vfio-common';
import * as z from 'zod';
import { configureMachine, type MachineConfiguration } from './configuration.js';
import type { CommandIO } from './io.js';
import { type HmpCommand, runHmp } from './monitor.js';
import { nextTurn } from './turn.js';

/** What `ddw run` was asked to build and do, as the API takes it. */
export interface RunOptions extends MachineSource {
  /** Called as the run advances (for a progress bar). */
  onProgress?: (step: string, done: number, total: number) => void;
}

const hex = z.string().regex(/^0x[0-9a-f]+$/, 'a 0x-prefixed lowercase hexadecimal number');
const count = z.number().int().min(0);

const windowReportSchema = z.object({
  liobn: hex,
  busOffset: hex,
  pageShift: z.number().int(),
  entries: count,
  mapped: count,
});

const deviceReportSchema = z.object({
  id: z.string(),
  driver: z.string(),
  bus: z.string(),
  cfgAddr: hex,
  mode: z.enum(['direct', 'dynamic', 'default', 'none']),
  liobn: hex.nullable(),
  dmaOffset: hex,
  pageShift: z.number().int().nullable(),
});

const transferReportSchema = z.object({
  device: z.string(),
  direction: z.enum(['to-device', 'from-device']),
  busAddress: hex.nullable(),
  bytes: count,
  ok: z.boolean(),
});

/** The report `ddw run` prints, as text or (with --json) as this object. */
export const runReportSchema = z.object({
  schemaVersion: z.literal(1),
  kind: z.literal('run'),
  machine: z.object({
    type: z.string(),
    ram: hex,
    maxmem: hex.optional(),
    accel: z.enum(['tcg', 'kvm']),
    devices: z.array(z.object({ id: z.string(), driver: z.string(), bus: z.string(), cfgAddr: hex })),
  }),
  phbs: z.array(
    z.object({ index: z.number().int(), id: z.string(), buid: hex, windows: z.array(windowReportSchema) }),
  ),
  host: z
    .object({
      config: z.string(),
      windows: z.array(
        z.object({ startAddr: hex, size: hex, pageShift: z.number().int(), levels: z.number().int() }),
      ),
      prereg: z.array(z.object({ vaddr: hex, size: hex })),
      mappings: count,
      errors: z.array(z.string()),
    })
    .nullable(),
  guest: z
    .object({
      generation: z.string(),
      decisions: z.array(
        z.object({
          pe: z.string(),
          buid: hex,
          outcome: z.string(),
          defaultWindowRemoved: z.boolean(),
          /** One line: what the guest got and, without a DDW or with a dynamic one, why and the fix. */
          summary: z.string(),
          reasons: z.array(z.string()),
        }),
      ),
      devices: z.array(deviceReportSchema),
    })
    .nullable(),
  dma: z.object({ verifiedBytes: count, failedBytes: count, transfers: z.array(transferReportSchema) }),
  /** The `--hmp` commands run after boot, each with whether QEMU's monitor would have refused it. */
  monitor: z
    .array(z.object({ command: z.string(), ok: z.boolean(), error: z.string().optional() }))
    .nullable(),
  timeMs: count,
  ok: z.boolean(),
});

export type RunReport = z.infer<typeof runReportSchema>;
export type WindowReport = z.infer<typeof windowReportSchema>;
export type DeviceReport = z.infer<typeof deviceReportSchema>;
export type TransferReport = z.infer<typeof transferReportSchema>;

/** Builds the machine, lets the guest negotiate, moves data both ways through every device, and reports. */
export function runMachine(options: RunOptions = {}): Promise<RunReport> {
  return runResolved(configureSource(options).resolved, options);
}

/** `ddw run` on a description resolved from the command line (see configure.ts). */
export async function runResolved(
  resolved: ResolvedDescription,
  options: {
    trace?: TraceBus;
    onProgress?: RunOptions['onProgress'];
    /** QEMU monitor commands run once the guest has booted (`--hmp`), printing through `io`. */
    hmp?: { commands: readonly HmpCommand[]; io: CommandIO };
    /** Called with the machine once the report is made, before it is disposed (to look at its tables). */
    inspect?: (machine: Machine) => void;
  } = {},
): Promise<RunReport> {
  const started = performance.now();
  const machine = await buildConfigured(resolved, options.trace);
  const hostErrors: HostErrorEvent[] = [];
  machine.get(MachineTokens.Events).on('host-error', (e) => hostErrors.push(e));
  try {
    let devices = machine.get(SpaprPciTokens.Phbs).list.flatMap((phb) => phb.devices);
    const generation = guestOf(machine.description).generation;
    const states = new Map<PciDevice, DeviceDmaState>();
    const transfers: TransferReport[] = [];
    const total = 2 + devices.length;
    options.onProgress?.('boot', 0, total);
    await stageBoundary();
    let guest = negotiate(machine, () => options.onProgress?.('negotiate', 1, total));
    await stageBoundary();
    let monitor: RunReport['monitor'] = null;
    if (options.hmp) {
      const done = await runHmp(options.hmp.commands, {
        machine,
        ...(guest ? { guest } : {}),
        io: options.hmp.io,
      });
      // system_reset boots a new guest; device_del takes devices away.
      guest = done.guest;
      devices = machine.get(SpaprPciTokens.Phbs).list.flatMap((phb) => phb.devices);
      monitor = done.results.map((r) => ({
        command: r.command.text,
        ok: r.ok,
        ...(r.error !== undefined ? { error: r.error } : {}),
      }));
      await stageBoundary();
    }
    if (guest) {
      const phbs = machine.get(SpaprPciTokens.Phbs);
      for (const device of devices) {
        const buid = phbs.byBus(device.bus.name)?.buid;
        const fn = guest.functions.find((f) => f.buid === buid && f.cfgAddr === device.configAddress);
        const state = fn && guest.state(fn);
        if (state) states.set(device, state);
      }
      options.onProgress?.('dma', 2, total);
      for (const [i, device] of devices.entries()) {
        const state = states.get(device);
        if (state) transfers.push(...exercise(machine, guest, device, state, i));
        options.onProgress?.('dma', 3 + i, total);
        await stageBoundary();
      }
    }
    const verifiedBytes = transfers.filter((t) => t.ok).reduce((n, t) => n + t.bytes, 0);
    const failedBytes = transfers.filter((t) => !t.ok).reduce((n, t) => n + t.bytes, 0);
    const report: RunReport = {
      schemaVersion: 1,
      kind: 'run',
      machine: machineReport(machine, devices),
      phbs: machine.get(SpaprPciTokens.Phbs).list.map((phb) => ({
        index: phb.index,
        id: phb.id,
        buid: formatHex(phb.buid),
        windows: phb.windows
          .filter((t) => t.enabled)
          .map((t) => ({
            liobn: formatHex(BigInt(t.liobn)),
            busOffset: formatHex(t.busOffset),
            pageShift: t.pageShift,
            entries: t.nbTable,
            mapped: mappedEntries(t.storage),
          })),
      })),
      host: hostReport(machine, devices, hostErrors),
      guest: guest
        ? {
            generation,
            decisions: guest.decisions().map((d: PeDecision) => ({
              pe: d.peNode,
              buid: formatHex(d.buid),
              outcome: d.outcome,
              defaultWindowRemoved: d.defaultWindowRemoved,
              summary: d.summary,
              reasons: d.reasons,
            })),
            devices: devices.map((device) => deviceReport(device, states.get(device))),
          }
        : null,
      dma: { verifiedBytes, failedBytes, transfers },
      monitor,
      timeMs: Math.round(performance.now() - started),
      ok: failedBytes === 0 && !hostErrors.some((e) => e.fatal),
    };
    options.inspect?.(machine);
    return report;
  } finally {
    machine.dispose();
  }
}

/**
 * Lets the event loop turn between the stages of a run: the model itself is synchronous, and a
 * signal handler (Ctrl-C) runs only here, so an interrupted run stops at the next stage.
 */
function stageBoundary(): Promise<void> {
  return nextTurn();
}

/**
 * Boots the guest the description's `guest` section names and lets it negotiate every PE's DMA
 * windows, as a Linux kernel does at boot and driver probe; undefined with `none`.
 */
export function negotiate(machine: Machine, booted?: () => void): LinuxGuest | undefined {
  const section = guestOf(machine.description);
  if (section.generation === 'none') return undefined;
  const pageSize = guestPageSize(section);
  const guest = new LinuxGuest(machine.guest, {
    generation: section.generation,
    ...(pageSize !== undefined ? { pageSize } : {}),
  });
  guest.boot();
  booted?.();
  guest.probeAll();
  return guest;
}

/** What a machine is built from, as the API takes it (the CLI gives the same as a command line). */
export interface MachineSource {
  /** A description (parsed JSON), merged over the preset. */
  description?: unknown;
  /** QEMU options (a command line); with hardware options they describe the whole machine. */
  qemuArgs?: string;
  /** Host IOMMU capabilities (`--host`). */
  host?: string;
  /** The guest model (`--guest`). */
  guest?: GuestChoice;
  trace?: TraceBus;
}

/** A MachineSource through the one configuration channel. */
export function configureSource(source: MachineSource): MachineConfiguration {
  return configureMachine({
    words: [],
    ...(source.qemuArgs !== undefined ? { qemuArgs: [source.qemuArgs] } : {}),
    ...(source.description !== undefined
      ? { description: { name: 'description', data: source.description } }
      : {}),
    ...(source.host !== undefined ? { host: source.host } : {}),
    ...(source.guest !== undefined ? { guest: source.guest } : {}),
  });
}

/** The machine a resolved description describes, with the guest section ddw's commands read. */
export function buildConfigured(resolved: ResolvedDescription, trace?: TraceBus): Promise<Machine> {
  return buildResolved(resolved, { ...(trace ? { trace } : {}), plugins: [linuxGuestSection()] });
}

/** The machine `ddw info` and `ddw snapshot` build from a MachineSource. */
export function buildRunMachine(source: MachineSource): Promise<Machine> {
  return buildConfigured(configureSource(source).resolved, source.trace);
}

/**
 * Both directions through one device: the guest fills a buffer, maps it to the device, and the
 * device must read exactly those bytes; the device writes into a buffer mapped from it, and the
 * guest must find exactly those bytes. Buffers are odd-sized and start mid-page, so they cross
 * IOMMU pages.
 */
function exercise(
  machine: Machine,
  guest: LinuxGuest,
  device: PciDevice,
  state: DeviceDmaState,
  index: number,
): TransferReport[] {
  const ram = machine.get(MachineTokens.GuestRam).size;
  const base = ram - 0x2000000n - BigInt(index) * 0x400000n; // below the top of RAM, clear of the kernel
  const out: TransferReport[] = [];
  const length = 0x30000 + 0x1234;
  const toDevice = pattern(length, index * 2 + 1);
  const src = base + 0x123n;
  machine.guest.memory.write(src, toDevice);
  const busIn = guest.dmaMap(state.fn, src, length, 'to-device');
  if (busIn === undefined) {
    out.push({ device: device.id, direction: 'to-device', busAddress: null, bytes: length, ok: false });
  } else {
    const read = device.dmaRead(busIn, length);
    out.push({
      device: device.id,
      direction: 'to-device',
      busAddress: formatHex(busIn),
      bytes: length,
      ok: read.result === 0 && equal(read.data, toDevice),
    });
    guest.dmaUnmap(state.fn, busIn, length);
  }
  const fromDevice = pattern(length, index * 2 + 2);
  const dst = base + 0x200000n + 0x77n;
  machine.guest.memory.write(dst, new Uint8Array(length));
  const busOut = guest.dmaMap(state.fn, dst, length, 'from-device');
  if (busOut === undefined) {
    out.push({ device: device.id, direction: 'from-device', busAddress: null, bytes: length, ok: false });
  } else {
    const wrote = device.dmaWrite(busOut, fromDevice);
    const back = new Uint8Array(length);
    machine.guest.memory.read(dst, back);
    out.push({
      device: device.id,
      direction: 'from-device',
      busAddress: formatHex(busOut),
      bytes: length,
      ok: wrote === 0 && equal(back, fromDevice),
    });
    guest.dmaUnmap(state.fn, busOut, length);
  }
  return out;
}

/** Entries that map something (a TCE with a permission bit), counted by runs. */
export const mappedEntries = mappedTces;

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function machineReport(machine: Machine, devices: PciDevice[]): RunReport['machine'] {
  const d = machine.description as {
    type?: string;
    ram: bigint;
    maxmem?: bigint;
    pseries?: { accel?: 'tcg' | 'kvm' };
  };
  return {
    type: d.type ?? 'pseries',
    ram: formatHex(d.ram),
    ...(d.maxmem !== undefined && d.maxmem !== d.ram ? { maxmem: formatHex(d.maxmem) } : {}),
    accel: d.pseries?.accel ?? 'tcg',
    devices: devices.map((dev) => ({
      id: dev.id,
      driver: dev.driver,
      bus: dev.bus.name,
      cfgAddr: formatHex(BigInt(dev.configAddress)),
    })),
  };
}

function hostReport(machine: Machine, devices: PciDevice[], errors: HostErrorEvent[]): RunReport['host'] {
  if (!devices.some((d) => d.driver === 'vfio-pci')) return null;
  const vfio = machine.get(VfioTokens.Vfio);
  const containers = vfio.containers.filter((c) => c.groups.size > 0);
  return {
    config: formatHostConfig(vfio.host.config),
    windows: containers.flatMap((c) =>
      c.fd.windows().map((w) => ({
        startAddr: formatHex(w.startAddr),
        size: formatHex(w.size),
        pageShift: w.pageShift,
        levels: w.levels,
      })),
    ),
    prereg: containers.flatMap((c) =>
      c.fd.registered().map((r) => ({ vaddr: formatHex(r.vaddr), size: formatHex(r.size) })),
    ),
    mappings: containers.reduce((n, c) => n + c.fd.mappedCount(), 0),
    errors: errors.map((e) => `${e.fatal ? 'fatal: ' : ''}${e.message}`),
  };
}

function deviceReport(device: PciDevice, state: DeviceDmaState | undefined): DeviceReport {
  return {
    id: device.id,
    driver: device.driver,
    bus: device.bus.name,
    cfgAddr: formatHex(BigInt(device.configAddress)),
    mode: state?.mode ?? 'none',
    liobn: state ? formatHex(BigInt(state.window.liobn)) : null,
    dmaOffset: formatHex(state?.dmaOffset ?? 0n),
    pageShift: state ? state.window.pageShift : null,
  };
}
