import type { ZodType } from 'zod';
import type { MachineDescription } from './description.js';
import type { Provider, Token } from './di.js';
import { InvalidArgumentError, PluginError } from './errors.js';

/**
 * What a plugin gets in register(): its name, the validated description, and the machine's
 * services by token. A plugin provides its services (`provide(token, { useClass | useFactory |
 * useValue })`); the machine builds them once every plugin has registered, so a service reaches
 * another by `@inject(token)` in its constructor (or `get` in its factory), whatever the order of
 * the plugins. Providing a token another plugin provided replaces that service.
 */
export interface PluginContext {
  /** The name of the plugin being registered, for `owner` arguments and messages. */
  readonly plugin: string;
  /** The validated machine description: the base keys and every plugin's section. */
  readonly description: MachineDescription;
  /** Registers `key`'s service for this machine. */
  provide<T>(key: Token<T>, provider: Provider<T>): void;
  /**
   * The service of `key`, built now if it was not yet (prefer a factory's `get`, which waits for
   * every plugin's registrations). The machine's registries come as this plugin's view: what it
   * registers there is owned by it, so a clash names it.
   */
  get<T>(key: Token<T>): T;
}

export interface Plugin {
  /** Unique in a machine; what `requires` and error messages use. */
  readonly name: string;
  /** Plugins that must register before this one. */
  readonly requires?: readonly string[];
  /**
   * Top-level sections of the machine description this plugin owns, by key, as zod schemas
   * (`.optional()` or with a `.default()`). They are validated, with the rest of the description,
   * before any plugin registers; register() finds the result in `ctx.description[key]`.
   */
  readonly sections?: Readonly<Record<string, ZodType>>;
  register(ctx: PluginContext): void | Promise<void>;
}

/** Callable with no argument when every option is optional. */
export type PluginFactory<O> = (
  ...options: undefined extends O
    ? [options?: O]
    : Record<never, never> extends O
      ? [options?: O]
      : [options: O]
) => Plugin;

/**
 * Declares a plugin factory. The factory's result is checked on every call, so a malformed plugin
 * fails where it is built, with its name, not later inside the builder.
 */
export function definePlugin<O = undefined>(factory: (options: O) => Plugin): PluginFactory<O> {
  if (typeof factory !== 'function') {
    throw new PluginError(
      '',
      'invalid',
      'definePlugin() takes a function that builds the plugin from its options',
    );
  }
  // Called without options, a factory whose options are all optional gets an empty object.
  return (...options) => validatePlugin(factory((options[0] ?? {}) as O));
}

/** Throws a PluginError unless `plugin` has a name, a register function and well-formed requires. */
export function validatePlugin(plugin: Plugin): Plugin {
  if (plugin === null || typeof plugin !== 'object') {
    throw new PluginError(
      '',
      'invalid',
      `a plugin factory returned ${String(plugin)} instead of { name, register }`,
    );
  }
  const { name, requires, register } = plugin;
  if (typeof name !== 'string' || name.trim() === '') {
    throw new PluginError('', 'invalid', 'a plugin has no name; give it a non-empty `name`');
  }
  if (typeof register !== 'function') {
    throw new PluginError(name, 'invalid', `plugin "${name}" has no register(ctx) function`);
  }
  if (plugin.sections !== undefined) checkSections(name, plugin.sections);
  if (requires !== undefined) {
    if (!Array.isArray(requires) || requires.some((r) => typeof r !== 'string' || r.trim() === '')) {
      throw new PluginError(
        name,
        'invalid',
        `plugin "${name}" has a \`requires\` that is not a list of plugin names`,
      );
    }
  }
  return plugin;
}

/** A description section key: what `registerSection` accepts. */
export const SECTION_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/**
 * Throws a PluginError naming the plugin and the section unless `sections` is a plain object whose
 * keys are identifiers and whose values are zod schemas. Checked by shape (`safeParse`), not by
 * class, so a schema from another copy of zod still passes.
 */
function checkSections(name: string, sections: unknown): void {
  if (sections === null || typeof sections !== 'object' || Array.isArray(sections)) {
    throw new PluginError(
      name,
      'invalid',
      `plugin "${name}" has \`sections\` that is not an object of schemas; write sections: { key: z.object({...}).optional() }`,
    );
  }
  for (const key of Object.keys(sections)) {
    if (
      !SECTION_KEY_PATTERN.test(key) ||
      key === '__proto__' ||
      key === 'constructor' ||
      key === 'prototype'
    ) {
      throw new PluginError(
        name,
        'invalid',
        `plugin "${name}" has description section ${JSON.stringify(key)}, which is not a usable key; name it like "phbs" (a letter or _, then letters, digits, _ or -)`,
      );
    }
    const schema = (sections as Record<string, unknown>)[key];
    if (
      schema === null ||
      typeof schema !== 'object' ||
      typeof (schema as { safeParse?: unknown }).safeParse !== 'function'
    ) {
      throw new PluginError(
        name,
        'invalid',
        `plugin "${name}" has description section "${key}" that is ${describeValue(schema)}, not a zod schema; give a schema such as z.object({...}).optional()`,
      );
    }
  }
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`;
}

/**
 * The order to register `plugins` in: every plugin after the plugins it requires, and otherwise
 * in the order given (at each step the earliest plugin whose requirements are met goes next).
 * Throws a PluginError for a duplicate name, a requirement not in the list, or a cycle.
 */
export function orderPlugins(plugins: readonly Plugin[]): Plugin[] {
  if (!Array.isArray(plugins as unknown)) {
    throw new InvalidArgumentError('orderPlugins(plugins)', 'plugins must be an array of plugins');
  }
  const byName = new Map<string, Plugin>();
  for (const plugin of plugins) {
    validatePlugin(plugin);
    if (byName.has(plugin.name)) throw PluginError.duplicate(plugin.name);
    byName.set(plugin.name, plugin);
  }
  for (const plugin of plugins) {
    for (const required of plugin.requires ?? []) {
      if (!byName.has(required)) throw PluginError.missingRequirement(plugin.name, required);
    }
  }

  const placed = new Set<string>();
  const ordered: Plugin[] = [];
  const pending = [...plugins];
  while (pending.length > 0) {
    const index = pending.findIndex((p) => (p.requires ?? []).every((r) => placed.has(r)));
    if (index < 0) throw PluginError.cycle(findCycle(pending, byName));
    const [next] = pending.splice(index, 1);
    placed.add(next!.name);
    ordered.push(next!);
  }
  return ordered;
}

/**
 * A cycle among `stuck`, none of which can be placed. Every stuck plugin has an unplaced
 * requirement, so walking unplaced requirements from any of them must revisit a plugin.
 */
function findCycle(stuck: readonly Plugin[], byName: ReadonlyMap<string, Plugin>): string[] {
  const stuckNames = new Set(stuck.map((p) => p.name));
  const path: string[] = [];
  let current = stuck[0]!;
  while (!path.includes(current.name)) {
    path.push(current.name);
    const nextName = (current.requires ?? []).find((r) => stuckNames.has(r))!;
    current = byName.get(nextName)!;
  }
  return [...path.slice(path.indexOf(current.name)), current.name];
}
