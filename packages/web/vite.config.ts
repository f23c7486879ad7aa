import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// A static site: relative asset paths, so dist/ works from any directory of any file server.
export default defineConfig({
  base: './',
  resolve: {
    alias: {
      // The browser-safe entry of @ddw/cli (its package entry is the Node command).
      '@ddw/cli/browser': fileURLToPath(new URL('../cli/src/browser.ts', import.meta.url)),
    },
  },
  worker: { format: 'es' },
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 2048 },
});
