import { InvalidArgumentError } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import { emulatedDmaDriver, PCI_DEVICE_PROPERTIES, PciDriverRegistry } from '../src/index.js';

describe('PciDriverRegistry', () => {
  it('lists drivers by name, each with its own properties and the PCI ones', () => {
    const registry = new PciDriverRegistry();
    registry.register(emulatedDmaDriver('zeta'));
    registry.register(
      emulatedDmaDriver('alpha', undefined, {
        description: 'the first',
        properties: [{ name: 'mac', kind: 'macaddr', description: 'MAC address' }],
      }),
    );
    expect(registry.names()).toEqual(['alpha', 'zeta']);
    const [alpha] = registry.list();
    expect(alpha!.description).toBe('the first');
    expect(alpha!.properties.map((p) => p.name)).toEqual(
      ['mac', ...PCI_DEVICE_PROPERTIES.map((p) => p.name)].sort((a, b) => a.localeCompare(b)),
    );
    expect(registry.get('zeta')?.name).toBe('zeta');
    expect(registry.get('nope')).toBeUndefined();
  });

  it('refuses a driver registered twice or without a usable shape, with a named error', () => {
    const registry = new PciDriverRegistry();
    registry.register(emulatedDmaDriver('toy'));
    expect(() => registry.register(emulatedDmaDriver('toy'))).toThrow(InvalidArgumentError);
    expect(() => registry.register(emulatedDmaDriver('toy'))).toThrow(/"toy" is registered twice/);
    expect(() => registry.register(undefined as never)).toThrow(InvalidArgumentError);
    expect(() => registry.register({ ...emulatedDmaDriver('x'), name: 'bad name' })).toThrow(
      /not a QEMU type name/,
    );
    expect(() =>
      registry.register({
        ...emulatedDmaDriver('y'),
        properties: [
          { name: 'p', kind: 'str', description: '' },
          { name: 'p', kind: 'str', description: '' },
        ],
      }),
    ).toThrow(/declares property "p" twice/);
  });
});
