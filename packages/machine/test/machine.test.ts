import { MemTxResult, MmioRegion } from '@ddw/memory';
import { afterEach, describe, expect, it } from 'vitest';
import * as z from 'zod';
import {
  ConfigError,
  createMachine,
  DeviceError,
  definePlugin,
  H_FUNCTION,
  H_PARAMETER,
  H_RTAS,
  H_SUCCESS,
  inject,
  injectable,
  type Machine,
  MachineBuilder,
  MachineTokens,
  type Plugin,
  PluginError,
  RTAS_OUT_PARAM_ERROR,
  RTAS_OUT_SUCCESS,
  TraceBus,
  token,
} from '../src/index.js';

const machines: Machine[] = [];
async function build(plugins: Plugin[], description: unknown = { ram: '1G' }): Promise<Machine> {
  const m = await createMachine(plugins, description);
  machines.push(m);
  return m;
}
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** An RTAS call that adds its arguments: enough to see every cell travel through guest memory. */
const adder = definePlugin((options: { token?: number } = {}) => ({
  name: 'adder',
  register(ctx) {
    ctx.get(MachineTokens.Rtas).register(
      'test,add',
      (call) => {
        if (call.nargs < 1 || call.nret !== 2) {
          call.setRet(0, RTAS_OUT_PARAM_ERROR);
          return;
        }
        let sum = 0;
        for (const a of call.args) sum = (sum + a) >>> 0;
        call.setRet(0, RTAS_OUT_SUCCESS);
        call.setRet(1, sum);
      },
      { ...(options.token !== undefined ? { token: options.token } : {}), owner: ctx.plugin },
    );
  },
}));

