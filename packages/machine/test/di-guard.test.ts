import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// The package's whole public surface; importing it runs every class decorator.
import '../src/index.js';
import {
  assertAllParametersInjected,
  type Constructor,
  inject,
  injectable,
  injectableClasses,
  token,
} from '../src/di.js';

describe('DI guard', () => {
  it('finds the injectable classes', () => {
    const names = injectableClasses().map((cls) => cls.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'AddressSpaceList',
        'DeviceTree',
        'MachineEventBus',
        'HypercallRegistry',
        'DeviceRegistry',
        'RtasRegistry',
        'TraceBus',
        'GuestPort',
      ]),
    );
  });

  it.each(injectableClasses().map((cls) => [cls.name, cls] as [string, Constructor]))(
    '%s injects every constructor parameter by token',
    (_name, cls) => {
      expect(() => assertAllParametersInjected(cls)).not.toThrow();
    },
  );

  it('catches a parameter without @inject, whatever its position', () => {
    const Dep = token<number>('guard-test', 'Dep');
    @injectable()
    class MissingFirst {
      constructor(
        readonly a: number,
        @inject(Dep) readonly b: number,
      ) {}
    }
    @injectable()
    class MissingLast {
      constructor(
        @inject(Dep) readonly a: number,
        readonly b: number,
      ) {}
    }
    @injectable()
    class NoneInjected {
      constructor(readonly a: number) {}
    }
    expect(() => assertAllParametersInjected(MissingFirst)).toThrow(/MissingFirst: constructor parameter 0/);
    expect(() => assertAllParametersInjected(MissingLast)).toThrow(/MissingLast: constructor parameter 1/);
    expect(() => assertAllParametersInjected(NoneInjected)).toThrow(/NoneInjected: constructor parameter 0/);
  });
});

describe('tsyringe stays behind di.ts', () => {
  const srcDir = new URL('../src/', import.meta.url);
  const sources = readdirSync(srcDir, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts'))
    .map((file) => ({ file, text: readFileSync(new URL(file, srcDir), 'utf8') }));

  it('reads the kernel sources', () => {
    expect(sources.map((s) => s.file)).toEqual(expect.arrayContaining(['di.ts', 'trace/bus.ts', 'hcall.ts']));
  });

  it('imports tsyringe at run time only in di.ts (type-only imports are fine)', () => {
    const offenders = sources
      .filter(({ file, text }) => file !== 'di.ts' && /^import (?!type )[^;]*from 'tsyringe'/m.test(text))
      .map((s) => s.file);
    expect(offenders).toEqual([]);
  });

  it('never uses the decorators that bind the global container', () => {
    const globalBinding = /@(singleton|registry|autoInjectable)\(|@injectable\(\s*\{/;
    expect(sources.filter(({ text }) => globalBinding.test(text)).map((s) => s.file)).toEqual([]);
  });
});
