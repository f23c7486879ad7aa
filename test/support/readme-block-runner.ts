// Runs README code blocks (files written by test/readme-blocks.test.ts) one after another in this one
// process, so the @ddw/* sources are loaded once. Each block is a module: a thrown error or a rejected
// top-level await fails that block only. The last line of stdout is the results as JSON.
import { pathToFileURL } from 'node:url';

const RESULTS_PREFIX = 'README-BLOCK-RESULTS ';

const results: Record<string, { ok: boolean; error?: string }> = {};
for (const file of process.argv.slice(2)) {
  try {
    await import(pathToFileURL(file).href);
    results[file] = { ok: true };
  } catch (error) {
    results[file] = {
      ok: false,
      error: error instanceof Error ? (error.stack ?? error.message) : String(error),
    };
  }
}
process.stdout.write(`\n${RESULTS_PREFIX}${JSON.stringify(results)}\n`);
