// A TypeDoc plugin (loaded by typedoc.json's `plugin`) that names each entry point's module after its
// package: TypeDoc would call `packages/memory/src/index.ts` "memory/src"; the page says `@ddw/memory`.
// Nothing in the sources changes (a `@module` tag in each index.ts would do the same).
import { Converter, ReflectionKind } from 'typedoc';

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_CREATE_DECLARATION, (_context, reflection) => {
    const match = /^(?:packages\/)?([a-z0-9-]+)\/src$/.exec(reflection.name);
    if (reflection.kindOf(ReflectionKind.Module) && match) reflection.name = `@ddw/${match[1]}`;
  });
}
