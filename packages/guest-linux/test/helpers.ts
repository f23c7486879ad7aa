import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  definePlugin,
  type GuestPort,
  type HypercallResult,
  type Machine,
  MachineBuilder,
  MachineTokens,
  type Plugin,
  type RtasCallResult,
  TraceBus,
} from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { emulatedDmaDriver, type PciDevice, PciTokens } from '@ddw/pci';
import {
  buildPseries,
  PSERIES_RAM_REGION,
  parseQemuArgs,
  pseriesDescription,
  pseriesPlugins,
} from '@ddw/pseries';
import { spaprIommu } from '@ddw/spapr-iommu';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import { afterEach, expect } from 'vitest';
import { LinuxGuest, type LinuxGuestOptions, type LinuxGuestPort } from '../src/index.js';

export const BUID_HI = 0x08000000;
export const BUID_LO = 0x20000000;
export const W0 = 0x80000000;
export const W1 = 0x80000001;
export const DDW_BASE = 0x800000000000000n;

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

export interface Rig {
  m: Machine;
  phb: SpaprPhb;
  /** spapr_iommu_* (and any other selected) trace lines since the machine was built. */
  lines: string[];
  guestErrors: string[];
}

export interface RigOptions {
  host?: string;
  /** Trace patterns (default spapr_iommu_*). */
  trace?: string[];
  /** Build without hcall-multi-tce (QEMU always offers it; other hypervisors may not). */
  noMultiTce?: boolean;
  /** Extra plugins (devices the guest has no driver for). */
  plugins?: Plugin[];
}

/** A pseries machine from QEMU options, traced, disposed after the test. */
export async function machine(qemuArgs: string, options: RigOptions = {}): Promise<Rig> {
  const trace = new TraceBus();
  trace.setPatterns(options.trace ?? ['spapr_iommu_*']);
  const lines: string[] = [];
  trace.addSink({ write: (l) => void lines.push(l) });
  let m: Machine;
  if (options.noMultiTce) {
    const args = parseQemuArgs(qemuArgs);
    const plugins = pseriesPlugins(args).map((p) =>
      p.name === 'spapr-iommu' ? spaprIommu({ accel: args.accel, multiTce: false }) : p,
    );
    m = await new MachineBuilder({ ramRegionName: PSERIES_RAM_REGION, trace })
      .use(...plugins, ...(options.plugins ?? []))
      .describe(pseriesDescription(args))
      .build();
  } else {
    m = await buildPseries(qemuArgs, {
      trace,
      ...(options.host !== undefined ? { host: options.host } : {}),
      ...(options.plugins ? { plugins: options.plugins } : {}),
    });
  }
  machines.push(m);
  const guestErrors: string[] = [];
  m.get(MachineTokens.Events).on('guest-error', (e) => void guestErrors.push(e.message));
  const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
  return { m, phb, lines, guestErrors };
}

/** A guest booted and probed on `rig`; `lines` is cleared first when `fromBoot` is set. */
export function bootGuest(rig: Rig, options: LinuxGuestOptions = {}, port: LinuxGuestPort = rig.m.guest) {
  const guest = new LinuxGuest(port, options);
  guest.boot();
  const states = guest.probeAll();
  return { guest, states };
}

export function device(rig: Rig, index = 0): PciDevice {
  return rig.phb.devices[index]!;
}

const fixtures = fileURLToPath(new URL('../../../test/fixtures/qemu-7.2/', import.meta.url));

/** The spapr_iommu_* lines of a public QEMU 7.2 trace. */
export function fixtureTrace(name: string): string[] {
  return readFileSync(`${fixtures}${name}.trace`, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('spapr_iommu_'));
}

/** The guest's DDW dmesg lines from a public sample console (each printed once; timestamps dropped). */
export function fixtureDdwDmesg(name: string): string[] {
  const out: string[] = [];
  // The console was captured from a serial line: CRLF endings.
  for (const line of readFileSync(`${fixtures}${name}.console`, 'utf8').split(/\r*\n/)) {
    const m = /^\[\s*[\d.]+\]\s+(.*ibm,(query|create|remove|reset)-pe-dma-window.*)$/.exec(line);
    if (m && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}

/** Host pointers and the TCE list address differ from run to run: compare everything else. */
export function normalize(line: string): string {
  return line.replace(/table=0x[0-9a-f]+/, 'table=PTR').replace(/tcelist=0x[0-9a-f]+/, 'tcelist=LIST');
}

export const ddwDmesg = (log: readonly string[]) =>
  log.filter((l) => /ibm,(query|create|remove|reset)-pe-dma-window/.test(l));

/** Lines by trace event name, e.g. count(lines, 'spapr_iommu_pci_stuff'). */
export function count(lines: readonly string[], event: string): number {
  return lines.filter((l) => l.startsWith(`${event} `)).length;
}

export interface PortHooks {
  hcall?: (opcode: number, args: bigint[], real: () => HypercallResult) => HypercallResult;
  rtas?: (token: number, args: readonly number[], nret: number, real: () => RtasCallResult) => RtasCallResult;
}

/** The machine's guest port with some calls answered differently, to reach the guest's error paths. */
export function hookedPort(port: GuestPort, hooks: PortHooks): LinuxGuestPort {
  return {
    memory: port.memory,
    deviceTree: port.deviceTree,
    hcall: (opcode, ...args) => {
      const real = () => port.hcall(opcode, ...args);
      return hooks.hcall
        ? hooks.hcall(
            Number(opcode),
            args.map((a) => BigInt(a)),
            real,
          )
        : real();
    },
    rtasCall: (call, args, nret, options) => {
      const real = () => port.rtasCall(call, args, nret, options);
      const token = typeof call === 'number' ? call : port.rtasToken(call);
      return hooks.rtas ? hooks.rtas(token, args, nret, real) : real();
    },
  };
}

/** Bytes that differ at every position, so an off-by-a-page mapping shows. */
export function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed * 7 + (i >> 8)) & 0xff);
}

export function readGuest(m: Machine, gpa: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  m.memory.read(gpa, out);
  return out;
}

/** A `-device virtio-net-pci` (1af4:1000) the model has no driver for. */
export const virtioNet = definePlugin(() => ({
  name: 'test-virtio-net',
  requires: ['spapr-pci'],
  register(ctx) {
    ctx
      .get(PciTokens.Drivers)
      .register(
        emulatedDmaDriver('virtio-net-pci', { vendorId: 0x1af4, deviceId: 0x1000, classCode: 0x020000 }),
      );
  },
}));

/** Byte-for-byte equality without a deep diff of every element (fast for large buffers). */
export function expectSame(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(Buffer.from(actual), Buffer.from(expected))).toBe(0);
}

/** A device read that succeeded and returned `expected`. */
export function expectRead(read: { result: MemTxResult; data: Uint8Array }, expected: Uint8Array): void {
  expect(read.result).toBe(MemTxResult.OK);
  expectSame(read.data, expected);
}
