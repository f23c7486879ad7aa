import { DescriptionSchemaRegistry, type MachineDescription, parseDescription } from './description.js';
import { PluginError } from './errors.js';
import { Machine } from './machine.js';
import { orderPlugins, type Plugin, type PluginContext } from './plugin.js';
import type { TraceBus } from './trace.js';

export interface MachineBuilderOptions {
  /** Name of the guest RAM region in `info mtree` (default "ram"; pseries uses "ppc_spapr.ram"). */
  ramRegionName?: string;
  /** A trace bus to share (e.g. one the CLI already configured); default: the machine's own. */
  trace?: TraceBus;
}

/**
 * Composes a machine from plugins and a description:
 * order plugins by `requires` -> validate the description against every plugin's sections ->
 * register each plugin -> realize every device -> reset. Errors name the plugin, the description
 * field or the device at fault.
 */
export class MachineBuilder {
  readonly #plugins: Plugin[] = [];
  #description: unknown = {};

  constructor(private readonly options: MachineBuilderOptions = {}) {}

  use(...plugins: Plugin[]): this {
    this.#plugins.push(...plugins);
    return this;
  }

  /** The machine description: JSON text or data (sizes as strings such as "2G"). */
  describe(description: unknown): this {
    this.#description = description;
    return this;
  }

  /** Orders the plugins and validates the description without building anything. */
  plan(): { plugins: Plugin[]; description: MachineDescription } {
    const plugins = orderPlugins(this.#plugins);
    const schemas = new DescriptionSchemaRegistry();
    for (const plugin of plugins) {
      for (const [key, schema] of Object.entries(plugin.sections ?? {})) {
        schemas.registerSection(key, schema, plugin.name);
      }
    }
    return { plugins, description: parseDescription(this.#description, schemas) };
  }

  /** Builds, realizes and resets the machine. On failure nothing is left half-built. */
  async build(): Promise<Machine> {
    const { plugins, description } = this.plan();
    const machine = new Machine({
      description,
      ...(this.options.ramRegionName !== undefined ? { ramRegionName: this.options.ramRegionName } : {}),
      ...(this.options.trace !== undefined ? { trace: this.options.trace } : {}),
    });
    try {
      for (const plugin of plugins) {
        try {
          await plugin.register(contextFor(machine, plugin));
        } catch (error) {
          throw error instanceof PluginError ? error : PluginError.registerFailed(plugin.name, error);
        }
        machine.events.lifecycle('register', plugin.name);
      }
      await machine.realize();
    } catch (error) {
      machine.dispose();
      throw error;
    }
    return machine;
  }
}

/** Builds a machine from plugins and a description in one call. */
export function createMachine(
  plugins: readonly Plugin[],
  description: unknown,
  options: MachineBuilderOptions = {},
): Promise<Machine> {
  return new MachineBuilder(options)
    .use(...plugins)
    .describe(description)
    .build();
}

function contextFor(machine: Machine, plugin: Plugin): PluginContext {
  return {
    machine,
    container: machine.container,
    plugin: plugin.name,
    hypercalls: machine.hypercalls,
    rtas: machine.rtas,
    vmstate: machine.vmstate,
    trace: machine.trace,
    events: machine.events,
    deviceTree: machine.deviceTree,
    devices: machine.devices,
    description: machine.description,
    memory: { system: machine.systemMemory, ram: machine.ram, addressSpace: machine.memory },
  };
}
