#!/usr/bin/env node
/**
 * Checks every published package (packages/*, except private ones) as npm users get it: each is
 * packed once (`npm pack`, what `npm publish` would upload), then
 *   - publint lints the tarball (errors, warnings and suggestions all count),
 *   - @arethetypeswrong/cli (attw) resolves its types as node10, node16 (CJS and ESM) and bundler,
 *   - the project's own rules: a LICENSE in the tarball, repository (with directory), bugs,
 *     homepage, sideEffects declared, runtime dependencies as ranges (no exact pins), and the
 *     dependencies whose instances cross package boundaries (zod, tsyringe, reflect-metadata,
 *     eventemitter3) as peerDependencies, never as dependencies.
 * Prints one line per package and check, the problems under it, and exits 1 if any check failed.
 * The packages must have been built (`npm run build`): this packs their dist/ directories.
 *
 *   node scripts/check-packages.mjs [--verbose] [PACKAGE_DIR_NAME...]
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const verbose = args.includes('--verbose');
const only = args.filter((a) => !a.startsWith('--'));

/** Shared by instance across packages: a consumer must get one copy, so they are peers. */
const PEER_ONLY = ['zod', 'tsyringe', 'reflect-metadata', 'eventemitter3'];

const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
  .filter((e) => e.isDirectory() && existsSync(join(root, 'packages', e.name, 'package.json')))
  .map((e) => ({ dir: join(root, 'packages', e.name), short: e.name }))
  .map((p) => ({ ...p, manifest: JSON.parse(readFileSync(join(p.dir, 'package.json'), 'utf8')) }))
  .filter((p) => !p.manifest.private && (only.length === 0 || only.includes(p.short)));

if (packages.length === 0) {
  console.error(`check-packages: no published package matches ${only.join(', ')}`);
  process.exit(2);
}
const unbuilt = packages.filter((p) => !existsSync(join(p.dir, 'dist')));
if (unbuilt.length > 0) {
  console.error(
    `check-packages: ${unbuilt.map((p) => relative(root, p.dir)).join(', ')} not built (no dist/); run \`npm run build\` first`,
  );
  process.exit(2);
}

const bin = (name) => join(root, 'node_modules', '.bin', name);
const scratch = mkdtempSync(join(tmpdir(), 'ddw-check-packages-'));
const env = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false' };

try {
  // One npm process packs them all (scripts ignored: dist/ is what was built).
  const { stdout } = await exec(
    'npm',
    [
      'pack',
      '--json',
      '--ignore-scripts',
      '--pack-destination',
      scratch,
      ...packages.flatMap((p) => ['--workspace', relative(root, p.dir)]),
    ],
    { cwd: root, env, maxBuffer: 64 * 1024 * 1024 },
  );
  const packed = JSON.parse(stdout.slice(stdout.search(/^\[/m)));
  const byName = new Map(packed.map((r) => [r.name, r]));

  const { publint } = await import('publint');
  const { formatMessage } = await import('publint/utils');

  const results = await Promise.all(
    packages.map(async (p) => {
      const pack = byName.get(p.manifest.name);
      const tarball = join(scratch, pack.filename);
      const [lint, types] = await Promise.all([runPublint(tarball), runAttw(tarball)]);
      return { p, checks: { publint: lint, attw: types, policy: policy(p.manifest, pack) } };
    }),
  );

  let failed = 0;
  console.log(`check-packages: ${packages.length} packages (publint, attw --profile strict, policy)`);
  for (const { p, checks } of results) {
    const bad = Object.entries(checks).filter(([, problems]) => problems.length > 0);
    failed += bad.length > 0 ? 1 : 0;
    const status = Object.entries(checks)
      .map(([name, problems]) => `${name} ${problems.length === 0 ? 'ok' : `${problems.length} FAILED`}`)
      .join(', ');
    console.log(`${bad.length === 0 ? 'ok  ' : 'FAIL'} ${p.manifest.name.padEnd(18)} ${status}`);
    for (const [name, problems] of bad)
      for (const problem of problems) console.log(`       ${name}: ${problem}`);
  }
  console.log(
    failed === 0
      ? `check-packages: all ${packages.length} packages clean`
      : `check-packages: ${failed} of ${packages.length} packages have problems (above)`,
  );
  process.exitCode = failed === 0 ? 0 : 1;

  async function runPublint(tarball) {
    const bytes = readFileSync(tarball);
    const { messages, pkg } = await publint({
      pack: { tarball: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) },
      level: 'suggestion',
      strict: true,
    });
    return messages.map((m) => `${m.type}: ${formatMessage(m, pkg, { color: false }) ?? m.code}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

/** attw on the tarball; every problem it finds, one line each. */
async function runAttw(tarball) {
  let out;
  try {
    out = (
      await exec(bin('attw'), [tarball, '--format', 'json', '--profile', 'strict'], {
        env,
        maxBuffer: 64 * 1024 * 1024,
      })
    ).stdout;
  } catch (error) {
    // attw exits 1 when it finds problems; its JSON is still on stdout.
    out = error.stdout ?? '';
    if (!out.trim().startsWith('{')) return [`attw failed to run: ${error.message.split('\n')[0]}`];
  }
  const result = JSON.parse(out);
  const problems = result.analysis?.problems ?? result.problems ?? [];
  if (verbose) console.log(JSON.stringify(problems, null, 2));
  return problems.map((pr) => {
    const where = [pr.entrypoint, pr.resolutionKind].filter(Boolean).join(' ');
    return `${pr.kind}${where ? ` (${where})` : ''}${pr.fileName ? ` in ${pr.fileName}` : ''}`;
  });
}

/** The project's own rules for a published package.json and its tarball's file list. */
function policy(m, pack) {
  const problems = [];
  const files = new Set(pack.files.map((f) => f.path));
  if (m.license !== 'MIT') problems.push(`license is ${JSON.stringify(m.license)}, expected "MIT"`);
  if (!files.has('LICENSE')) problems.push('the tarball has no LICENSE file (add it to "files")');
  if (!files.has('README.md')) problems.push('the tarball has no README.md');
  if (typeof m.repository !== 'object' || !m.repository.url || !m.repository.directory)
    problems.push('repository must be an object with url and directory');
  if (!m.bugs) problems.push('no bugs field');
  if (!m.homepage) problems.push('no homepage field');
  if (m.sideEffects === undefined) problems.push('sideEffects is not declared');
  if (Array.isArray(m.sideEffects)) {
    for (const f of m.sideEffects)
      if (!f.includes('*') && !files.has(f.replace(/^\.\//, '')))
        problems.push(`sideEffects names ${f}, which the tarball lacks`);
  }
  if (!m.engines?.node) problems.push('engines.node is not declared');
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
    for (const [name, range] of Object.entries(m[field] ?? {})) {
      if (/^\d/.test(range)) problems.push(`${field}.${name} is pinned to ${range}; use a range (^${range})`);
    }
  }
  for (const name of PEER_ONLY) {
    if (m.dependencies?.[name])
      problems.push(`${name} is a dependency: make it a peerDependency (one copy shared across packages)`);
  }
  return problems;
}
