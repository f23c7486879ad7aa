// tsyringe reads decorator metadata through the Reflect API, so the polyfill must load before it.
import 'reflect-metadata';
import {
  type DependencyContainer,
  inject,
  instanceCachingFactory,
  Lifecycle,
  container as rootContainer,
  injectable as tsyringeInjectable,
} from 'tsyringe';
import { DdwError } from './errors.js';

/**
 * The only module that touches tsyringe. Everything else goes through these helpers, so the rules
 * below hold everywhere: one child container per machine, nothing in the global container, and
 * every constructor parameter injected by an explicit token.
 */

export type { DependencyContainer };
export { inject };

/** A DI key carrying the type it resolves to. The brand is phantom: at run time it is a symbol. */
export type Token<T> = symbol & { __type?: T };

/** Any class; constructor arguments are whatever the container injects. */
export type Constructor<T = unknown> = new (...args: never[]) => T;

/**
 * A token for `@ddw/<pkg>`: `Symbol.for('@ddw/<pkg>:<name>')`. The global symbol registry makes
 * two copies of a package (a duplicated install) agree on the same key.
 */
export function token<T>(pkg: string, name: string): Token<T> {
  if (typeof pkg !== 'string' || pkg.trim() === '') {
    throw new DdwError(
      'DI',
      `token(): the package name is empty; pass the package, e.g. token('spapr-iommu', 'Tables')`,
    );
  }
  if (typeof name !== 'string' || name.trim() === '') {
    throw new DdwError(
      'DI',
      `token('${pkg}', ...): the token name is empty; pass a name, e.g. token('${pkg}', 'Tables')`,
    );
  }
  return Symbol.for(`@ddw/${pkg}:${name}`) as Token<T>;
}

const injectables: Constructor[] = [];

/**
 * Marks a class as constructible by the container. It never takes tsyringe's `token` option, which
 * would register the class in the global container. Every class it marks is remembered so a
 * guard test can check that all their parameters carry `@inject`.
 */
export function injectable(): <C extends Constructor>(target: C) => void {
  return (target) => {
    tsyringeInjectable()(target as unknown as new (...args: unknown[]) => unknown);
    if (!injectables.includes(target)) injectables.push(target);
  };
}

/** Every class decorated with `injectable()` in the modules loaded so far. */
export function injectableClasses(): readonly Constructor[] {
  return injectables;
}

/**
 * A fresh container for one machine: a child of `parent` if given, else of tsyringe's root. The
 * root itself is never written to, so machines in one process cannot see each other.
 */
export function createMachineContainer(parent?: DependencyContainer): DependencyContainer {
  return (parent ?? rootContainer).createChildContainer();
}

// tsyringe's parameter decorator stores tokens under this metadata key, as {index: token}.
const INJECTION_TOKENS_KEY = 'injectionTokens';

/**
 * Throws unless every constructor parameter of `cls` has an `@inject(token)`. esbuild (vitest,
 * tsup) emits no `design:paramtypes`, so tsyringe would silently pass `undefined` for an
 * undecorated parameter. Parameters with default values do not count in `cls.length` and are
 * not checked.
 */
export function assertAllParametersInjected(cls: Constructor): void {
  const tokens: Record<number, unknown> = Reflect.getOwnMetadata(INJECTION_TOKENS_KEY, cls) ?? {};
  for (let index = 0; index < cls.length; index++) {
    if (tokens[index] === undefined) {
      throw new DdwError(
        'DI',
        `${cls.name || 'an anonymous class'}: constructor parameter ${index} has no @inject(token); ` +
          'decorator metadata is not emitted, so the container would pass undefined. Add @inject(SomeToken)',
      );
    }
  }
}

/** Looks a service up by token: what a factory gets to build its service from others. */
export type ServiceGetter = <T>(key: Token<T>) => T;

/**
 * How a token's service is made, once per machine: a class the container constructs (every
 * constructor parameter `@inject(TOKEN)`), a factory given the other services, or a value that
 * exists already.
 */
export type Provider<T> =
  | { readonly useClass: Constructor<T> }
  | { readonly useFactory: (get: ServiceGetter) => T }
  | { readonly useValue: T };

/**
 * Registers `key`'s service in a machine's container. A later registration of the same token
 * replaces the earlier one: that is how a plugin swaps a service (its own host IOMMU backend, its
 * own guest model) for the one another plugin provides. Classes and factories are built on first
 * resolve and kept (tsyringe scopes a Singleton to the container it is registered in).
 */
export function provide<T>(
  machineContainer: DependencyContainer,
  key: Token<T>,
  provider: Provider<T>,
): void {
  if (provider === null || typeof provider !== 'object') {
    throw new DdwError(
      'DI',
      `the provider for ${String(key.description)} is ${provider === null ? 'null' : typeof provider}; pass { useClass }, { useFactory } or { useValue }`,
    );
  }
  if ('useClass' in provider) {
    assertAllParametersInjected(provider.useClass);
    machineContainer.register<T>(
      key,
      { useClass: provider.useClass as unknown as new (...args: unknown[]) => T },
      { lifecycle: Lifecycle.Singleton },
    );
    constructedByContainer.add(provider.useClass);
  } else if ('useFactory' in provider) {
    const factory = provider.useFactory;
    machineContainer.register<T>(key, {
      useFactory: instanceCachingFactory((c) => factory((k) => resolve(c, k))),
    });
  } else if ('useValue' in provider) {
    machineContainer.register<T>(key, { useValue: provider.useValue });
  } else {
    throw new DdwError(
      'DI',
      `the provider for ${String(key.description)} has none of useClass, useFactory, useValue`,
    );
  }
}

const constructedByContainer = new Set<Constructor>();

/** Classes some machine container was told to construct (`provide(..., { useClass })`), for guard tests. */
export function classesProvidedToContainers(): ReadonlySet<Constructor> {
  return constructedByContainer;
}

/** Resolves `key`, with the type the token carries. */
export function resolve<T>(machineContainer: DependencyContainer, key: Token<T>): T {
  if (!machineContainer.isRegistered(key, true)) {
    throw new DdwError(
      'DI',
      `nothing is registered for ${String(key.description)} in this machine; the plugin providing it is missing`,
    );
  }
  return machineContainer.resolve<T>(key);
}
