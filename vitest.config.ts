import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Inside tests every @ddw/* import resolves to the package's TypeScript source, so no build is needed.
const packagesDir = fileURLToPath(new URL('./packages/', import.meta.url));
const packageNames = readdirSync(packagesDir, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name);
const alias = Object.fromEntries(
  packageNames.map((name) => [`@ddw/${name}`, `${packagesDir}${name}/src/index.ts`]),
);

export default defineConfig({
  resolve: { alias },
  test: {
    projects: [
      ...packageNames.map((name) => ({
        resolve: { alias },
        test: { name, root: `${packagesDir}${name}`, include: ['test/**/*.test.ts'] },
      })),
      {
        resolve: { alias },
        test: { name: 'cross-package', include: ['test/**/*.test.ts'], testTimeout: 120_000 },
      },
    ],
  },
});
