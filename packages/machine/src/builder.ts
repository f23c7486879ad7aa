import { formatHex } from '@ddw/memory';
import { DescriptionSchemaRegistry, type MachineDescription, parseDescription } from './description.js';
import type { Token } from './di.js';
import { InvalidArgumentError, PluginError } from './errors.js';
import { Machine } from './machine.js';
import { orderPlugins, type Plugin, type PluginContext } from './plugin.js';
import { MachineTokens } from './tokens.js';
import type { TraceBus } from './trace/index.js';

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

  private readonly options: MachineBuilderOptions;

  constructor(options: MachineBuilderOptions = {}) {
    this.options = checkBuilderOptions('new MachineBuilder(options)', options);
  }

  use(...plugins: Plugin[]): this {
    // Checked in plan() (orderPlugins), so a bad plugin fails build() with a PluginError.
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
        machine.get(MachineTokens.Events).lifecycle('register', plugin.name);
      }
      machine.assemble();
      await machine.realize();
    } catch (error) {
      machine.dispose();
      throw error;
    }
    return machine;
  }
}

/** Builds a machine from plugins and a description in one call. */
export async function createMachine(
  plugins: readonly Plugin[],
  description: unknown,
  options: MachineBuilderOptions = {},
): Promise<Machine> {
  if (!Array.isArray(plugins)) {
    throw new InvalidArgumentError(
      'createMachine(plugins, description)',
      `plugins is ${plugins === null ? 'null' : typeof plugins}, not an array; pass a list such as [spaprIommu(), spaprPci()]`,
    );
  }
  return new MachineBuilder(options)
    .use(...plugins)
    .describe(description)
    .build();
}

function checkBuilderOptions(where: string, options: unknown): MachineBuilderOptions {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgumentError(
      where,
      `options is ${options === null ? 'null' : Array.isArray(options) ? 'an array' : typeof options}; pass an object such as { ramRegionName: "ram" } or nothing`,
    );
  }
  const { ramRegionName, trace } = options as MachineBuilderOptions;
  if (ramRegionName !== undefined && (typeof ramRegionName !== 'string' || ramRegionName === '')) {
    throw new InvalidArgumentError(
      where,
      'options.ramRegionName must be a non-empty string, e.g. "ppc_spapr.ram"',
    );
  }
  // By shape, not class: a second copy of @ddw/machine makes buses that are not instanceof ours.
  if (trace !== undefined && typeof (trace as { defineAll?: unknown } | null)?.defineAll !== 'function') {
    throw new InvalidArgumentError(where, 'options.trace must be a TraceBus from @ddw/machine');
  }
  return options as MachineBuilderOptions;
}

/**
 * `target` as one plugin sees it: the same object, except that the methods in `overrides` take
 * their place. Other methods run bound to the real object (its private fields stay reachable).
 */
function pluginView<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(real, key) {
      if (Object.hasOwn(overrides, key)) return (overrides as Record<PropertyKey, unknown>)[key];
      const value: unknown = Reflect.get(real, key, real);
      return typeof value === 'function' ? value.bind(real) : value;
    },
  });
}

/**
 * A plugin's context. Its registries default `owner` to the plugin, so a clash (the same hypercall,
 * RTAS call or token, vmstate section or device id registered twice) names the plugin that
 * registered second and the one that was first, never "machine".
 */
function contextFor(machine: Machine, plugin: Plugin): PluginContext {
  const name = plugin.name;
  const hypercalls = machine.get(MachineTokens.Hypercalls);
  const rtas = machine.get(MachineTokens.Rtas);
  const vmstate = machine.get(MachineTokens.Vmstate);
  const devices = machine.get(MachineTokens.Devices);
  const views = new Map<symbol, unknown>([
    [
      MachineTokens.Hypercalls,
      pluginView(hypercalls, {
        register: (opcode, hcallName, handler, owner = name) =>
          hypercalls.register(opcode, hcallName, handler, owner),
      }),
    ],
    [
      MachineTokens.Rtas,
      pluginView(rtas, {
        register: (callName, handler, options = {}) =>
          rtas.register(callName, handler, { ...options, owner: options.owner ?? name }),
      }),
    ],
    [
      MachineTokens.Vmstate,
      pluginView(vmstate, {
        register: (description, instanceId, opaque, owner = name) => {
          const sectionName = (description as { name?: unknown } | null)?.name;
          const existing =
            typeof sectionName === 'string' && Number.isInteger(instanceId)
              ? vmstate.find(sectionName, instanceId)
              : undefined;
          if (existing) {
            throw new PluginError(
              owner,
              'conflict',
              `plugin "${owner}" registers vmstate section "${sectionName}" instance ${formatHex(instanceId)}, ` +
                `which plugin "${existing.owner}" already registered; give each section a unique name or instance id`,
            );
          }
          return vmstate.register(description, instanceId, opaque, owner);
        },
      }),
    ],
    [
      MachineTokens.Devices,
      pluginView(devices, { add: (device, owner = name) => devices.add(device, owner) }),
    ],
  ]);
  const get = <T>(key: Token<T>): T => (views.has(key) ? (views.get(key) as T) : machine.get(key));
  return {
    plugin: name,
    description: machine.description,
    // A factory builds its service with this plugin's view of the registries, as register() would,
    // and what it throws names this plugin.
    provide: (key, provider) =>
      machine.provide(
        key,
        provider !== null && typeof provider === 'object' && 'useFactory' in provider
          ? {
              useFactory: () => {
                try {
                  return provider.useFactory(get);
                } catch (error) {
                  throw error instanceof PluginError ? error : PluginError.registerFailed(name, error);
                }
              },
            }
          : provider,
        name,
      ),
    get,
  };
}
