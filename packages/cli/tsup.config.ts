import { defineConfig } from 'tsup';
import { libraryBuild } from '../../tsup.base.js';

// Both builds write dist/ at once, so neither cleans it: the build script empties it first.
export default defineConfig([
  { ...libraryBuild, clean: false },
  // The `ddw` executable: ESM only, no declarations.
  {
    ...libraryBuild,
    entry: ['src/bin.ts'],
    format: ['esm'],
    dts: false,
    clean: false,
    banner: { js: '#!/usr/bin/env node' },
  },
]);
