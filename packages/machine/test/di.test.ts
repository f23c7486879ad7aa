import { describe, expect, it } from 'vitest';
import {
  assertAllParametersInjected,
  createMachineContainer,
  inject,
  injectable,
  injectableClasses,
  provide,
  resolve,
  token,
} from '../src/di.js';
import { DdwError } from '../src/errors.js';

const Greeting = token<string>('di-test', 'Greeting');
const Counter = token<{ count: number }>('di-test', 'Counter');
const Greeter = token<GreeterImpl>('di-test', 'Greeter');

@injectable()
class GreeterImpl {
  constructor(
    @inject(Greeting) readonly greeting: string,
    @inject(Counter) readonly counter: { count: number },
  ) {
    counter.count++;
  }
}

describe('token', () => {
  it('is the global symbol @ddw/<pkg>:<name>, so duplicate package copies agree', () => {
    const t = token<number>('spapr-iommu', 'Tables');
    expect(typeof t).toBe('symbol');
    expect(t).toBe(Symbol.for('@ddw/spapr-iommu:Tables'));
    expect(token('spapr-iommu', 'Tables')).toBe(t);
  });

  it('refuses an empty package or name', () => {
    expect(() => token('', 'X')).toThrow(DdwError);
    expect(() => token('pkg', '  ')).toThrow(/token name is empty/);
  });
});

describe('containers', () => {
  it('gives each machine its own child container and leaves the root alone', () => {
    const a = createMachineContainer();
    const b = createMachineContainer();
    provide(a, Greeting, { useValue: 'hello' });
    expect(resolve(a, Greeting)).toBe('hello');
    expect(b.isRegistered(Greeting, true)).toBe(false);
    expect(() => resolve(b, Greeting)).toThrow(/nothing is registered for @ddw\/di-test:Greeting/);
  });

  it('nests a container under a given parent', () => {
    const parent = createMachineContainer();
    provide(parent, Greeting, { useValue: 'from parent' });
    const child = createMachineContainer(parent);
    expect(resolve(child, Greeting)).toBe('from parent');
  });

  it('provide with useClass builds one instance per machine, injecting by token', () => {
    const build = () => {
      const c = createMachineContainer();
      const counter = { count: 0 };
      provide(c, Greeting, { useValue: 'hi' });
      provide(c, Counter, { useValue: counter });
      provide(c, Greeter, { useClass: GreeterImpl });
      return { c, counter };
    };
    const first = build();
    const greeter = resolve(first.c, Greeter);
    expect(greeter).toBeInstanceOf(GreeterImpl);
    expect(greeter.greeting).toBe('hi');
    expect(resolve(first.c, Greeter)).toBe(greeter);
    expect(first.counter.count).toBe(1);
    const second = build();
    expect(resolve(second.c, Greeter)).not.toBe(greeter);
  });
});

describe('assertAllParametersInjected', () => {
  it('accepts a class whose every parameter has @inject', () => {
    expect(() => assertAllParametersInjected(GreeterImpl)).not.toThrow();
    expect(injectableClasses()).toContain(GreeterImpl);
  });

  it('names the class and the parameter that lacks @inject', () => {
    @injectable()
    class HalfInjected {
      constructor(
        @inject(Greeting) readonly greeting: string,
        readonly forgotten: number,
      ) {}
    }
    expect(() => assertAllParametersInjected(HalfInjected)).toThrow(
      /HalfInjected: constructor parameter 1 has no @inject\(token\)/,
    );
    // provide checks before registering, so the mistake cannot reach a resolve.
    expect(() =>
      provide(createMachineContainer(), token('di-test', 'Half'), { useClass: HalfInjected }),
    ).toThrow(DdwError);
  });
});
