/**
 * The host IOMMU is a service like any other: a plugin brings its own backend by registering
 * VfioTokens.HostIommu, and the vfio-pci devices of the machine then talk to that backend only.
 */
import { DEFAULT_HOST_CONFIG, hostLinux, SimulatedSpaprTceHost } from '@ddw/host-linux';
import { createMachine, definePlugin, H_PUT_TCE, type Machine, PluginError } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { PciTokens } from '@ddw/pci';
import { spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import {
  GUEST_RAM_HOST_BASE,
  type HostIommu,
  type HostIommuContainer,
  type HostIommuOp,
  type HostVirtualMemory,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  type VfioPciDevice,
  VfioTokens,
  vfioCommon,
} from '../src/index.js';

const W0 = 0x80000000;

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** One call a container of the recording backend received. */
interface Call {
  op: string;
  args: unknown[];
}

/**
 * A third party's host IOMMU backend: a v1 host (the simulated Linux one inside) that records
 * every call QEMU's side makes on its containers.
 */
class RecordingHost implements HostIommu {
  readonly calls: Call[] = [];
  readonly #inner: SimulatedSpaprTceHost;

  constructor(memory: HostVirtualMemory) {
    this.#inner = new SimulatedSpaprTceHost({ ...DEFAULT_HOST_CONFIG, type: 'v1' }, memory);
  }

  get config() {
    return this.#inner.config;
  }

  checkExtension(type: number): number {
    return this.#inner.checkExtension(type);
  }

  openContainer(): HostIommuContainer {
    const fd = this.#inner.openContainer();
    const calls = this.calls;
    return new Proxy(fd, {
      get(target, key) {
        const value: unknown = Reflect.get(target, key, target);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.push({ op: String(key), args });
          return value.apply(target, args);
        };
      },
    });
  }

  injectFault(op: HostIommuOp, errno: number, count?: number): void {
    this.#inner.injectFault(op, errno, count);
  }
}

/** The third party's plugin: registers its backend as the machine's host IOMMU. */
const recordingHost = definePlugin((options: { after?: readonly string[] } = {}) => ({
  name: 'recording-host',
  // After vfio-common, whose stand-in it replaces (and after any other host it replaces).
  requires: ['vfio-common', ...(options.after ?? [])],
  register(ctx) {
    ctx.provide(VfioTokens.HostIommu, { useFactory: (get) => new RecordingHost(get(VfioTokens.HostMemory)) });
  },
}));

async function build(hostPlugins: ReturnType<typeof recordingHost>[]): Promise<Machine> {
  const m = await createMachine([spaprIommu(), spaprPci(), vfioCommon(), ...hostPlugins], {
    ram: '1G',
    devices: [{ id: 'hostnic', driver: 'vfio-pci', props: { host: '0000:01:00.0' } }],
  });
  machines.push(m);
  return m;
}

const nicOf = (m: Machine) =>
  m
    .get(PciTokens.Buses)
    .list.flatMap((b) => b.devices)
    .find((d) => d.id === 'hostnic') as VfioPciDevice;

describe('a host IOMMU backend from another plugin', () => {
  it('is the host the vfio-pci device uses: a guest TCE becomes a map on it, DMA translates through it', async () => {
    const m = await build([recordingHost()]);
    const host = m.get(VfioTokens.HostIommu);
    expect(host).toBeInstanceOf(RecordingHost);
    const recording = host as RecordingHost;
    expect(m.get(VfioTokens.Vfio).host).toBe(host);
    // The container was set up on this backend: a v1 one (attach, SET_IOMMU, ENABLE, GET_INFO).
    expect(recording.calls.map((c) => c.op).slice(0, 4)).toEqual([
      'attachGroup',
      'setIommu',
      'enable',
      'getInfo',
    ]);

    recording.calls.length = 0;
    expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x1000n, 0x5000n | 3n).ret).toBe(0n);
    // One run of one page: bus 0x1000 from the guest page's host address in QEMU's memory, R|W.
    expect(recording.calls.map((c) => c.op)).toEqual(['mapRun']);
    const [iova, pageShift, count, vaddr, , flags] = recording.calls[0]!.args as [
      bigint,
      number,
      number,
      number,
      number,
      number,
    ];
    expect([iova, pageShift, count, vaddr, flags]).toEqual([
      0x1000n,
      12,
      1,
      Number(GUEST_RAM_HOST_BASE + 0x5000n),
      VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
    ]);

    m.memory.write(0x5000n, new TextEncoder().encode('ping'));
    recording.calls.length = 0;
    const read = nicOf(m).dmaRead(0x1000n, 4);
    expect(read.result).toBe(MemTxResult.OK);
    expect(new TextDecoder().decode(read.data)).toBe('ping');
    expect(recording.calls.filter((c) => c.op === 'translate').map((c) => c.args[0])).toContain(0x1000n);
  });

  it('replaces the simulated Linux host when it registers after host-linux', async () => {
    const m = await build([hostLinux(), recordingHost({ after: ['host-linux'] })]);
    const host = m.get(VfioTokens.Vfio).host;
    expect(host).toBeInstanceOf(RecordingHost);
    expect((host as RecordingHost).calls.some((c) => c.op === 'attachGroup')).toBe(true);
  });
});

describe('a machine with vfio-common and no host plugin', () => {
  it('fails to build with one line naming the fix', async () => {
    const error = await createMachine([spaprIommu(), spaprPci(), vfioCommon()], { ram: '1G' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PluginError);
    expect((error as PluginError).message).toBe(
      'vfio-common has no host IOMMU to pass devices through: add hostLinux() from @ddw/host-linux, or a plugin that registers VfioTokens.HostIommu (requires: ["vfio-common"])',
    );
  });
});
