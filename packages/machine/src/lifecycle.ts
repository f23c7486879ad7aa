import { inject, injectable } from './di.js';
import { ConfigError, DdwError, DeviceError, type DevicePhase, InvalidArgumentError } from './errors.js';
import type { MachineEventBus } from './events.js';
import { MachineTokens } from './tokens.js';

/**
 * A device as the machine drives it, after QEMU's qdev: built (created) by a plugin's register(),
 * then realize -> reset -> (run) -> unrealize -> dispose. Every hook is optional.
 */
export interface Device {
  readonly id: string;
  /** Acquire what the device needs; may fail, which fails the machine's realize. */
  realize?(): void | Promise<void>;
  /** Return to power-on state (QEMU's device reset). Only called on realized devices. */
  reset?(): void;
  /** Undo realize. */
  unrealize?(): void;
  /** Release everything; the device is never used again. */
  dispose?(): void;
}

export type DeviceState = 'created' | 'realized' | 'unrealized' | 'disposed';

interface Slot {
  readonly device: Device;
  /** The plugin that added it, for messages. */
  readonly owner: string | undefined;
  state: DeviceState;
}

/**
 * The machine's devices in the order they were added, which is the order they realize in. Reset
 * runs newest first, as QEMU's does: qdev puts each new child at the head of its bus's list and a
 * bus resets its children from the head, so a -device PHB resets before the machine's default one.
 * Teardown runs in reverse add order.
 */
@injectable()
export class DeviceRegistry {
  private readonly slots = new Map<string, Slot>();
  private disposed = false;

  constructor(@inject(MachineTokens.Events) private readonly events?: MachineEventBus) {}

  /**
   * Adds a device; `owner` is the plugin adding it (the registry a plugin gets with `get(MachineTokens.Devices)` passes its own name),
   * which messages about a clash of ids name.
   */
  add<D extends Device>(device: D, owner?: string): D {
    if (device === null || typeof device !== 'object') {
      throw new InvalidArgumentError(
        'DeviceRegistry.add(device)',
        `got ${device === null ? 'null' : typeof device}; pass an object with an id and optional realize/reset/unrealize/dispose hooks`,
      );
    }
    const id = device.id;
    if (typeof id !== 'string' || id === '') {
      throw new DdwError(
        'LIFECYCLE',
        `${owner === undefined ? 'a device' : `plugin "${owner}" added a device`} without an id; give every device a unique string id`,
      );
    }
    const taken = this.slots.get(id);
    if (taken) {
      const by = (who: string | undefined) => (who === undefined ? 'the machine' : `plugin "${who}"`);
      const owners =
        owner === undefined && taken.owner === undefined
          ? ''
          : ` (${by(taken.owner)} added it; ${by(owner)} adds this one)`;
      throw new ConfigError(
        `device "${id}"`,
        `the id is already taken by another device${owners}`,
        'give each device a unique id',
        { subject: 'machine' },
      );
    }
    if (this.disposed) {
      throw new DdwError(
        'LIFECYCLE',
        `device "${id}" was added to a machine that has been disposed; build a new machine`,
      );
    }
    this.slots.set(id, { device, owner, state: 'created' });
    return device;
  }

  get(id: string): Device | undefined {
    return this.slots.get(id)?.device;
  }

  /** Devices in add order. */
  list(): Device[] {
    return [...this.slots.values()].map((slot) => slot.device);
  }

  state(id: string): DeviceState | undefined {
    return this.slots.get(id)?.state;
  }

  /**
   * Realizes every device not realized yet, in add order (so a device added after the machine
   * started, as by hotplug, is realized by calling this again). If one fails, the devices this
   * call realized are unrealized in reverse order and a DeviceError naming the failing device is
   * thrown; the failed device stays in the state it was in.
   */
  async realizeAll(): Promise<void> {
    const realizedNow: Slot[] = [];
    for (const slot of this.slots.values()) {
      if (slot.state === 'realized') continue;
      this.check(slot, 'realize', ['created', 'unrealized']);
      try {
        await slot.device.realize?.();
      } catch (error) {
        const rollbackFailures: unknown[] = [];
        for (const done of realizedNow.reverse()) {
          try {
            this.unrealizeSlot(done);
          } catch (rollbackError) {
            rollbackFailures.push(rollbackError);
          }
        }
        throw new DeviceError(slot.device.id, 'realize', error, rollbackFailures);
      }
      slot.state = 'realized';
      realizedNow.push(slot);
      this.events?.lifecycle('realize', slot.device.id);
    }
  }

  /** Resets every device, newest first; all must be realized. */
  resetAll(): void {
    const slots = [...this.slots.values()];
    for (const slot of slots) this.check(slot, 'reset', ['realized']);
    for (const slot of slots.reverse()) {
      try {
        slot.device.reset?.();
      } catch (error) {
        throw new DeviceError(slot.device.id, 'reset', error);
      }
      this.events?.lifecycle('reset', slot.device.id);
    }
  }

  /**
   * Unrealizes the realized devices in reverse add order. A failing unrealize does not stop the
   * others: the device is still taken as unrealized (there is nothing to roll back to), and the
   * first failure is thrown at the end.
   */
  unrealizeAll(): void {
    let firstFailure: DeviceError | undefined;
    for (const slot of [...this.slots.values()].reverse()) {
      if (slot.state !== 'realized') continue;
      try {
        this.unrealizeSlot(slot);
      } catch (error) {
        firstFailure ??= error as DeviceError;
      }
    }
    if (firstFailure) throw firstFailure;
  }

  /**
   * Unrealizes what is still realized, then disposes every device in reverse add order. Safe to
   * call again: disposed devices are skipped. Failures do not stop the others; the first is
   * thrown at the end.
   */
  disposeAll(): void {
    this.disposed = true;
    let firstFailure: DeviceError | undefined;
    try {
      this.unrealizeAll();
    } catch (error) {
      firstFailure = error as DeviceError;
    }
    for (const slot of [...this.slots.values()].reverse()) {
      if (slot.state === 'disposed') continue;
      slot.state = 'disposed';
      try {
        slot.device.dispose?.();
      } catch (error) {
        firstFailure ??= new DeviceError(slot.device.id, 'dispose', error);
      }
      this.events?.lifecycle('dispose', slot.device.id);
    }
    if (firstFailure) throw firstFailure;
  }

  /** Unrealizes one slot; the state moves even if the hook throws (a DeviceError). */
  private unrealizeSlot(slot: Slot): void {
    slot.state = 'unrealized';
    try {
      slot.device.unrealize?.();
    } catch (error) {
      throw new DeviceError(slot.device.id, 'unrealize', error);
    } finally {
      this.events?.lifecycle('unrealize', slot.device.id);
    }
  }

  private check(slot: Slot, phase: DevicePhase, allowed: readonly DeviceState[]): void {
    if (!allowed.includes(slot.state)) {
      throw new DdwError(
        'LIFECYCLE',
        `device "${slot.device.id}" cannot ${phase} while ${slot.state}; it must be ${allowed.join(' or ')}`,
      );
    }
  }
}
