#!/usr/bin/env node
/**
 * Runs the tests under each supported Node major (20, 22, 24) and prints one summary line per
 * version. The Node binaries come from the registry's `node` package (`npx -y -p node@22 node ...`),
 * so nothing needs installing; the packages must be built first (`npm run build`), since the CLI
 * tests run the built `ddw`.
 *
 *   node scripts/node-matrix.mjs [--versions 22,24] [--full] [-- VITEST_ARGS...]
 *
 * By default it runs the tests of the built CLI and of the packed packages (test/cli-e2e.test.ts,
 * test/cli-surface.test.ts, test/packed-install.test.ts); `--full` runs the whole suite
 * (`vitest run`); anything after `--` is passed to vitest instead. The Node running this script is
 * used as is when its major is in the list. Exits 1 if any version failed.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const argv = process.argv.slice(2);
const dashdash = argv.indexOf('--');
const own = dashdash < 0 ? argv : argv.slice(0, dashdash);
const passed = dashdash < 0 ? [] : argv.slice(dashdash + 1);
const versionsArg =
  own.find((_, i) => own[i - 1] === '--versions') ?? own.find((a) => a.startsWith('--versions='))?.slice(11);
const versions = (versionsArg ?? '20,22,24')
  .split(',')
  .map((v) => v.trim())
  .filter(Boolean);
const DEFAULT_TESTS = ['test/cli-e2e.test.ts', 'test/cli-surface.test.ts', 'test/packed-install.test.ts'];
const testArgs = passed.length > 0 ? passed : own.includes('--full') ? [] : DEFAULT_TESTS;

const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const current = process.versions.node.split('.')[0];

function exec(command, args, options = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...options });
    child.on('error', (error) => resolve({ code: null, error }));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1) }));
  });
}

const results = [];
for (const version of versions) {
  const out = mkdtempSync(join(tmpdir(), `ddw-node-${version}-`));
  const report = join(out, 'vitest.json');
  const runner =
    version === current
      ? [process.execPath, []]
      : ['npx', ['-y', '--no-audit', '--no-fund', '-p', `node@${version}`, 'node']];
  console.log(`\n=== Node ${version}: vitest run ${testArgs.join(' ')}`);
  const started = performance.now();
  const { code, error } = await exec(runner[0], [
    ...runner[1],
    '-e',
    'console.log("node " + process.version)',
  ]);
  let line;
  if (code !== 0) {
    line = `Node ${version}: could not start (${error?.message ?? `exit ${code}`}); is the registry reachable?`;
    results.push({ version, ok: false, line });
    rmSync(out, { recursive: true, force: true });
    continue;
  }
  const run = await exec(runner[0], [
    ...runner[1],
    vitest,
    'run',
    ...testArgs,
    '--reporter=default',
    '--reporter=json',
    `--outputFile.json=${report}`,
  ]);
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  try {
    const r = JSON.parse(readFileSync(report, 'utf8'));
    const failedNames = r.testResults
      .flatMap((f) =>
        f.assertionResults
          .filter((a) => a.status === 'failed')
          .map((a) => `${f.name.replace(root, '')}: ${a.fullName}`),
      )
      .slice(0, 10);
    line = `Node ${version}: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped (${seconds}s)${
      failedNames.length ? `\n    ${failedNames.join('\n    ')}` : ''
    }`;
    results.push({ version, ok: run.code === 0 && r.numFailedTests === 0 && r.numTotalTests > 0, line });
  } catch {
    line = `Node ${version}: vitest exited ${run.code} without a report (${seconds}s)`;
    results.push({ version, ok: false, line });
  }
  rmSync(out, { recursive: true, force: true });
}

console.log('\n=== node matrix');
for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.line}`);
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
