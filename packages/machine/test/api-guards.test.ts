import { afterEach, describe, expect, it } from 'vitest';
import * as z from 'zod';
import {
  ConfigError,
  createMachine,
  DeviceRegistry,
  definePlugin,
  InvalidArgumentError,
  Machine,
  MachineBuilder,
  MachineTokens,
  type Plugin,
  type PluginContext,
  PluginError,
  VMState,
  type VMStateDescription,
} from '../src/index.js';
import { orderPlugins } from '../src/plugin.js';

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function build(plugins: Plugin[], description: unknown = { ram: '256M' }): Promise<Machine> {
  const m = await createMachine(plugins, description);
  machines.push(m);
  return m;
}

/** The error `promise` rejects with. */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in outcome)) throw new Error('resolved');
  expect(outcome.error).toBeInstanceOf(Error);
  return outcome.error as Error;
}

const registering = (
  name: string,
  register: (ctx: PluginContext) => void,
  requires: string[] = [],
): Plugin => ({
  name,
  requires,
  register,
});

describe('createMachine validates like the CLI', () => {
  it('refuses RAM 0 with a ConfigError on ram', async () => {
    for (const ram of ['0', 0, '0G', '0x0']) {
      const error = await rejection(createMachine([], { ram }));
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).field).toBe('ram');
      expect(error.message).toBe(
        'machine description: ram: RAM size is 0; give the guest some RAM, e.g. "2G"',
      );
    }
  });

  it('refuses RAM larger than ddw backs with a ConfigError, not a MemoryConfigError', async () => {
    const error = await rejection(createMachine([], { ram: '1E' }));
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe('ram');
  });

  it('refuses a plugin list that is not an array, and a non-plugin in it, with named errors', async () => {
    const notArray = await rejection(createMachine(undefined as unknown as Plugin[], { ram: '1G' }));
    expect(notArray).toBeInstanceOf(InvalidArgumentError);
    expect(notArray.name).toBe('InvalidArgumentError');
    expect(notArray.message).toBe(
      'createMachine(plugins, description): plugins is undefined, not an array; pass a list such as [spaprIommu(), spaprPci()]',
    );
    const holey = await rejection(createMachine([undefined as unknown as Plugin], { ram: '1G' }));
    expect(holey).toBeInstanceOf(PluginError);
    expect(holey.message).toMatch(/a plugin factory returned undefined instead of \{ name, register \}/);
  });

  it('refuses malformed builder options with named errors', async () => {
    expect(() => new MachineBuilder(null as unknown as object)).toThrow(InvalidArgumentError);
    expect(() => new MachineBuilder({ ramRegionName: 7 as unknown as string })).toThrow(
      /options.ramRegionName must be a non-empty string/,
    );
    const badTrace = await rejection(createMachine([], { ram: '1G' }, { trace: {} as never }));
    expect(badTrace).toBeInstanceOf(InvalidArgumentError);
    expect(badTrace.message).toMatch(/options.trace must be a TraceBus/);
  });

  it('refuses a Machine built without a validated description', () => {
    expect(() => new Machine(undefined as never)).toThrow(InvalidArgumentError);
    expect(() => new Machine({ description: { ram: 1024 } } as never)).toThrow(/positive bigint `ram`/);
  });
});

