import { describe, expect, it } from 'vitest';
import { ConfigError, DdwError, DeviceError } from '../src/errors.js';
import { type LifecycleEvent, MachineEventBus } from '../src/events.js';
import { type Device, DeviceRegistry } from '../src/lifecycle.js';

/** A device that logs its hooks into `log` and can be told to fail one. */
function device(id: string, log: string[], fail?: 'realize' | 'reset' | 'unrealize' | 'dispose'): Device {
  const hook = (phase: string) => () => {
    log.push(`${phase} ${id}`);
    if (fail === phase) throw new Error(`${id} cannot ${phase}`);
  };
  return {
    id,
    realize: hook('realize'),
    reset: hook('reset'),
    unrealize: hook('unrealize'),
    dispose: hook('dispose'),
  };
}

describe('DeviceRegistry', () => {
  it('realizes in add order, resets newest first (as QEMU walks a bus), tears down in reverse', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    for (const id of ['a', 'b', 'c']) devices.add(device(id, log));
    await devices.realizeAll();
    devices.resetAll();
    devices.unrealizeAll();
    devices.disposeAll();
    expect(log).toEqual([
      'realize a',
      'realize b',
      'realize c',
      'reset c',
      'reset b',
      'reset a',
      'unrealize c',
      'unrealize b',
      'unrealize a',
      'dispose c',
      'dispose b',
      'dispose a',
    ]);
    expect(devices.state('a')).toBe('disposed');
  });

  it('awaits asynchronous realize hooks in order', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add({
      id: 'slow',
      realize: async () => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        log.push('slow');
      },
    });
    devices.add({ id: 'fast', realize: () => void log.push('fast') });
    await devices.realizeAll();
    expect(log).toEqual(['slow', 'fast']);
  });

  it('on a failed realize, unrealizes the devices realized before it and names the device', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add(device('a', log));
    devices.add(device('b', log));
    devices.add(device('vfio0', log, 'realize'));
    devices.add(device('d', log));
    const error = await devices.realizeAll().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceError);
    expect(error).toMatchObject({ device: 'vfio0', phase: 'realize' });
    expect((error as DeviceError).message).toBe('device "vfio0" failed to realize: vfio0 cannot realize');
    expect(((error as DeviceError).cause as Error).message).toBe('vfio0 cannot realize');
    expect(log).toEqual(['realize a', 'realize b', 'realize vfio0', 'unrealize b', 'unrealize a']);
    expect(['a', 'b', 'vfio0', 'd'].map((id) => devices.state(id))).toEqual([
      'unrealized',
      'unrealized',
      'created',
      'created',
    ]);
  });

  it('keeps rollback failures on the realize error', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add(device('a', log, 'unrealize'));
    devices.add(device('b', log, 'realize'));
    const error = (await devices.realizeAll().catch((e: unknown) => e)) as DeviceError;
    expect(error.device).toBe('b');
    expect(error.suppressed).toHaveLength(1);
    expect(error.suppressed[0]).toMatchObject({ device: 'a', phase: 'unrealize' });
  });

  it('realizes devices added later (hotplug) without touching realized ones', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add(device('a', log));
    await devices.realizeAll();
    devices.add(device('hot', log));
    await devices.realizeAll();
    expect(log).toEqual(['realize a', 'realize hot']);
  });

  it('refuses invalid transitions', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add(device('a', log));
    expect(() => devices.resetAll()).toThrow(/device "a" cannot reset while created; it must be realized/);
    expect(() => devices.resetAll()).toThrow(DdwError);
    devices.disposeAll();
    await expect(devices.realizeAll()).rejects.toThrow(/cannot realize while disposed/);
    expect(() => devices.add(device('late', log))).toThrow(/has been disposed/);
  });

  it('wraps reset failures and stops there', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add(device('a', log));
    devices.add(device('b', log, 'reset'));
    await devices.realizeAll();
    expect(() => devices.resetAll()).toThrow('device "b" failed to reset: b cannot reset');
    expect(log).not.toContain('reset a');
  });

  it('tears down every device even when some fail, then throws the first failure', async () => {
    const log: string[] = [];
    const devices = new DeviceRegistry();
    devices.add(device('a', log, 'dispose'));
    devices.add(device('b', log, 'unrealize'));
    devices.add(device('c', log));
    await devices.realizeAll();
    log.length = 0;
    expect(() => devices.disposeAll()).toThrow('device "b" failed to unrealize: b cannot unrealize');
    expect(log).toEqual(['unrealize c', 'unrealize b', 'unrealize a', 'dispose c', 'dispose b', 'dispose a']);
    log.length = 0;
    expect(() => devices.disposeAll()).not.toThrow();
    expect(log).toEqual([]);
  });

  it('refuses a duplicate or missing id', () => {
    const devices = new DeviceRegistry();
    devices.add({ id: 'phb0' });
    expect(() => devices.add({ id: 'phb0' })).toThrow(ConfigError);
    expect(() => devices.add({ id: 'phb0' })).toThrow(
      'machine: device "phb0": the id is already taken by another device',
    );
    expect(() => devices.add({ id: '' })).toThrow(DdwError);
  });

  it('looks devices up and lists them in add order', () => {
    const devices = new DeviceRegistry();
    const phb = devices.add({ id: 'phb0' });
    devices.add({ id: 'nic0' });
    expect(devices.get('phb0')).toBe(phb);
    expect(devices.get('nope')).toBeUndefined();
    expect(devices.list().map((d) => d.id)).toEqual(['phb0', 'nic0']);
    expect(devices.state('phb0')).toBe('created');
  });

  it('reports each device through the lifecycle event when given the machine bus', async () => {
    const events = new MachineEventBus();
    const seen: LifecycleEvent[] = [];
    events.on('lifecycle', (e) => seen.push(e));
    const devices = new DeviceRegistry(events);
    devices.add({ id: 'a' });
    devices.add({ id: 'b' });
    await devices.realizeAll();
    devices.resetAll();
    devices.disposeAll();
    expect(seen.map((e) => `${e.phase} ${e.device}`)).toEqual([
      'realize a',
      'realize b',
      'reset b',
      'reset a',
      'unrealize b',
      'unrealize a',
      'dispose b',
      'dispose a',
    ]);
  });
});
