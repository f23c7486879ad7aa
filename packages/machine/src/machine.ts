import { AddressSpace, ContainerRegion, type MtreeOptions, mtree, RamRegion, UINT64_SPAN } from '@ddw/memory';
import type { DependencyContainer } from 'tsyringe';
import type { MachineDescription } from './description.js';
import { DeviceTree } from './devicetree.js';
import { createMachineContainer } from './di.js';
import { DdwError, InvalidArgumentError } from './errors.js';
import { MachineEventBus } from './events.js';
import { GuestPort } from './guest-port.js';
import { HypercallRegistry } from './hcall.js';
import { DeviceRegistry } from './lifecycle.js';
import { H_RTAS } from './papr.js';
import { RtasRegistry } from './rtas.js';
import { MachineTokens } from './tokens.js';
import { TraceBus } from './trace.js';
import { registerRamVmstate, VmstateRegistry } from './vmstate.js';

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
 * One machine: its DI container, guest memory, the registries plugins contribute to, its devices
 * and the guest port. Built by MachineBuilder; plugins see it through their PluginContext.
 */
export class Machine {
  readonly container: DependencyContainer;
  readonly systemMemory: ContainerRegion;
  readonly ram: RamRegion;
  /** Guest physical memory ("memory"). */
  readonly memory: AddressSpace;
  readonly hypercalls: HypercallRegistry;
  readonly rtas: RtasRegistry;
  /** Migration sections (vmstate): what saveSnapshot writes and loadSnapshot reads back. */
  readonly vmstate: VmstateRegistry;
  readonly trace: TraceBus;
  readonly events: MachineEventBus;
  readonly deviceTree: DeviceTree;
  readonly devices: DeviceRegistry;
  readonly description: MachineInit['description'];
  readonly guest: GuestPort;
  #state: MachineState = 'registering';
  readonly #addressSpaces: AddressSpace[] = [];
  /** Disconnects the registries from the trace bus's recorders. */
  readonly #disconnectTrace: () => void;

  constructor(init: MachineInit) {
    const ram = (init as Partial<MachineInit> | null | undefined)?.description?.ram;
    if (typeof ram !== 'bigint' || ram <= 0n) {
      throw new InvalidArgumentError(
        'new Machine(init)',
        'init.description must be a validated description with a positive bigint `ram`; build machines with createMachine() or MachineBuilder',
      );
    }
    this.description = init.description;
    this.container = createMachineContainer();
    this.events = new MachineEventBus();
    this.trace = init.trace ?? new TraceBus();
    this.systemMemory = new ContainerRegion('system', UINT64_SPAN);
    this.ram = new RamRegion(init.ramRegionName ?? 'ram', init.description.ram);
    this.systemMemory.addSubregion(0n, this.ram);
    this.memory = this.addAddressSpace(new AddressSpace(this.systemMemory, 'memory'));
    this.hypercalls = new HypercallRegistry({
      onUnknown: (opcode) =>
        this.events.guestError('hcall', `unknown hypercall opcode 0x${opcode.toString(16)}`),
      onHandlerError: (opcode, name, error) =>
        this.events.guestError(
          'hcall',
          `model error in ${name} (0x${opcode.toString(16)}): ${String(error)}`,
        ),
    });
    this.rtas = new RtasRegistry({
      onUnknown: (token) => this.events.guestError('rtas', `unknown RTAS token 0x${token.toString(16)}`),
      onHandlerError: (token, name, error) =>
        this.events.guestError('rtas', `model error in ${name} (0x${token.toString(16)}): ${String(error)}`),
    });
    this.#disconnectTrace = this.trace.connectCalls(this.hypercalls, this.rtas);
    this.vmstate = new VmstateRegistry();
    registerRamVmstate(this.vmstate, this.ram);
    this.deviceTree = new DeviceTree();
    this.deviceTree.addNode('/rtas');
    this.devices = new DeviceRegistry(this.events);

    const c = this.container;
    c.register(MachineTokens.Machine, { useValue: this });
    c.register(MachineTokens.SystemMemory, { useValue: this.systemMemory });
    c.register(MachineTokens.GuestRam, { useValue: this.ram });
    c.register(MachineTokens.SystemAddressSpace, { useValue: this.memory });
    c.register(MachineTokens.Hypercalls, { useValue: this.hypercalls });
    c.register(MachineTokens.Rtas, { useValue: this.rtas });
    c.register(MachineTokens.Trace, { useValue: this.trace });
    c.register(MachineTokens.Events, { useValue: this.events });
    c.register(MachineTokens.DeviceTree, { useValue: this.deviceTree });
    c.register(MachineTokens.Devices, { useValue: this.devices });
    c.register(MachineTokens.Description, { useValue: this.description });
    this.guest = c.resolve(GuestPort);
    c.register(MachineTokens.GuestPort, { useValue: this.guest });

    this.hypercalls.register(
      H_RTAS,
      'H_RTAS',
      ([r3 = 0n]) => ({ ret: GuestPort.serveRtas(this.memory, this.rtas, r3) }),
      '@ddw/machine',
    );
  }

  get state(): MachineState {
    return this.#state;
  }

  /** Address spaces shown by mtree(): guest memory first, then whatever plugins add. */
  get addressSpaces(): readonly AddressSpace[] {
    return this.#addressSpaces;
  }

  addAddressSpace(as: AddressSpace): AddressSpace {
    if (!(as instanceof AddressSpace)) {
      throw new InvalidArgumentError(
        'Machine.addAddressSpace(as)',
        "as must be an AddressSpace from @ddw/memory, e.g. a PHB's DMA address space",
      );
    }
    if (!this.#addressSpaces.includes(as)) this.#addressSpaces.push(as);
    return as;
  }

  /**
   * Realizes every device (in the order added), publishes the RTAS tokens in the device tree and
   * resets the machine, as QEMU's machine init followed by its first system reset.
   */
  async realize(): Promise<void> {
    this.expectState('registering', 'realize');
    this.publishRtasTokens();
    await this.devices.realizeAll();
    this.#state = 'realized';
    this.events.lifecycle('realize');
    this.reset();
  }

  /** A system reset (qemu_system_reset): every device's reset, in the order added. */
  reset(): void {
    if (this.#state !== 'realized' && this.#state !== 'running') {
      throw new DdwError('MACHINE_STATE', `cannot reset a machine that is ${this.#state}`);
    }
    this.devices.resetAll();
    this.events.lifecycle('reset');
  }

  /** Marks the guest as started; the guest port is usable from here on. */
  run(): void {
    this.expectState('realized', 'run');
    this.#state = 'running';
    this.events.lifecycle('run');
  }

  unrealize(): void {
    if (this.#state !== 'realized' && this.#state !== 'running') return;
    this.devices.unrealizeAll();
    this.#state = 'unrealized';
    this.events.lifecycle('unrealize');
  }

  /** Releases everything: devices, address spaces and the DI container. Idempotent. */
  dispose(): void {
    if (this.#state === 'disposed') return;
    this.unrealize();
    this.devices.disposeAll();
    for (const as of [...this.#addressSpaces].reverse()) as.destroy();
    this.container.clearInstances();
    this.#disconnectTrace();
    this.#state = 'disposed';
    this.events.lifecycle('dispose');
    this.events.removeAllListeners();
  }

  /** QEMU's `info mtree` (or `-f`) over this machine's address spaces. */
  mtree(options: MtreeOptions = {}): string {
    return mtree(this.#addressSpaces, options);
  }

  private publishRtasTokens(): void {
    for (const { name, token } of this.rtas.list()) this.deviceTree.setPropU32Cells('/rtas', name, [token]);
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
