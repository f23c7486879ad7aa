// tsyringe reads decorator metadata through the Reflect API, so the polyfill must load before it.
import 'reflect-metadata';
import {
  type DependencyContainer,
  inject,
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

/** Puts an existing value in a machine's container under `key`. */
export function provideValue<T>(machineContainer: DependencyContainer, key: Token<T>, value: T): void {
  machineContainer.register<T>(key, { useValue: value });
}

/**
 * Makes `key` resolve to one instance of `cls` per machine container (built on first resolve).
 * tsyringe's Singleton lifecycle is scoped to the container it is registered in, so registering
 * in the machine's child container keeps the instance per machine.
 */
export function provideClass<T>(
  machineContainer: DependencyContainer,
  key: Token<T>,
  cls: Constructor<T>,
): void {
  assertAllParametersInjected(cls);
  machineContainer.register<T>(
    key,
    { useClass: cls as unknown as new (...args: unknown[]) => T },
    { lifecycle: Lifecycle.Singleton },
  );
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
