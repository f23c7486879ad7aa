import { ConfigError } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import { checkDeviceProps, E1000E_IDS, E1000E_PROPERTIES, emulatedDmaDriver } from '../src/index.js';

const e1000e = emulatedDmaDriver('e1000e', E1000E_IDS, { properties: E1000E_PROPERTIES });

function refusal(props: Record<string, string>): ConfigError {
  try {
    checkDeviceProps(e1000e, props, 'devices[3]');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('the props were accepted');
}

describe('checkDeviceProps', () => {
  it("accepts the driver's own properties and the PCI ones, each with a value of its kind", () => {
    expect(() =>
      checkDeviceProps(
        e1000e,
        { netdev: 'n0', mac: '52:54:00:12:34:56', rombar: '-1', multifunction: 'on', romsize: '0x10000' },
        'devices[3]',
      ),
    ).not.toThrow();
  });

  it('refuses an unknown property as QEMU does, naming the field and listing the known ones', () => {
    const error = refusal({ bogus: '1' });
    expect(error.field).toBe('devices[3].props.bogus');
    expect(error.problem).toBe("Property 'e1000e.bogus' not found");
    expect(error.fix).toMatch(/^e1000e properties: .*\bnetdev\b/);
  });

  it("refuses a value the property's kind cannot take, with QEMU's words and a hint", () => {
    expect(refusal({ multifunction: 'maybe' }).problem).toBe(
      "Parameter 'multifunction' expects 'on' or 'off'",
    );
    expect(refusal({ subsys: '0x10000' }).fix).toBe('write a number from 0 to 65535');
    expect(refusal({ mac: '52:54' }).problem).toBe("Property 'e1000e.mac' doesn't take value '52:54'");
  });

  it('says where a device field given as a property goes', () => {
    expect(refusal({ addr: '3' }).fix).toBe('give the device\'s "slot" and "fn" fields instead');
    expect(refusal({ bus: 'pci.0' }).problem).toBe('"bus" is not a property of e1000e');
  });
});