describe('building a machine from plugins', () => {
  it('registers plugins after the ones they require, whatever order they are given in', async () => {
    const order: string[] = [];
    const p = (name: string, requires: string[] = []): Plugin => ({
      name,
      requires,
      register: () => void order.push(name),
    });
    const m = await build([p('rtas-ddw', ['spapr-pci']), p('spapr-pci', ['spapr-iommu']), p('spapr-iommu')]);
    expect(order).toEqual(['spapr-iommu', 'spapr-pci', 'rtas-ddw']);
    expect(m.state).toBe('realized');
  });

  it('names the plugin at fault for missing, duplicate and cyclic requirements', async () => {
    const p = (name: string, requires: string[] = []): Plugin => ({ name, requires, register: () => {} });
    await expect(build([p('spapr-pci', ['spapr-iommu'])])).rejects.toThrow(
      /"spapr-pci" requires "spapr-iommu"/,
    );
    await expect(build([p('a'), p('a')])).rejects.toThrow(PluginError);
    await expect(build([p('a', ['b']), p('b', ['a'])])).rejects.toThrow(/a -> b -> a|b -> a -> b/);
  });

  it('validates the description against every plugin section and names the field', async () => {
    const phbs: Plugin = {
      name: 'phbs',
      sections: { phbs: z.array(z.object({ index: z.number().int().min(0).max(255) })).default([]) },
      register(ctx) {
        expect(ctx.description.phbs).toEqual([{ index: 3 }]);
      },
    };
    await build([phbs], { ram: '2G', phbs: [{ index: 3 }] });
    const err = await build([phbs], { ram: '2X', phbs: [{ index: 300 }], phbz: 1 }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(/ram/);
    expect(err.message).toMatch(/phbs\[0\]\.index/);
    expect(err.message).toMatch(/phbz/);
  });

  it('wraps a failing register() in a PluginError naming the plugin', async () => {
    const bad: Plugin = {
      name: 'bad-plugin',
      register: () => {
        throw new Error('no host IOMMU');
      },
    };
    await expect(build([bad])).rejects.toThrow(/bad-plugin/);
  });

  it('fails realize with an error naming the device, and unrealizes what was realized', async () => {
    const log: string[] = [];
    const devices: Plugin = {
      name: 'devices',
      register(ctx) {
        ctx.get(MachineTokens.Devices).add({
          id: 'good',
          realize: () => void log.push('realize good'),
          unrealize: () => void log.push('unrealize good'),
        });
        ctx.get(MachineTokens.Devices).add({
          id: 'vfio0',
          realize: () => {
            throw new Error('host window 0x800000000000000 not available');
          },
        });
      },
    };
    const err = await build([devices]).catch((e) => e);
    expect(err).toBeInstanceOf(DeviceError);
    expect(err.message).toMatch(/vfio0/);
    expect(err.message).toMatch(/host window/);
    expect(log).toEqual(['realize good', 'unrealize good']);
  });

  it('goes through register -> realize -> reset -> run -> unrealize -> dispose', async () => {
    const phases: string[] = [];
    const dev: Plugin = {
      name: 'dev',
      register(ctx) {
        ctx
          .get(MachineTokens.Events)
          .on('lifecycle', (e) => phases.push(e.device ? `${e.phase}:${e.device}` : e.phase));
        ctx.get(MachineTokens.Devices).add({ id: 'd0', reset: () => void phases.push('d0 reset') });
      },
    };
    const m = await new MachineBuilder().use(dev).describe({ ram: '256M' }).build();
    m.run();
    m.reset();
    m.dispose();
    m.dispose();
    expect(phases).toEqual([
      'register:dev',
      'realize:d0',
      'realize',
      'd0 reset',
      'reset:d0',
      'reset',
      'run',
      'd0 reset',
      'reset:d0',
      'reset',
      'unrealize:d0',
      'unrealize',
      'dispose:d0',
      'dispose',
    ]);
  });
});

describe('the guest port', () => {
  it('builds the RTAS argument buffer in guest memory as PAPR lays it out', async () => {
    const m = await build([adder({})]);
    const tokenCell = m.guest.rtasToken('test,add');
    expect(tokenCell).toBe(m.get(MachineTokens.Rtas).tokenOf('test,add'));
    const r = m.guest.rtasCall('test,add', [1, 2, 0xffffffff], 2, { bufferAddress: 0x2000n });
    expect(r).toEqual({ status: 0, rets: [0, 2], hcallRet: H_SUCCESS });
    // token, nargs, nret, args, rets: big-endian 32-bit cells at the buffer address.
    const cells = Array.from({ length: 8 }, (_, i) =>
      Number(m.memory.load(0x2000n + BigInt(4 * i), 4).value),
    );
    expect(cells).toEqual([tokenCell, 3, 2, 1, 2, 0xffffffff, 0, 2]);
  });

  it('answers an unknown token with PARAM_ERROR and H_PARAMETER, and reports a guest error', async () => {
    const m = await build([adder({})]);
    const errors: string[] = [];
    m.get(MachineTokens.Events).on('guest-error', (e) => errors.push(`${e.source}: ${e.message}`));
    const r = m.guest.rtasCall(0x7777, [1], 1);
    expect(r.status).toBe(RTAS_OUT_PARAM_ERROR);
    expect(r.hcallRet).toBe(H_PARAMETER);
    expect(errors).toEqual(['rtas: unknown RTAS token 0x7777']);
  });

  it('survives absurd counts and buffers outside RAM written by a hostile guest', async () => {
    const m = await build([adder({})]);
    const buf = 0x3000n;
    for (const [i, cell] of [
      m.get(MachineTokens.Rtas).tokenOf('test,add')!,
      0xffffffff,
      0xffffffff,
    ].entries()) {
      m.memory.store(buf + BigInt(4 * i), 4, BigInt(cell));
    }
    expect(m.guest.hcall(H_RTAS, buf).ret).toBe(H_SUCCESS);
    expect(m.guest.hcall(H_RTAS, 0xffff_ffff_ffff_fff0n).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_RTAS, -1n).ret).toBe(H_PARAMETER);
  });

  it('gives H_FUNCTION for an unknown hypercall and reports it', async () => {
    const m = await build([]);
    const errors: string[] = [];
    m.get(MachineTokens.Events).on('guest-error', (e) => errors.push(e.message));
    expect(m.guest.hcall(0x1234, 1n, 2n).ret).toBe(H_FUNCTION);
    expect(errors).toEqual(['unknown hypercall opcode 0x1234']);
  });

  it('publishes every RTAS token under /rtas, and guest RAM is the machine RAM', async () => {
    const m = await build([adder({ token: 0x2100 })]);
    expect(m.guest.deviceTree.getPropU32Cells('/rtas', 'test,add')).toEqual([0x2100]);
    expect(m.guest.memory.store(0x100n, 8, 0xabcdefn)).toBe(MemTxResult.OK);
    const bytes = new Uint8Array(8);
    m.get(MachineTokens.GuestRam).ram.read(0x100, bytes, 0, 8);
    expect([...bytes]).toEqual([0, 0, 0, 0, 0, 0xab, 0xcd, 0xef]);
    expect(m.guest.memory.load(0x4000_0000n, 4).result).toBe(MemTxResult.DECODE_ERROR);
  });
});

