import {
  ConfigError,
  createMachine,
  DeviceError,
  type Machine,
  MachineTokens,
  PluginError,
} from '@ddw/machine';
import { PCI_DEVICE_PROPERTIES, PciTokens } from '@ddw/pci';
import { spaprIommu } from '@ddw/spapr-iommu';
import { afterEach, describe, expect, it } from 'vitest';
import { spaprPci } from './helpers.js';

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function build(description: Record<string, unknown>): Promise<Machine> {
  const m = await createMachine([spaprIommu(), spaprPci()], { ram: '1G', ...description });
  machines.push(m);
  return m;
}

/** The ConfigError behind a failed build: thrown as is, or the cause of a DeviceError or PluginError. */
async function configRefusal(description: Record<string, unknown>): Promise<ConfigError> {
  const error = await build(description).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (error === undefined) throw new Error('the machine was built');
  const config = error instanceof DeviceError || error instanceof PluginError ? error.cause : error;
  expect(config).toBeInstanceOf(ConfigError);
  return config as ConfigError;
}

describe('ids are QEMU identifiers', () => {
  it('refuses a device id with a space, naming devices[N].id', async () => {
    const error = await configRefusal({
      devices: [
        { id: 'nic0', driver: 'e1000e' },
        { id: 'my nic', driver: 'e1000e' },
      ],
    });
    expect(error.field).toBe('devices[1].id');
    expect(error.message).toBe(
      `machine description: devices[1].id: Parameter 'id' expects an identifier, got "my nic"; Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.`,
    );
  });

  it('refuses a PHB id that does not start with a letter', async () => {
    const error = await configRefusal({ phbs: [{ id: '1phb', index: 0 }] });
    expect(error.field).toBe('phbs[0].id');
    expect(error.problem).toMatch(/^Parameter 'id' expects an identifier/);
  });

  it('accepts letters, digits, "-", "." and "_"', async () => {
    const m = await build({
      phbs: [{ id: 'phb_0.a-b', index: 0 }],
      devices: [{ id: 'Nic-0.x_y', driver: 'e1000e', bus: 'phb_0.a-b.0' }],
    });
    expect(m.get(MachineTokens.Devices).get('Nic-0.x_y')).toBeDefined();
  });

  it('refuses the same id twice, and a device id that a PHB has', async () => {
    const twice = await configRefusal({
      devices: [
        { id: 'nic0', driver: 'e1000e' },
        { id: 'nic0', driver: 'dma-engine' },
      ],
    });
    expect(twice.message).toBe(
      'machine description: devices[1].id: id "nic0" is already used by devices[0]; give each device its own id',
    );
    const phb = await configRefusal({ devices: [{ id: 'pci', driver: 'e1000e' }] });
    expect(phb.message).toContain('devices[0].id: id "pci" is already used by phbs[0]');
  });
});

describe('device properties', () => {
  it("refuses an unknown property as QEMU: Property 'DRIVER.NAME' not found", async () => {
    const error = await configRefusal({
      devices: [
        { id: 'dma0', driver: 'dma-engine' },
        { id: 'nic0', driver: 'e1000e', props: { netdev: 'n0', bogusprop: '1' } },
      ],
    });
    expect(error.field).toBe('devices[1].props.bogusprop');
    expect(error.problem).toBe("Property 'e1000e.bogusprop' not found");
    expect(error.fix).toMatch(/^e1000e properties: .*\bnetdev\b/);
    expect(error.message.split('\n')).toHaveLength(1);
  });

  it('the device error names the device', async () => {
    const error = await build({
      devices: [{ id: 'eng', driver: 'dma-engine', props: { netdev: 'n0' } }],
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceError);
    expect((error as DeviceError).message).toBe(
      `device "eng" failed to realize: machine description: devices[0].props.netdev: Property 'dma-engine.netdev' not found; dma-engine properties: ${PCI_DEVICE_PROPERTIES.map(
        (p) => p.name,
      )
        .sort((a, b) => a.localeCompare(b))
        .join(', ')}`,
    );
  });

  it('accepts the properties QEMU users type for e1000e', async () => {
    const m = await build({
      devices: [
        {
          id: 'nic0',
          driver: 'e1000e',
          props: {
            netdev: 'n0',
            mac: '52:54:00:12:34:56',
            bootindex: '1',
            romfile: '',
            rombar: '0',
            multifunction: 'on',
            'x-pcie-lnksta-dllla': 'off',
          },
        },
      ],
    });
    expect(m.get(MachineTokens.Devices).get('nic0')).toBeDefined();
  });

  it('refuses a value the property cannot take', async () => {
    const bool = await configRefusal({
      devices: [{ id: 'n', driver: 'e1000e', props: { multifunction: 'maybe' } }],
    });
    expect(bool.message).toBe(
      "machine description: devices[0].props.multifunction: Parameter 'multifunction' expects 'on' or 'off'; write on or off",
    );
    const int = await configRefusal({ devices: [{ id: 'n', driver: 'e1000e', props: { rombar: 'x' } }] });
    expect(int.problem).toBe("Parameter 'rombar' expects int32");
    const range = await configRefusal({
      devices: [{ id: 'n', driver: 'e1000e', props: { subsys: '0x10000' } }],
    });
    expect(range.message).toBe(
      "machine description: devices[0].props.subsys: Parameter 'subsys' expects uint16; write a number from 0 to 65535",
    );
    const mac = await configRefusal({ devices: [{ id: 'n', driver: 'e1000e', props: { mac: '52:54' } }] });
    expect(mac.problem).toBe("Property 'e1000e.mac' doesn't take value '52:54'");
  });

  it('says where id, bus and addr go when given as properties', async () => {
    const error = await configRefusal({ devices: [{ id: 'n', driver: 'e1000e', props: { addr: '3' } }] });
    expect(error.message).toBe(
      `machine description: devices[0].props.addr: "addr" is not a property of e1000e; give the device's "slot" and "fn" fields instead`,
    );
  });
});

describe('the PCI drivers spapr-pci provides', () => {
  it('lists every driver with its description and properties, for -device help', async () => {
    const m = await build({});
    const list = m.get(PciTokens.Drivers).list();
    expect(list.map((d) => d.name)).toEqual(['dma-engine', 'e1000e']);
    for (const d of list) expect(d.description).not.toBe('');
    const e1000e = list.find((d) => d.name === 'e1000e')!;
    expect(e1000e.properties.map((p) => p.name)).toEqual(
      expect.arrayContaining([
        'netdev',
        'mac',
        'bootindex',
        'romfile',
        'rombar',
        'multifunction',
        'x-pcie-extcap-init',
      ]),
    );
    expect(e1000e.properties.find((p) => p.name === 'mac')).toMatchObject({ kind: 'macaddr' });
    const engine = list.find((d) => d.name === 'dma-engine')!;
    expect(engine.properties.map((p) => p.name)).not.toContain('netdev');
  });
});