describe('a duplicate registration names both plugins', () => {
  it('hypercalls', async () => {
    const a = registering('first', (ctx) =>
      ctx.get(MachineTokens.Hypercalls).register(0x1f0, 'H_TOY', () => ({ ret: 0n })),
    );
    const b = registering('second', (ctx) =>
      ctx.get(MachineTokens.Hypercalls).register(0x1f0, 'H_TOY2', () => ({ ret: 0n })),
    );
    const error = await rejection(build([a, b]));
    expect(error).toBeInstanceOf(PluginError);
    expect((error as PluginError).plugin).toBe('second');
    expect(error.message).toBe(
      'plugin "second" registers hypercall H_TOY2 (0x1f0), which plugin "first" already registered as H_TOY; only one plugin may serve an opcode',
    );
  });

  it('RTAS calls, by name and by token', async () => {
    const a = registering(
      'first',
      (ctx) => void ctx.get(MachineTokens.Rtas).register('toy,call', () => {}, { token: 0x3000 }),
    );
    const sameName = registering(
      'second',
      (ctx) => void ctx.get(MachineTokens.Rtas).register('toy,call', () => {}),
    );
    expect((await rejection(build([a, sameName]))).message).toBe(
      'plugin "second" registers RTAS call "toy,call", which plugin "first" already registered',
    );
    const sameToken = registering(
      'second',
      (ctx) => void ctx.get(MachineTokens.Rtas).register('toy,other', () => {}, { token: 0x3000 }),
    );
    expect((await rejection(build([a, sameToken]))).message).toMatch(
      /^plugin "second" gives RTAS call "toy,other" token 0x3000, which "toy,call" \(plugin "first"\) already has/,
    );
  });

  it('vmstate sections', async () => {
    class Box {
      value = 0;
    }
    const section: VMStateDescription<Box, unknown> = {
      name: 'toy-box',
      version: 1,
      minimumVersion: 1,
      fields: [VMState.uint32('value')],
    };
    const a = registering(
      'first',
      (ctx) => void ctx.get(MachineTokens.Vmstate).register(section, 0, new Box()),
    );
    const b = registering(
      'second',
      (ctx) => void ctx.get(MachineTokens.Vmstate).register(section, 0, new Box()),
    );
    const error = await rejection(build([a, b]));
    expect(error).toBeInstanceOf(PluginError);
    expect(error.message).toBe(
      'plugin "second" registers vmstate section "toy-box" instance 0x0, which plugin "first" already registered; give each section a unique name or instance id',
    );
  });

  it('device ids', async () => {
    const a = registering('first', (ctx) => void ctx.get(MachineTokens.Devices).add({ id: 'dev0' }));
    const b = registering('second', (ctx) => void ctx.get(MachineTokens.Devices).add({ id: 'dev0' }));
    const error = await rejection(build([a, b]));
    expect(error.message).toContain(
      'device "dev0": the id is already taken by another device (plugin "first" added it; plugin "second" adds this one)',
    );
  });

  it('an owner the plugin passes itself still wins', async () => {
    const a = registering('first', (ctx) =>
      ctx.get(MachineTokens.Hypercalls).register(0x1f0, 'H_TOY', () => ({ ret: 0n }), 'custom'),
    );
    const b = registering('second', (ctx) =>
      ctx.get(MachineTokens.Hypercalls).register(0x1f0, 'H_TOY2', () => ({ ret: 0n })),
    );
    expect((await rejection(build([a, b]))).message).toContain('which plugin "custom" already registered');
  });

  it('the plugin view is the same registry: what a plugin registers, the machine has', async () => {
    const m = await build([
      registering('toy', (ctx) =>
        ctx.get(MachineTokens.Hypercalls).register(0x1f0, 'H_TOY', () => ({ ret: 7n })),
      ),
    ]);
    expect(m.get(MachineTokens.Hypercalls).list()).toContainEqual({
      opcode: 0x1f0,
      name: 'H_TOY',
      owner: 'toy',
    });
    expect(m.guest.hcall(0x1f0).ret).toBe(7n);
  });
});

describe('other entry points', () => {
  it('orderPlugins and Machine.addAddressSpace refuse what they cannot use', async () => {
    expect(() => orderPlugins(undefined as never)).toThrow(InvalidArgumentError);
    const m = await build([]);
    expect(() => m.get(MachineTokens.AddressSpaces).add({} as never)).toThrow(/as must be an AddressSpace/);
  });
});

describe('DeviceRegistry.add', () => {
  it('refuses a non-object with a named error', () => {
    expect(() => new DeviceRegistry().add(undefined as never)).toThrow(InvalidArgumentError);
  });
});

describe('a bad `sections` entry names the plugin and the section', () => {
  it('refuses a value that is not a zod schema', () => {
    const factory = definePlugin(() => ({
      name: 'toy',
      sections: { toys: { type: 'array' } as never },
      register: () => {},
    }));
    expect(factory).toThrow(PluginError);
    expect(factory).toThrow(
      'plugin "toy" has description section "toys" that is an object, not a zod schema; give a schema such as z.object({...}).optional()',
    );
    const nullSchema = definePlugin(() => ({
      name: 'toy',
      sections: { toys: null as never },
      register: () => {},
    }));
    expect(nullSchema).toThrow(/section "toys" that is null, not a zod schema/);
  });

  it('refuses a key that is not an identifier or is a reserved name', () => {
    for (const key of ['my toys', '9lives', '', '__proto__']) {
      const sections = JSON.parse(`{${JSON.stringify(key)}: 1}`);
      for (const k of Object.keys(sections)) sections[k] = z.string().optional();
      const factory = definePlugin(() => ({ name: 'toy', sections, register: () => {} }));
      expect(factory).toThrow(
        `plugin "toy" has description section ${JSON.stringify(key)}, which is not a usable key`,
      );
    }
  });

  it('refuses sections that are an array', () => {
    const factory = definePlugin(() => ({ name: 'toy', sections: [] as never, register: () => {} }));
    expect(factory).toThrow(/plugin "toy" has `sections` that is not an object of schemas/);
  });

  it('accepts good sections', async () => {
    const toy = definePlugin(() => ({
      name: 'toy',
      sections: { toys: z.array(z.string()).default([]) },
      register: () => {},
    }));
    const m = await build([toy()], { ram: '256M', toys: ['a'] });
    expect(m.description.toys).toEqual(['a']);
  });
});

describe('GuestPort arguments', () => {
  it('refuses non-integer hcall arguments and bad RTAS cells with named errors', async () => {
    const m = await build([]);
    expect(() => m.guest.hcall(0x1f0, 1.5)).toThrow(InvalidArgumentError);
    expect(() => m.guest.hcall(Number.NaN)).toThrow(/opcode NaN is not an integer/);
    expect(() => m.guest.rtasCall(0x2000, [1], -1)).toThrow(/nret -1 is not a cell count/);
    expect(() => m.guest.rtasCall(0x2000, [2 ** 32], 1)).toThrow(/32-bit cells/);
    expect(() => m.guest.rtasCall(0x2000, [], 1, { bufferAddress: 0x1000 as never })).toThrow(
      /bufferAddress 4096 is not a guest address/,
    );
  });
});
