import {
  AddressSpace,
  ContainerRegion,
  formatHex,
  type MtreeOptions,
  mtree,
  RamRegion,
  UINT64_SPAN,
} from '@ddw/memory';
import { AddressSpaceList } from './address-spaces.js';
import type { MachineDescription } from './description.js';
import { DeviceTree } from './devicetree.js';
import {
  createMachineContainer,
  type DependencyContainer,
  type Provider,
  provide,
  resolve,
  type Token,
} from './di.js';
import { DdwError, InvalidArgumentError, PluginError } from './errors.js';
import { MachineEventBus } from './events.js';
import { GuestPort } from './guest-port.js';
import { HypercallRegistry } from './hcall.js';
import { DeviceRegistry } from './lifecycle.js';
import { H_RTAS } from './papr.js';
import { RtasRegistry } from './rtas.js';
import { MachineTokens } from './tokens.js';
import { TraceBus } from './trace/index.js';
import { registerRamVmstate, VmstateRegistry } from './vmstate/index.js';

export type MachineState = 'registering' | 'realized' | 'running' | 'unrealized' | 'disposed';

export interface MachineInit {
  /** Validated description (see description.ts); `ram` is the RAM size in bytes. */
  description: MachineDescription;
  /** Name of the guest RAM region, as it shows in `info mtree` (default "ram"). */
  ramRegionName?: string;
  /** Trace bus to use (default: a new one, all events disabled). */
  trace?: TraceBus;
}

/**
 * One machine: the assembly of its services. Every service (guest memory, the hypercall and RTAS
 * tables, the trace bus, the devices, and what plugins add) is registered against a token in the
 * machine's own DI container and built by it; `get(token)` is how anything outside a service
 * reaches one. Built by MachineBuilder, which lets each plugin provide its services and then
 * resolves them (assemble) before realizing the devices.
 */
export class Machine {
  readonly #container: DependencyContainer;
  /** Tokens plugins provided, in order: what assemble() builds. */
  readonly #provided: Token<unknown>[] = [];
  /** Who provided each token last. */
  readonly #owners = new Map<symbol, string>();
  /** Tokens something has got: their services exist and can no longer be replaced. */
  readonly #built = new Set<symbol>();
  readonly description: MachineInit['description'];
  #state: MachineState = 'registering';
  /** Disconnects the registries from the trace bus's recorders. */
  readonly #disconnectTrace: () => void;
  /**
   * Shorthands for the services every user of a machine touches, resolved once here (a resolve
   * per hypercall would cost on the guest's hot path): `get(MachineTokens.GuestPort)`,
   * `get(MachineTokens.SystemAddressSpace)` ("memory"), `get(MachineTokens.Trace)`.
   */
  readonly guest: GuestPort;
  readonly memory: AddressSpace;
  readonly trace: TraceBus;
  /** What the lifecycle drives and announces. */
  readonly #devices: DeviceRegistry;
  readonly #events: MachineEventBus;

  constructor(init: MachineInit) {
    const ram = (init as Partial<MachineInit> | null | undefined)?.description?.ram;
    if (typeof ram !== 'bigint' || ram <= 0n) {
      throw new InvalidArgumentError(
        'new Machine(init)',
        'init.description must be a validated description with a positive bigint `ram`; build machines with createMachine() or MachineBuilder',
      );
    }
    this.description = init.description;
    const c = createMachineContainer();
    this.#container = c;
    const T = MachineTokens;
    provide(c, T.Machine, { useValue: this });
    provide(c, T.Description, { useValue: this.description });
    provide(c, T.Events, { useClass: MachineEventBus });
    provide(c, T.Trace, init.trace ? { useValue: init.trace } : { useClass: TraceBus });
    provide(c, T.GuestRam, {
      useFactory: () => new RamRegion(init.ramRegionName ?? 'ram', init.description.ram),
    });
    provide(c, T.SystemMemory, {
      useFactory: (get) => {
        const system = new ContainerRegion('system', UINT64_SPAN);
        system.addSubregion(0n, get(T.GuestRam));
        return system;
      },
    });
    provide(c, T.AddressSpaces, { useClass: AddressSpaceList });
    provide(c, T.SystemAddressSpace, {
      useFactory: (get) => get(T.AddressSpaces).add(new AddressSpace(get(T.SystemMemory), 'memory')),
    });
    provide(c, T.Hypercalls, { useClass: HypercallRegistry });
    provide(c, T.Rtas, { useClass: RtasRegistry });
    provide(c, T.Vmstate, {
      useFactory: (get) => {
        const vmstate = new VmstateRegistry();
        registerRamVmstate(vmstate, get(T.GuestRam));
        return vmstate;
      },
    });
    provide(c, T.DeviceTree, { useClass: DeviceTree });
    provide(c, T.Devices, { useClass: DeviceRegistry });
    provide(c, T.GuestPort, { useClass: GuestPort });

    // What the machine's own services need from each other beyond their constructors.
    const events = this.get(T.Events);
    this.#events = events;
    this.#devices = this.get(T.Devices);
    const hypercalls = this.get(T.Hypercalls);
    const rtas = this.get(T.Rtas);
    hypercalls.onUnknown = (opcode) =>
      events.guestError('hcall', `unknown hypercall opcode ${formatHex(opcode)}`);
    hypercalls.onHandlerError = (opcode, name, error) =>
      events.guestError('hcall', `model error in ${name} (${formatHex(opcode)}): ${String(error)}`);
    rtas.onUnknown = (token) => events.guestError('rtas', `unknown RTAS token ${formatHex(token)}`);
    rtas.onHandlerError = (token, name, error) =>
      events.guestError('rtas', `model error in ${name} (${formatHex(token)}): ${String(error)}`);
    this.trace = this.get(T.Trace);
    this.memory = this.get(T.SystemAddressSpace);
    this.guest = this.get(T.GuestPort);
    this.#disconnectTrace = this.trace.connectCalls(hypercalls, rtas);
    this.get(T.DeviceTree).addNode('/rtas');
    const memory = this.memory;
    hypercalls.register(
      H_RTAS,
      'H_RTAS',
      ([r3 = 0n]) => ({ ret: GuestPort.serveRtas(memory, rtas, r3) }),
      '@ddw/machine',
    );
    // The machine's own services exist from here on: a plugin cannot replace them.
    for (const key of Object.values(T)) this.#built.add(key);
  }

