import { type DeviceDmaState, type LinuxGeneration, LinuxGuest, type PeDecision } from '@ddw/guest-linux';
import {
  formatHex,
  formatSize,
  type HostErrorEvent,
  type Machine,
  mergeDescription,
  resolve,
  type TraceBus,
} from '@ddw/machine';
import {
  buildPseries,
  buildPseriesFromDescription,
  DEFAULT_PSERIES_MACHINE,
  parseQemuArgs,
  parseQemuSize,
  pseriesDescription,
  type QemuArgs,
} from '@ddw/pseries';
import type { TceStorage } from '@ddw/spapr-iommu';
import { type PciDevice, SpaprPciTokens } from '@ddw/spapr-pci';
import { formatHostConfig, VfioTokens } from '@ddw/vfio-common';

/** What `ddw run` was asked to build and do. */
export interface RunOptions extends MachineSource {
  guest?: LinuxGeneration | 'none';
  /** Called as the run advances (for a progress bar). */
  onProgress?: (step: string, done: number, total: number) => void;
}

export interface WindowReport {
  liobn: number;
  busOffset: string;
  pageShift: number;
  entries: number;
  mapped: number;
}

export interface DeviceReport {
  id: string;
  driver: string;
  bus: string;
  cfgAddr: number;
  mode: 'direct' | 'dynamic' | 'default' | 'none';
  liobn: number | null;
  dmaOffset: string;
  pageShift: number | null;
}

export interface TransferReport {
  device: string;
  direction: 'to-device' | 'from-device';
  busAddress: string;
  bytes: number;
  ok: boolean;
}

/** The report `ddw run` prints, as text or (with --json) as this object. */
export interface RunReport {
  machine: {
    type: string;
    ram: string;
    maxmem?: string;
    accel: string;
    devices: { id: string; driver: string; bus: string; cfgAddr: number }[];
  };
  phbs: { index: number; id: string; buid: string; windows: WindowReport[] }[];
  host: {
    config: string;
    windows: { startAddr: string; size: string; pageShift: number; levels: number }[];
    prereg: { vaddr: string; size: string }[];
    mappings: number;
    errors: string[];
  } | null;
  guest: {
    generation: string;
    decisions: {
      pe: string;
      buid: string;
      outcome: string;
      defaultWindowRemoved: boolean;
      reasons: string[];
    }[];
    devices: DeviceReport[];
  } | null;
  dma: { verifiedBytes: number; failedBytes: number; transfers: TransferReport[] };
  timeMs: number;
  ok: boolean;
}