describe('dependency injection per machine', () => {
  const CounterToken = token<Counter>('test', 'Counter');
  @injectable()
  class Counter {
    count = 0;
    constructor(@inject(MachineTokens.Machine) readonly machine: Machine) {}
  }
  const counterPlugin = definePlugin(() => ({
    name: 'counter',
    register(ctx) {
      ctx.provide(CounterToken, { useClass: Counter });
      ctx.get(MachineTokens.SystemMemory).addSubregion(
        0x1_0000_0000n,
        new MmioRegion('counter', 0x1000n, {
          read: () => BigInt(++ctx.get(CounterToken).count),
        }),
      );
    },
  }));

  it('gives each machine its own instances, injected by explicit tokens', async () => {
    const a = await build([counterPlugin()]);
    const b = await build([counterPlugin()]);
    const ca = a.get(CounterToken);
    expect(ca.machine).toBe(a);
    expect(a.get(CounterToken)).toBe(ca);
    expect(b.get(CounterToken)).not.toBe(ca);
    a.memory.load(0x1_0000_0000n, 4);
    a.memory.load(0x1_0000_0000n, 4);
    expect(ca.count).toBe(2);
    expect(b.get(CounterToken).count).toBe(0);
    expect(a.mtree()).toContain('(prio 0, i/o): counter');
  });
});

describe('services provided by plugins', () => {
  const Greeting = token<{ text: string }>('test', 'Greeting');
  const provider = (name: string, text: string, requires: string[] = []) =>
    definePlugin(() => ({
      name,
      requires,
      register(ctx) {
        ctx.provide(Greeting, { useFactory: () => ({ text }) });
      },
    }))();

  it('lets a later plugin replace a service nothing has used yet', async () => {
    const m = await build([provider('first', 'hello'), provider('second', 'bonjour', ['first'])]);
    expect(m.get(Greeting).text).toBe('bonjour');
  });

  it('refuses to replace a service already built, naming both plugins', async () => {
    const early = definePlugin(() => ({
      name: 'early-user',
      requires: ['first'],
      register(ctx) {
        ctx.get(Greeting);
      },
    }))();
    await expect(
      build([provider('first', 'hello'), early, provider('second', 'bonjour', ['early-user'])]),
    ).rejects.toThrow(
      /plugin "second" provides @ddw\/test:Greeting, which plugin "first" provides and something already got/,
    );
  });

  it("refuses to replace the machine's own services", async () => {
    const p = definePlugin(() => ({
      name: 'own-port',
      register(ctx) {
        ctx.provide(MachineTokens.Trace, { useValue: new TraceBus() });
      },
    }))();
    await expect(build([p])).rejects.toThrow(
      /plugin "own-port" provides @ddw\/machine:Trace, which the machine provides/,
    );
  });

  it('names the plugin whose service fails while the machine is assembled', async () => {
    const broken = definePlugin(() => ({
      name: 'broken-service',
      register(ctx) {
        ctx.provide(Greeting, {
          useFactory: () => {
            throw new Error('no greeting today');
          },
        });
      },
    }))();
    const error = await build([broken]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PluginError);
    expect(String((error as Error).message)).toBe(
      'plugin "broken-service" failed to register: no greeting today',
    );
  });
});