  /**
   * The service registered for `key` (built on first use, once per machine). Throws a DdwError
   * naming the token when no plugin provides it.
   */
  get<T>(key: Token<T>): T {
    this.#built.add(key);
    return resolve(this.#container, key);
  }

  /**
   * Registers `key`'s service for `owner` (a plugin name; see `provide` in the DI facade): what a
   * plugin's `ctx.provide` does. A later registration of the same token replaces the earlier one,
   * as long as nothing has got it yet: replacing a service already built would leave two of it
   * live, so that is a PluginError naming both plugins.
   */
  provide<T>(key: Token<T>, provider: Provider<T>, owner = 'machine'): void {
    this.expectState('registering', 'provide a service to');
    if (this.#built.has(key)) {
      const first = this.#owners.get(key) ?? 'machine';
      throw new PluginError(
        owner,
        'conflict',
        `plugin "${owner}" provides ${String(key.description)}, which ${first === 'machine' ? 'the machine' : `plugin "${first}"`} provides and something already got; ` +
          'a service can be replaced only before anything uses it (provide it earlier, or get it in a factory rather than in register)',
      );
    }
    provide(this.#container, key, provider);
    this.#owners.set(key, owner);
    if (!this.#provided.includes(key)) this.#provided.push(key);
  }

  /**
   * Builds every service the plugins provided, in the order first provided: a service's
   * constructor or factory is where it joins the machine (registers its hypercalls, adds its
   * devices). Run once, after every plugin registered and before realize. What a service throws
   * names the plugin that provided it, as a failing register() does.
   */
  assemble(): void {
    this.expectState('registering', 'assemble');
    for (const key of this.#provided) {
      try {
        this.get(key);
      } catch (error) {
        throw error instanceof PluginError
          ? error
          : PluginError.registerFailed(this.#owners.get(key) ?? 'machine', error);
      }
    }
  }

  get state(): MachineState {
    return this.#state;
  }

  /** Address spaces shown by mtree(): guest memory first, then whatever plugins add. */
  get addressSpaces(): readonly AddressSpace[] {
    return this.get(MachineTokens.AddressSpaces).list;
  }

  /**
   * Realizes every device (in the order added), publishes the RTAS tokens in the device tree and
   * resets the machine, as QEMU's machine init followed by its first system reset.
   */
  async realize(): Promise<void> {
    this.expectState('registering', 'realize');
    this.publishRtasTokens();
    await this.#devices.realizeAll();
    this.#state = 'realized';
    this.#events.lifecycle('realize');
    this.reset();
  }

  /** A system reset (qemu_system_reset): every device's reset, in the order added. */
  reset(): void {
    if (this.#state !== 'realized' && this.#state !== 'running') {
      throw new DdwError('MACHINE_STATE', `cannot reset a machine that is ${this.#state}`);
    }
    this.#devices.resetAll();
    this.#events.lifecycle('reset');
  }

  /** Marks the guest as started; the guest port is usable from here on. */
  run(): void {
    this.expectState('realized', 'run');
    this.#state = 'running';
    this.#events.lifecycle('run');
  }

  unrealize(): void {
    if (this.#state !== 'realized' && this.#state !== 'running') return;
    this.#devices.unrealizeAll();
    this.#state = 'unrealized';
    this.#events.lifecycle('unrealize');
  }

  /** Releases everything: devices, address spaces, listeners. Idempotent. */
  dispose(): void {
    if (this.#state === 'disposed') return;
    this.unrealize();
    this.#devices.disposeAll();
    this.get(MachineTokens.AddressSpaces).destroyAll();
    this.#disconnectTrace();
    this.#state = 'disposed';
    this.#events.lifecycle('dispose');
    this.#events.removeAllListeners();
  }

  /** QEMU's `info mtree` (or `-f`) over this machine's address spaces. */
  mtree(options: MtreeOptions = {}): string {
    return mtree(this.addressSpaces, options);
  }

  private publishRtasTokens(): void {
    const deviceTree = this.get(MachineTokens.DeviceTree);
    for (const { name, token } of this.get(MachineTokens.Rtas).list())
      deviceTree.setPropU32Cells('/rtas', name, [token]);
  }

  private expectState(state: MachineState, action: string): void {
    if (this.#state !== state) {
      throw new DdwError(
        'MACHINE_STATE',
        `cannot ${action} a machine that is ${this.#state} (it must be ${state})`,
      );
    }
  }
}
