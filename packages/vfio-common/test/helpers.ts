import { type HostLinuxOptions, hostLinux } from '@ddw/host-linux';
import { type HostErrorEvent, type Machine, MachineBuilder, MachineTokens, TraceBus } from '@ddw/machine';
import { PSERIES_RAM_REGION, parseQemuArgs, pseriesDescription, pseriesPlugins } from '@ddw/pseries';
import { SpaprPciTokens, type SpaprPhb } from '@ddw/spapr-pci';
import { afterEach } from 'vitest';
import { type VfioCommonOptions, type VfioPciDevice, vfioCommon } from '../src/index.js';

export const BUID = [0x08000000, 0x20000000];
export const W0 = 0x80000000;
export const W1 = 0x80000001;
export const DDW_BUS = 1n << 59n;

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

export interface Rig {
  m: Machine;
  phb: SpaprPhb;
  nic: VfioPciDevice;
  lines: string[];
  hostErrors: HostErrorEvent[];
}

/** How a rig's VFIO side is set up: vfio-common's options (QEMU version) and the host's. */
export type PassthroughOptions = VfioCommonOptions & HostLinuxOptions;

/**
 * A pseries machine with a passed-through function, the vfio-common and host-linux plugins
 * configured with `vfio` (QEMU version; host), traced with `trace` from the start.
 */
export async function passthrough(
  qemuArgs: string,
  vfio: PassthroughOptions,
  trace: string[] = ['vfio_*'],
): Promise<Rig> {
  const bus = new TraceBus();
  bus.setPatterns(trace);
  const lines: string[] = [];
  bus.addSink({ write: (l) => void lines.push(l) });
  const args = parseQemuArgs(`${qemuArgs} -device vfio-pci,host=0000:01:00.0,id=hostnic`);
  const { host, hostIommu, ...common } = vfio;
  const hostOptions = { ...(host !== undefined ? { host } : {}), ...(hostIommu ? { hostIommu } : {}) };
  const plugins = pseriesPlugins(args).map((p) =>
    p.name === 'vfio-common' ? vfioCommon(common) : p.name === 'host-linux' ? hostLinux(hostOptions) : p,
  );
  const description = pseriesDescription(args);
  // The host comes from the plugin's options here, not from a description section.
  delete description.host;
  const m = await new MachineBuilder({ ramRegionName: PSERIES_RAM_REGION, trace: bus })
    .use(...plugins)
    .describe(description)
    .build();
  machines.push(m);
  const hostErrors: HostErrorEvent[] = [];
  m.get(MachineTokens.Events).on('host-error', (e) => void hostErrors.push(e));
  const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
  const nic = phb.devices.find((d) => d.id === 'hostnic') as VfioPciDevice;
  return { m, phb, nic, lines, hostErrors };
}

export function rtas(m: Machine, name: string, args: number[], nret: number): number[] {
  return m.guest.rtasCall(name, args, nret).rets.map((r) => r >>> 0);
}