/** Builds the machine, lets the guest negotiate, moves data both ways through every device, and reports. */
export async function runMachine(options: RunOptions = {}): Promise<RunReport> {
  const started = performance.now();
  const machine = await buildRunMachine(options);
  const hostErrors: HostErrorEvent[] = [];
  machine.events.on('host-error', (e) => hostErrors.push(e));
  try {
    const devices = resolve(machine.container, SpaprPciTokens.Phbs).list.flatMap((phb) => phb.devices);
    const generation = options.guest ?? 'linux-6.1';
    let guest: LinuxGuest | undefined;
    const states = new Map<PciDevice, DeviceDmaState>();
    const transfers: TransferReport[] = [];
    const total = 2 + devices.length;
    options.onProgress?.('boot', 0, total);
    if (generation !== 'none') {
      guest = new LinuxGuest(machine.guest, { generation });
      guest.boot();
      options.onProgress?.('negotiate', 1, total);
      guest.probeAll();
      for (const device of devices) {
        const fn = guest.functions.find(
          (f) => f.buid === device.phb.buid && f.cfgAddr === device.configAddress,
        );
        const state = fn && guest.state(fn);
        if (state) states.set(device, state);
      }
      options.onProgress?.('dma', 2, total);
      for (const [i, device] of devices.entries()) {
        const state = states.get(device);
        if (state) transfers.push(...exercise(machine, guest, device, state, i));
        options.onProgress?.('dma', 3 + i, total);
      }
    }
    const verifiedBytes = transfers.filter((t) => t.ok).reduce((n, t) => n + t.bytes, 0);
    const failedBytes = transfers.filter((t) => !t.ok).reduce((n, t) => n + t.bytes, 0);
    const report: RunReport = {
      machine: machineReport(machine, devices),
      phbs: resolve(machine.container, SpaprPciTokens.Phbs).list.map((phb) => ({
        index: phb.index,
        id: phb.id,
        buid: formatHex(phb.buid),
        windows: phb.windows
          .filter((t) => t.enabled)
          .map((t) => ({
            liobn: t.liobn,
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
              reasons: d.reasons,
            })),
            devices: devices.map((device) => deviceReport(device, states.get(device))),
          }
        : null,
      dma: { verifiedBytes, failedBytes, transfers },
      timeMs: Math.round(performance.now() - started),
      ok: failedBytes === 0 && !hostErrors.some((e) => e.fatal),
    };
    return report;
  } finally {
    machine.dispose();
  }
}

/** What a machine is built from on the command line. */
export interface MachineSource {
  /** A description (parsed JSON), merged over the default machine, or over `qemuArgs` when given. */
  description?: unknown;
  /** QEMU options describing the whole machine. */
  qemuArgs?: string;
  /** Host IOMMU capabilities (`--host`). */
  host?: string;
  /** RAM size as QEMU's -m reads it, over everything else. */
  ram?: string;
  trace?: TraceBus;
}

/** The machine `ddw run` and `ddw info` build: QEMU options, or a description over the default machine. */
export function buildRunMachine(source: MachineSource): Promise<Machine> {
  const build = {
    ...(source.trace ? { trace: source.trace } : {}),
    ...(source.host !== undefined ? { host: source.host } : {}),
  };
  if (source.qemuArgs !== undefined && source.description === undefined) {
    return buildPseries(
      source.ram === undefined ? source.qemuArgs : `${source.qemuArgs} -m ${source.ram}`,
      build,
    );
  }
  const preset =
    source.qemuArgs !== undefined ? jsonDescription(parseQemuArgs(source.qemuArgs)) : DEFAULT_PSERIES_MACHINE;
  const ram = source.ram !== undefined ? { ram: formatHex(parseQemuSize(source.ram, '-m size', 20n)) } : {};
  return buildPseriesFromDescription(mergeDescription(source.description ?? {}, ram), { ...build, preset });
}

/** A QEMU command line as a description a JSON file can merge over (64-bit values as hex strings). */
function jsonDescription(args: QemuArgs): unknown {
  return JSON.parse(
    JSON.stringify(pseriesDescription(args), (_k, v) => (typeof v === 'bigint' ? formatHex(v) : v)),
  );
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
  const ram = machine.ram.size;
  const base = ram - 0x2000000n - BigInt(index) * 0x400000n; // below the top of RAM, clear of the kernel
  const out: TransferReport[] = [];
  const length = 0x30000 + 0x1234;
  const toDevice = pattern(length, index * 2 + 1);
  const src = base + 0x123n;
  machine.guest.memory.write(src, toDevice);
  const busIn = guest.dmaMap(state.fn, src, length, 'to-device');
  if (busIn === undefined) {
    out.push({ device: device.id, direction: 'to-device', busAddress: '-', bytes: length, ok: false });
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
    out.push({ device: device.id, direction: 'from-device', busAddress: '-', bytes: length, ok: false });
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

/** Entries that map something (a TCE with a permission bit). */
export function mappedEntries(storage: TceStorage | null): number {
  let n = 0;
  storage?.forEachNonZero((_i, _high, low) => {
    if ((low & 3) !== 0) n++;
  });
  return n;
}

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
    pseries?: { accel?: string };
  };
  return {
    type: d.type ?? 'pseries-7.2',
    ram: formatSize(d.ram),
    ...(d.maxmem !== undefined && d.maxmem !== d.ram ? { maxmem: formatSize(d.maxmem) } : {}),
    accel: d.pseries?.accel ?? 'tcg',
    devices: devices.map((dev) => ({
      id: dev.id,
      driver: dev.driver,
      bus: dev.phb.busName,
      cfgAddr: dev.configAddress,
    })),
  };
}

function hostReport(machine: Machine, devices: PciDevice[], errors: HostErrorEvent[]): RunReport['host'] {
  if (!devices.some((d) => d.driver === 'vfio-pci')) return null;
  const vfio = resolve(machine.container, VfioTokens.Vfio);
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
    mappings: containers.reduce((n, c) => n + c.fd.mappings().length, 0),
    errors: errors.map((e) => `${e.fatal ? 'fatal: ' : ''}${e.message}`),
  };
}

function deviceReport(device: PciDevice, state: DeviceDmaState | undefined): DeviceReport {
  return {
    id: device.id,
    driver: device.driver,
    bus: device.phb.busName,
    cfgAddr: device.configAddress,
    mode: state?.mode ?? 'none',
    liobn: state ? state.window.liobn : null,
    dmaOffset: formatHex(state?.dmaOffset ?? 0n),
    pageShift: state ? state.window.pageShift : null,
  };
}
