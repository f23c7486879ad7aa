import { hostLinux } from '@ddw/host-linux';
import { ConfigError, createMachine, DeviceError, type Machine, MachineTokens } from '@ddw/machine';
import { PciTokens } from '@ddw/pci';
import { spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import { type VfioPciDevice, vfioCommon } from '../src/index.js';

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** A machine with these vfio-pci devices (a v1 host: no pre-registration needed). */
async function build(devices: Record<string, unknown>[]): Promise<Machine> {
  const m = await createMachine([spaprIommu(), spaprPci(), vfioCommon(), hostLinux({ host: 'type=v1' })], {
    ram: '1G',
    devices: devices.map((d, i) => ({ id: `hostdev${i}`, driver: 'vfio-pci', ...d })),
  });
  machines.push(m);
  return m;
}

/** The DeviceError a build fails with, and the ConfigError it wraps. */
async function refusal(
  devices: Record<string, unknown>[],
): Promise<{ error: DeviceError; config: ConfigError }> {
  const error = await build(devices).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DeviceError);
  const config = (error as DeviceError).cause;
  expect(config).toBeInstanceOf(ConfigError);
  return { error: error as DeviceError, config: config as ConfigError };
}

const vfioDevice = (m: Machine, id: string) =>
  m
    .get(PciTokens.Buses)
    .list.flatMap((b) => b.devices)
    .find((d) => d.id === id) as VfioPciDevice;

describe('vfio-pci host', () => {
  it('refuses a host that is not a PCI address, naming devices[N].props.host', async () => {
    const { config } = await refusal([{ props: { host: 'garbage' } }]);
    expect(config.message).toBe(
      "machine description: devices[0].props.host: Property 'vfio-pci.host' doesn't take value 'garbage'; write it as DDDD:BB:DD.F, e.g. 0000:01:00.0",
    );
  });

  it('refuses a device with neither host nor sysfsdev', async () => {
    const { config } = await refusal([{ props: {} }]);
    expect(config.field).toBe('devices[0].props.host');
    expect(config.problem).toBe('No provided host device');
  });

  it('takes the host from sysfsdev, and refuses a sysfsdev that names no PCI function', async () => {
    const m = await build([{ props: { sysfsdev: '/sys/bus/pci/devices/0000:02:00.1' } }]);
    expect(vfioDevice(m, 'hostdev0').host).toBe('0000:02:00.1');
    const { config } = await refusal([{ props: { sysfsdev: '/dev/vfio/7' } }]);
    expect(config.field).toBe('devices[0].props.sysfsdev');
  });
});

describe('one host function per vfio-pci', () => {
  it('refuses a second vfio-pci with the same host, naming the second device', async () => {
    const { error, config } = await refusal([
      { props: { host: '0000:01:00.0' } },
      { props: { host: '0000:01:00.0' } },
    ]);
    expect(error.device).toBe('hostdev1');
    expect(config.field).toBe('devices[1].props.host');
    expect(config.problem).toBe('vfio 0000:01:00.0: device is already attached');
    expect(error.message).toBe(
      'device "hostdev1" failed to realize: machine description: devices[1].props.host: vfio 0000:01:00.0: device is already attached; device "hostdev0" already passes 0000:01:00.0 through; give each vfio-pci device its own host function',
    );
  });

  it('sees 01:00.0 and 0000:01:00.0 as the same function', async () => {
    const { error } = await refusal([{ props: { host: '0000:01:00.0' } }, { props: { host: '01:00.0' } }]);
    expect(error.device).toBe('hostdev1');
  });

  it('accepts different functions, and frees a function when its device unrealizes', async () => {
    const m = await build([{ props: { host: '0000:01:00.0' } }, { props: { host: '0000:01:00.1' } }]);
    expect(vfioDevice(m, 'hostdev1').host).toBe('0000:01:00.1');
    m.get(MachineTokens.Devices).unrealizeAll();
    await m.get(MachineTokens.Devices).realizeAll();
    expect(m.get(MachineTokens.Devices).state('hostdev0')).toBe('realized');
    expect(m.get(MachineTokens.Devices).state('hostdev1')).toBe('realized');
  });
});

describe('vfio-pci properties', () => {
  it('accepts what QEMU command lines pass to vfio-pci', async () => {
    const m = await build([
      {
        props: {
          host: '0000:01:00.0',
          rombar: '0',
          romfile: '',
          bootindex: '2',
          multifunction: 'on',
          'x-no-mmap': 'on',
          'x-pci-vendor-id': '0x15b3',
          'enable-migration': 'off',
        },
      },
    ]);
    expect(m.get(MachineTokens.Devices).state('hostdev0')).toBe('realized');
  });

  it("refuses a property vfio-pci does not have: Property 'vfio-pci.NAME' not found", async () => {
    const { config } = await refusal([{ props: { host: '0000:01:00.0', 'x-bogus': 'on' } }]);
    expect(config.field).toBe('devices[0].props.x-bogus');
    expect(config.problem).toBe("Property 'vfio-pci.x-bogus' not found");
  });

  it('is listed with its properties for -device help', async () => {
    const m = await build([{ props: { host: '0000:01:00.0' } }]);
    const vfio = m
      .get(PciTokens.Drivers)
      .list()
      .find((d) => d.name === 'vfio-pci');
    expect(vfio?.description).toMatch(/VFIO/);
    expect(vfio?.properties.map((p) => p.name)).toEqual(
      expect.arrayContaining([
        'host',
        'sysfsdev',
        'rombar',
        'romfile',
        'bootindex',
        'multifunction',
        'x-no-mmap',
      ]),
    );
  });
});
