/**
 * The packages as npm users get them: every published workspace package under packages/ and the third-party
 * plugin example are packed (`npm pack`), installed together into a scratch project in a temporary
 * directory outside the workspace, and used from there: the custom-machine example (through tsx),
 * the plugin from its tarball, the `ddw` executable, `import` and `require` of every package, and
 * their type declarations (tsc). Nothing there runs from the packages' sources.
 *
 * It packs the built dist/ directories: CI runs `npm run build` before `npm test` (.ci/run); run it
 * yourself before this test otherwise. The plugin's tarball is built by its own `prepack` (tsc).
 * DDW_KEEP_SCRATCH=1 keeps the scratch directory (its path is in os.tmpdir(), `ddw-packed-*`).
 *
 * No network: the scratch install must not depend on a registry being reachable. Besides the
 * tarballs above, the third-party packages the tarballs need (tsyringe, zod, commander, ...; their
 * whole dependency closure) and the tools the scratch project uses (tsx, typescript, @types/node)
 * are packed from the repository's own node_modules (what `npm ci` installed from the lockfile, so
 * the same versions), and everything is installed in one `npm install --offline` of local tarballs
 * with an empty, private npm cache. `--offline` makes npm fail rather than fetch anything, so a
 * dependency missing from the closure shows up here, and the result does not depend on the
 * machine's network or on what its npm cache holds.
 */
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = realpathSync(fileURLToPath(new URL('..', import.meta.url)));
const packagesDir = join(root, 'packages');
const pluginDir = join(root, 'examples', 'third-party-plugin');
const customMachineDir = join(root, 'examples', 'custom-machine');
const replayFixture = join(root, 'test', 'fixtures', 'qemu-7.2', 'v2-64k.trace');
/** Tools the scratch project installs besides the packages' own dependencies. */
const TOOLS = ['tsx', 'typescript', '@types/node'];
/** Dependencies a package may inline in its dist/ (none: each must be shared through node_modules). */
const SHARED_RUNTIME_DEPENDENCIES = [
  'tsyringe',
  'reflect-metadata',
  'eventemitter3',
  'zod',
  'commander',
  'cli-progress',
];
/** Dependencies whose instances cross package boundaries: peers, of which a project holds one copy. */
const SHARED_PEERS = ['zod', 'tsyringe', 'reflect-metadata', 'eventemitter3'];
/**
 * Known packaging problems this test reports without failing, each `package: dependency`. An entry
 * that is no longer a problem fails the test, so the list only shrinks.
 */
const KNOWN_INLINED: string[] = [];

interface Manifest {
  name: string;
  private?: boolean;
  version: string;
  main?: string;
  module?: string;
  types?: string;
  bin?: string | Record<string, string>;
  exports?: unknown;
  files?: string[];
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

interface PackResult {
  name: string;
  version: string;
  filename: string;
  files: { path: string }[];
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));

/** The environment child processes get: no npm_* variables of an enclosing `npm test`, no repo bins. */
function childEnv(cache: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(key) || key === 'INIT_CWD' || key === 'NODE_OPTIONS' || key.startsWith('VITEST'))
      continue;
    env[key] = value;
  }
  const path = (process.env.PATH ?? '').split(delimiter).filter((p) => p !== '' && !isInside(p, root));
  return {
    ...env,
    PATH: path.join(delimiter),
    npm_config_cache: cache,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
  };
}

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && rel !== path);
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((done) => {
    execFile(command, args, { cwd, env, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const status = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      done({ status, stdout, stderr: error && status === null ? `${stderr}\n${error.message}` : stderr });
    });
  });
}

/** Runs and insists on exit code 0, with the command's output in the error otherwise. */
async function ok(
  command: string,
  args: readonly string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<Run> {
  const r = await run(command, args, cwd, env);
  if (r.status !== 0) {
    throw new Error(
      `\`${command} ${args.join(' ')}\` in ${cwd} exited with ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`,
    );
  }
  return r;
}

/** `npm pack --json` output; lifecycle banners go to stderr, but be lenient about stray lines. */
function packJson(stdout: string): PackResult[] {
  const start = stdout.search(/^\[/m);
  if (start < 0) throw new Error(`npm pack printed no JSON:\n${stdout}`);
  return JSON.parse(stdout.slice(start));
}

/** Where node would find `name` from `fromDir` (its real path), or undefined. */
function locate(name: string, fromDir: string): string | undefined {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(dir) === dir) return undefined;
  }
}

/**
 * The installed directories of `roots` and of everything they depend on, one per package name,
 * found as node would find them from where each is required (so nested versions are honoured).
 */
function dependencyClosure(roots: readonly { name: string; from: string }[]): Map<string, string> {
  const byName = new Map<string, string>();
  const visit = (name: string, from: string, required: boolean, why: string) => {
    const dir = locate(name, from);
    if (!dir) {
      if (required)
        throw new Error(
          `${name} (needed by ${why}) is not installed in ${root}/node_modules: run \`npm ci\``,
        );
      return;
    }
    const known = byName.get(name);
    if (known !== undefined) {
      if (known !== dir && readManifest(known).version !== readManifest(dir).version) {
        throw new Error(
          `two versions of ${name} are needed (${readManifest(known).version} and ${readManifest(dir).version}, for ${why}); ` +
            'the offline scratch install holds one per name',
        );
      }
      return;
    }
    byName.set(name, dir);
    const m = readManifest(dir);
    for (const dep of Object.keys(m.dependencies ?? {}))
      visit(dep, dir, !(dep in (m.optionalDependencies ?? {})), name);
    for (const dep of Object.keys(m.optionalDependencies ?? {})) visit(dep, dir, false, name);
    for (const dep of Object.keys(m.peerDependencies ?? {})) {
      visit(dep, dir, !m.peerDependenciesMeta?.[dep]?.optional, name);
    }
  };
  for (const { name, from } of roots) visit(name, from, true, 'the scratch project');
  return byName;
}

/** Every file a package.json makes part of its interface: main, module, types, exports targets, bins. */
function entryFiles(m: Manifest): string[] {
  const files = new Set<string>();
  const add = (p: unknown) => {
    if (typeof p === 'string' && p.startsWith('./') && !p.includes('*')) files.add(p.slice(2));
    else if (typeof p === 'string' && !p.startsWith('.') && !p.includes('*')) files.add(p);
  };
  add(m.main);
  add(m.module);
  add(m.types);
  if (typeof m.bin === 'string') add(m.bin);
  else for (const b of Object.values(m.bin ?? {})) add(b);
  const walk = (node: unknown) => {
    if (typeof node === 'string') add(node);
    else if (node && typeof node === 'object') for (const v of Object.values(node)) walk(v);
  };
  walk(m.exports);
  return [...files].sort();
}

/** Bare module specifiers a JS file imports or requires (package names only). */
function importedPackages(code: string): Set<string> {
  const names = new Set<string>();
  for (const [, spec] of code.matchAll(
    /(?:from\s*|import\s*\(?\s*|require\s*\(\s*)["']([^"'./][^"']*)["']/g,
  )) {
    if (spec!.startsWith('node:')) continue;
    names.add(spec!.startsWith('@') ? spec!.split('/').slice(0, 2).join('/') : spec!.split('/')[0]!);
  }
  return names;
}

const workspacePackages = readdirSync(packagesDir, { withFileTypes: true })
  .filter((e) => e.isDirectory() && existsSync(join(packagesDir, e.name, 'package.json')))
  .map((e) => ({ dir: join(packagesDir, e.name), manifest: readManifest(join(packagesDir, e.name)) }))
  // Private workspaces (packages/web, the browser page) are not npm packages.
  .filter((p) => !p.manifest.private);
const ddwNames = workspacePackages.map((p) => p.manifest.name);
const plugin = readManifest(pluginDir);

describe.concurrent('the packed packages, installed in a project outside the workspace', () => {
  let scratch = '';
  let env: NodeJS.ProcessEnv = {};
  const packs = new Map<string, PackResult>();
  const timings: string[] = [];

  beforeAll(async () => {
    // The packages must have been built: this test packs what `npm run build` left in dist/.
    const unbuilt = workspacePackages.filter((p) => !existsSync(join(p.dir, 'dist')));
    if (unbuilt.length > 0) {
      throw new Error(
        `${unbuilt.map((p) => relative(root, p.dir)).join(', ')}: no dist/. This test packs the built packages: ` +
          'run `npm run build` first (CI runs it before `npm test`)',
      );
    }
    for (const p of workspacePackages) {
      const newest = (dir: string): number =>
        readdirSync(dir, { withFileTypes: true }).reduce(
          (t, e) =>
            Math.max(t, e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs),
          0,
        );
      if (newest(join(p.dir, 'src')) > newest(join(p.dir, 'dist'))) {
        console.warn(
          `packed-install: ${relative(root, p.dir)}/dist is older than its src/; \`npm run build\` to test the current code`,
        );
      }
    }

    scratch = mkdtempSync(join(realpathSync(tmpdir()), 'ddw-packed-'));
    if (isInside(scratch, root)) throw new Error(`the scratch directory ${scratch} is inside the workspace`);
    const tarballs = join(scratch, 'tarballs');
    const project = join(scratch, 'project');
    mkdirSync(tarballs);
    mkdirSync(project);
    env = childEnv(join(scratch, 'npm-cache'));

    // Everything is packed at once: the workspace packages (one npm, every packages/* directory),
    // the plugin (its prepack builds dist/ with tsc), and the third-party dependency closure.
    let t = performance.now();
    const closure = dependencyClosure([
      ...[
        ...workspacePackages.map((p) => ({ dir: p.dir, manifest: p.manifest })),
        { dir: pluginDir, manifest: plugin },
      ].flatMap(({ dir, manifest }) =>
        Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })
          .filter((name) => !ddwNames.includes(name))
          .map((name) => ({ name, from: dir })),
      ),
      ...TOOLS.map((name) => ({ name, from: root })),
    ]);
    const pack = (cwd: string, args: string[]) =>
      ok('npm', ['pack', '--json', '--pack-destination', tarballs, ...args], cwd, env).then((r) =>
        packJson(r.stdout),
      );
    const packed = await Promise.all([
      pack(
        root,
        workspacePackages.flatMap((p) => ['--workspace', relative(root, p.dir)]),
      ),
      pack(pluginDir, []),
      // Installed copies: their own build and install scripts already ran (or must not run again).
      pack(root, ['--ignore-scripts', ...closure.values()]),
    ]);
    for (const result of packed.flat()) packs.set(result.name, result);
    timings.push(`pack ${((performance.now() - t) / 1000).toFixed(1)}s (${packs.size} tarballs)`);

    // One install of local tarballs only, with no network. The package.json is written directly
    // (what `npm init -y` would do, one npm start-up less), as an ES module project: the example
    // uses top-level await.
    t = performance.now();
    writeFileSync(
      join(project, 'package.json'),
      `${JSON.stringify({ name: 'ddw-packed-install-check', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`,
    );
    await ok(
      'npm',
      [
        'install',
        '--offline',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        ...[...packs.values()].map((p) => join(tarballs, p.filename)),
      ],
      project,
      env,
    );
    timings.push(`install ${((performance.now() - t) / 1000).toFixed(1)}s`);

    // The custom-machine example, as it is in the repository (its imports are package names).
    mkdirSync(join(project, 'custom-machine'));
    for (const file of readdirSync(customMachineDir).filter((f) => f.endsWith('.ts'))) {
      copyFileSync(join(customMachineDir, file), join(project, 'custom-machine', file));
    }
    copyFileSync(replayFixture, join(project, 'v2-64k.trace'));
    writeScratchFiles(project);
  }, 300_000);

  afterAll(() => {
    if (timings.length > 0) console.log(`packed-install: ${timings.join(', ')}`);
    if (scratch !== '' && process.env.DDW_KEEP_SCRATCH === undefined)
      rmSync(scratch, { recursive: true, force: true });
  });

  const project = () => join(scratch, 'project');
  const bin = (name: string) => join(project(), 'node_modules', '.bin', name);

  it('ships every file each package.json points to (main, module, types, exports, bin)', () => {
    for (const { manifest } of [...workspacePackages, { manifest: plugin }]) {
      const result = packs.get(manifest.name);
      expect(result, `${manifest.name} was packed`).toBeDefined();
      const shipped = new Set(result!.files.map((f) => f.path));
      const missing = entryFiles(manifest).filter((f) => !shipped.has(f));
      expect(
        missing,
        `${manifest.name}: files its package.json names but its tarball lacks (run \`npm run build\`?)`,
      ).toEqual([]);
    }
  });

  it('keeps shared dependencies out of the bundles: each dist/ imports them instead of inlining a copy', () => {
    const inlined: string[] = [];
    for (const { dir, manifest } of workspacePackages) {
      const used = new Set<string>();
      const walk = (d: string) => {
        for (const e of readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(d, e.name));
          else if (e.name.endsWith('.ts'))
            for (const n of importedPackages(readFileSync(join(d, e.name), 'utf8'))) used.add(n);
        }
      };
      walk(join(dir, 'src'));
      const installed = join(project(), 'node_modules', ...manifest.name.split('/'));
      const dist = importedPackages(readFileSync(join(installed, 'dist', 'index.js'), 'utf8'));
      for (const name of used) {
        if (SHARED_RUNTIME_DEPENDENCIES.includes(name) && !dist.has(name))
          inlined.push(`${manifest.name}: ${name}`);
      }
    }
    expect(inlined.sort(), 'a package imports a dependency it does not declare, so tsup inlined it').toEqual(
      [...KNOWN_INLINED].sort(),
    );
  });

  it('installs one copy of each peer: zod, tsyringe, reflect-metadata and eventemitter3', async () => {
    expect(await peerCopies(project(), env)).toEqual(
      Object.fromEntries(
        SHARED_PEERS.map((name) => [name, [join(realpathSync(project()), 'node_modules', name)]]),
      ),
    );
  });

  it('runs the custom-machine example with tsx', async () => {
    const r = await ok(bin('tsx'), ['custom-machine/run.ts'], project(), env);
    expect(r.stdout).toContain('custom machine: all DMA verified');
    expect(r.stdout).toMatch(/^dma nic0 to-device \d+ bytes at bus 0x[0-9a-f]+: ok$/m);
  });

  it('uses the third-party plugin from its tarball, as compiled JavaScript', async () => {
    const r = await ok(process.execPath, ['plugin-check.mjs'], project(), env);
    expect(JSON.parse(r.stdout)).toEqual({
      put: '0',
      text: 'packed',
      lines: [
        'dma_tracer_realize tr0 buid=0x800000020000000 addr=0x1000',
        'dma_tracer_read tr0 iova=0x1000 len=0x6 res=0',
      ],
      counters: { reads: 1, writes: 0, bytesRead: 6, bytesWritten: 0, faults: 0 },
    });
  });

  it('runs the ddw executable: info mtree, and replay --check of a QEMU trace', async () => {
    const [mtree, replay] = await Promise.all([
      ok('npx', ['--offline', '--no', 'ddw', 'info', 'mtree', '-m', '1G'], project(), env),
      ok(
        'npx',
        [
          '--offline',
          '--no',
          'ddw',
          'replay',
          'v2-64k.trace',
          '--qemu-args',
          '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e',
          '--check',
        ],
        project(),
        env,
      ),
    ]);
    expect(mtree.stdout).toContain('(prio 0, ram): ppc_spapr.ram');
    expect(replay.stdout).toMatch(/^[1-9]\d* compared, 0 differ\n$/);
  });

  it('loads every package with import and with require, with the same exports', async () => {
    const [esm, cjs] = await Promise.all([
      ok(process.execPath, ['load.mjs', ...ddwNames], project(), env),
      ok(process.execPath, ['load.cjs', ...ddwNames], project(), env),
    ]);
    const imported: Record<string, string[]> = JSON.parse(esm.stdout);
    const required: Record<string, string[]> = JSON.parse(cjs.stdout);
    for (const name of ddwNames) {
      expect(imported[name]!.length, `${name} exports something`).toBeGreaterThan(0);
      expect(required[name], `${name}: require() gives what import gives`).toEqual(imported[name]);
    }
  });

  it('type-checks against the shipped declarations (moduleResolution node16 for ESM and CJS, and bundler)', async () => {
    await Promise.all([
      ok(bin('tsc'), ['-p', 'tsconfig.json'], project(), env),
      ok(bin('tsc'), ['-p', 'tsconfig.bundler.json'], project(), env),
    ]);
  });
});

/** Every installed copy of each shared peer in `project` (`npm ls NAME --all --parseable`), by name. */
async function peerCopies(project: string, env: NodeJS.ProcessEnv): Promise<Record<string, string[]>> {
  const projectPath = realpathSync(project);
  const listed = await Promise.all(
    SHARED_PEERS.map((name) => ok('npm', ['ls', name, '--all', '--parseable'], project, env)),
  );
  return Object.fromEntries(
    SHARED_PEERS.map((name, i) => [
      name,
      [
        ...new Set(
          listed[i]!.stdout.split('\n').filter(
            (line) => line.trim() !== '' && realpathSync(line) !== projectPath,
          ),
        ),
      ],
    ]),
  );
}

/** Compares two plain `x.y.z` versions (registries list release versions for a caret range). */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/).map(Number);
  const pb = b.split(/[.+-]/).map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

/** npm's way of saying the registry cannot be reached (as opposed to a bad range or package). */
const OFFLINE =
  /E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|NETUNREACH|HOSTUNREACH)|network|socket hang up|ENOTCACHED/i;

/**
 * The lowest versions a consumer may have. Every published package is installed, from its tarball,
 * into a fresh project that depends on the LOWEST version of every third-party dependency and peer
 * range the packages declare (looked up with `npm view NAME@RANGE version --json`), as a consumer
 * pinned to old versions would. It needs the registry: unreachable, the suite is skipped with a
 * message (the lockfile suite above stays offline). There: one copy of each shared peer, at the
 * lowest version; the README's plugin example (packages/machine/README.md, "Writing a plugin",
 * a zod description section) type-checks and runs; the `ddw` bin runs; every package loads.
 */
describe.concurrent('the packed packages with the lowest version of every dependency range', () => {
  let scratch = '';
  let env: NodeJS.ProcessEnv = {};
  let skipped = '';
  const lowest = new Map<string, string>();
  const project = () => join(scratch, 'project');
  const bin = (name: string) => join(project(), 'node_modules', '.bin', name);
  const published = workspacePackages;

  beforeAll(async () => {
    scratch = mkdtempSync(join(realpathSync(tmpdir()), 'ddw-lowest-'));
    const tarballs = join(scratch, 'tarballs');
    mkdirSync(tarballs);
    mkdirSync(project());
    env = childEnv(join(scratch, 'npm-cache'));

    // Every third-party range, from dependencies and peerDependencies alike.
    const ranges = new Map<string, Set<string>>();
    for (const { manifest } of published) {
      for (const [name, range] of Object.entries({
        ...manifest.dependencies,
        ...manifest.peerDependencies,
      })) {
        if (ddwNames.includes(name)) continue;
        ranges.set(name, (ranges.get(name) ?? new Set()).add(range));
      }
    }
    const lookups = await Promise.all(
      [...ranges].flatMap(([name, set]) =>
        [...set].map(async (range) => ({
          name,
          range,
          r: await run(
            'npm',
            ['view', `${name}@${range}`, 'version', '--json', '--fetch-timeout=20000', '--fetch-retries=1'],
            scratch,
            env,
          ),
        })),
      ),
    );
    for (const { name, range, r } of lookups) {
      if (r.status !== 0) {
        if (OFFLINE.test(r.stderr)) {
          skipped = `the npm registry is unreachable (${r.stderr
            .split('\n')
            .find((l) => OFFLINE.test(l))
            ?.trim()}); skipping the lowest-versions install`;
          console.warn(`packed-install: ${skipped}`);
          return;
        }
        throw new Error(`npm view ${name}@${range} failed:\n${r.stderr}`);
      }
      const parsed: string | string[] = JSON.parse(r.stdout);
      const versions = (Array.isArray(parsed) ? parsed : [parsed]).sort(compareVersions);
      if (versions.length === 0) throw new Error(`no version of ${name} satisfies ${range}`);
      // Several ranges of one name: the lowest version all of them admit is the highest of the lows.
      const known = lowest.get(name);
      if (known === undefined || compareVersions(versions[0]!, known) > 0) lowest.set(name, versions[0]!);
    }

    const packed = packJson(
      (
        await ok(
          'npm',
          [
            'pack',
            '--json',
            '--ignore-scripts',
            '--pack-destination',
            tarballs,
            ...published.flatMap((p) => ['--workspace', relative(root, p.dir)]),
          ],
          root,
          env,
        )
      ).stdout,
    );
    // The tools at the lockfile's versions (what the repository uses).
    const tools = Object.fromEntries(TOOLS.map((name) => [name, readManifest(locate(name, root)!).version]));
    writeFileSync(
      join(project(), 'package.json'),
      `${JSON.stringify(
        {
          name: 'ddw-lowest-versions-check',
          version: '1.0.0',
          private: true,
          type: 'module',
          dependencies: {
            ...Object.fromEntries(packed.map((p) => [p.name, `file:${join(tarballs, p.filename)}`])),
            ...Object.fromEntries(lowest),
            ...tools,
          },
        },
        null,
        2,
      )}\n`,
    );
    const install = await run(
      'npm',
      ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--fetch-timeout=60000'],
      project(),
      env,
    );
    if (install.status !== 0) {
      if (OFFLINE.test(install.stderr)) {
        skipped = `the npm registry became unreachable during the install; skipping (${install.stderr
          .split('\n')
          .find((l) => OFFLINE.test(l))
          ?.trim()})`;
        console.warn(`packed-install: ${skipped}`);
        return;
      }
      throw new Error(
        `npm install of the lowest versions failed (ERESOLVE?):\n${install.stdout}\n${install.stderr}`,
      );
    }
    console.log(`packed-install: lowest versions ${[...lowest].map(([n, v]) => `${n}@${v}`).join(', ')}`);

    writeScratchFiles(project());
    mkdirSync(join(project(), 'custom-machine'));
    for (const file of readdirSync(customMachineDir).filter((f) => f.endsWith('.ts'))) {
      copyFileSync(join(customMachineDir, file), join(project(), 'custom-machine', file));
    }
    writeReadmePlugin(project());
  }, 600_000);

  afterAll(() => {
    if (scratch !== '' && process.env.DDW_KEEP_SCRATCH === undefined)
      rmSync(scratch, { recursive: true, force: true });
  });

  it('installs one copy of each peer, at the lowest version of its range', async ({ skip }) => {
    if (skipped) skip(skipped);
    const dir = realpathSync(project());
    expect(await peerCopies(project(), env)).toEqual(
      Object.fromEntries(SHARED_PEERS.map((name) => [name, [join(dir, 'node_modules', name)]])),
    );
    for (const name of SHARED_PEERS) {
      expect(readManifest(join(dir, 'node_modules', name)).version, name).toBe(lowest.get(name));
    }
  });

  it("type-checks the README's plugin example and the custom machine against the declarations", async ({
    skip,
  }) => {
    if (skipped) skip(skipped);
    await ok(bin('tsc'), ['-p', 'tsconfig.lowest.json'], project(), env);
  });

  it("runs the README's plugin example: its zod section validated by @ddw/machine", async ({ skip }) => {
    if (skipped) skip(skipped);
    const r = await ok(bin('tsx'), ['readme-plugin/run.ts'], project(), env);
    const out = JSON.parse(r.stdout);
    expect(out.ret).toBe('0');
    expect(out.count).toBe(2);
    expect(out.defaulted).toBe(1);
    expect(out.refused).toMatch(/mydev\.count/);
  });

  it('runs the custom-machine example and the ddw executable', async ({ skip }) => {
    if (skipped) skip(skipped);
    const [example, mtree, schema] = await Promise.all([
      ok(bin('tsx'), ['custom-machine/run.ts'], project(), env),
      ok(bin('ddw'), ['info', 'mtree', '-m', '1G'], project(), env),
      ok(bin('ddw'), ['schema', 'description'], project(), env),
    ]);
    expect(example.stdout).toContain('custom machine: all DMA verified');
    expect(mtree.stdout).toContain('(prio 0, ram): ppc_spapr.ram');
    expect(JSON.parse(schema.stdout)).toHaveProperty('$schema');
    const run = await ok(bin('ddw'), ['run', '-m', '2G', '--json'], project(), env);
    expect(JSON.parse(run.stdout)).toMatchObject({ kind: 'run' });
  });

  it('loads every package with import and with require', async ({ skip }) => {
    if (skipped) skip(skipped);
    const names = published.map((p) => p.manifest.name);
    const [esm, cjs] = await Promise.all([
      ok(process.execPath, ['load.mjs', ...names], project(), env),
      ok(process.execPath, ['load.cjs', ...names], project(), env),
    ]);
    expect(JSON.parse(cjs.stdout)).toEqual(JSON.parse(esm.stdout));
  });
});

/**
 * The README's plugin example (the first TypeScript block under "## Writing a plugin" in
 * packages/machine/README.md), as a consumer would paste it, and a program using it.
 */
function writeReadmePlugin(project: string): void {
  const readme = readFileSync(join(packagesDir, 'machine', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Writing a plugin'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!code?.includes('definePlugin')) {
    throw new Error(
      'packages/machine/README.md: no ```ts block with definePlugin under "## Writing a plugin"',
    );
  }
  mkdirSync(join(project, 'readme-plugin'), { recursive: true });
  writeFileSync(join(project, 'readme-plugin', 'my-device.ts'), code);
  writeFileSync(
    join(project, 'readme-plugin', 'run.ts'),
    [
      "import { ConfigError, createMachine } from '@ddw/machine';",
      "import { spaprIommu } from '@ddw/spapr-iommu';",
      "import { spaprPci } from '@ddw/spapr-pci';",
      "import { myDevice } from './my-device.js';",
      '',
      'const plugins = () => [spaprIommu(), spaprPci(), myDevice()];',
      "const machine = await createMachine(plugins(), { ram: '1G', mydev: { count: 2 } });",
      'const { ret } = machine.guest.hcall(0xf100, 0x1000n);',
      'const count = (machine.description as unknown as { mydev: { count: number } }).mydev.count;',
      'machine.dispose();',
      "const plain = await createMachine(plugins(), { ram: '1G' });",
      'const defaulted = (plain.description as unknown as { mydev: { count: number } }).mydev.count;',
      'plain.dispose();',
      "let refused = '';",
      'try {',
      "  await createMachine(plugins(), { ram: '1G', mydev: { count: 0 } });",
      '} catch (error) {',
      "  refused = error instanceof ConfigError ? error.message : 'not a ConfigError: ' + String(error);",
      '}',
      'console.log(JSON.stringify({ ret: String(ret), count, defaulted, refused }));',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(project, 'tsconfig.lowest.json'),
    `${JSON.stringify(
      {
        extends: './tsconfig.json',
        include: ['readme-plugin/*.ts', 'custom-machine/*.ts'],
      },
      null,
      2,
    )}\n`,
  );
}

/** The scratch project's own files: tsconfigs, type checks, load scripts, the plugin script. */
function writeScratchFiles(project: string): void {
  const write = (path: string, text: string) => {
    mkdirSync(dirname(join(project, path)), { recursive: true });
    writeFileSync(join(project, path), text);
  };
  const compilerOptions = {
    target: 'ES2022',
    lib: ['ES2022'],
    strict: true,
    noEmit: true,
    // The custom machine's service uses parameter decorators (@inject); tsx reads this too.
    experimentalDecorators: true,
    // The declarations are part of what is checked.
    skipLibCheck: false,
    types: ['node'],
  };
  write(
    'tsconfig.json',
    `${JSON.stringify(
      {
        compilerOptions: { ...compilerOptions, module: 'Node16', moduleResolution: 'Node16' },
        include: ['custom-machine/*.ts', 'types/esm.mts', 'types/cjs.cts', 'types/plugin.mts'],
      },
      null,
      2,
    )}\n`,
  );
  write(
    'tsconfig.bundler.json',
    `${JSON.stringify(
      {
        compilerOptions: { ...compilerOptions, module: 'ESNext', moduleResolution: 'Bundler' },
        include: ['custom-machine/*.ts', 'types/bundler.ts', 'types/plugin.mts'],
      },
      null,
      2,
    )}\n`,
  );

  // Each package by name, as a namespace, plus a use of one export whose type must be real: an
  // `any` from an unresolved declaration would make the @ts-expect-error lines unused, an error.
  const ns = (name: string) => `p${ddwNames.indexOf(name)}`;
  const typeChecks = (importLine: (ns: string, name: string) => string) =>
    [
      ...ddwNames.map((name) => importLine(ns(name), name)),
      '',
      `export const names: string[] = [${ddwNames.map((name) => `...Object.keys(${ns(name)})`).join(', ')}];`,
      `export const built: Promise<${ns('@ddw/machine')}.Machine> = ${ns('@ddw/pseries')}.buildPseries('-m 1G');`,
      `export const tok: ${ns('@ddw/machine')}.Token<number> = ${ns('@ddw/machine')}.token<number>('check', 'Number');`,
      '// @ts-expect-error createMachine takes plugins, not a string',
      `export const wrong = ${ns('@ddw/machine')}.createMachine('spapr-pci', {});`,
      '// @ts-expect-error a PCI driver needs create()',
      `export const driver: ${ns('@ddw/pci')}.PciDriver = { name: 'x', dma64: true };`,
      '',
    ].join('\n');
  write(
    'types/esm.mts',
    typeChecks((ns, name) => `import * as ${ns} from '${name}';`),
  );
  write(
    'types/cjs.cts',
    typeChecks((ns, name) => `import ${ns} = require('${name}');`),
  );
  write(
    'types/bundler.ts',
    typeChecks((ns, name) => `import * as ${ns} from '${name}';`),
  );
  write(
    'types/plugin.mts',
    [
      "import { buildPseries } from '@ddw/pseries';",
      "import { type DmaTraceCounters, type DmaTracerDevice, DmaTraceTokens, dmaTracer } from 'ddw-plugin-dma-trace';",
      '',
      "const machine = await buildPseries('-device dma-tracer,id=tr0', { plugins: [dmaTracer()] });",
      "const tr0: DmaTracerDevice | undefined = machine.get(DmaTraceTokens.Tracers).get('tr0');",
      'export const counters: DmaTraceCounters | undefined = tr0?.counters;',
      '// @ts-expect-error the counters are numbers',
      'export const wrong: string | undefined = tr0?.counters.bytesRead;',
      '',
    ].join('\n'),
  );

  // Runtime: the export names of each package, through import() and through require().
  write(
    'load.mjs',
    [
      'const out = {};',
      'for (const name of process.argv.slice(2)) {',
      "  out[name] = Object.keys(await import(name)).filter((k) => k !== 'default').sort();",
      '}',
      'console.log(JSON.stringify(out));',
      '',
    ].join('\n'),
  );
  write(
    'load.cjs',
    [
      'const out = {};',
      'for (const name of process.argv.slice(2)) {',
      "  out[name] = Object.keys(require(name)).filter((k) => k !== 'default' && k !== '__esModule').sort();",
      '}',
      'console.log(JSON.stringify(out));',
      '',
    ].join('\n'),
  );

  // The plugin from its tarball, in plain JavaScript: a pseries machine with one dma-tracer, a page
  // mapped with H_PUT_TCE, one DMA read.
  write(
    'plugin-check.mjs',
    [
      "import { H_PUT_TCE, TraceBus } from '@ddw/machine';",
      "import { buildPseries } from '@ddw/pseries';",
      "import { DmaTraceTokens, dmaTracer } from 'ddw-plugin-dma-trace';",
      '',
      'const trace = new TraceBus();',
      "trace.setPatterns(['dma_tracer_*']);",
      'const lines = trace.collect();',
      "const m = await buildPseries('-M pseries -m 1G -device dma-tracer,id=tr0,addr=2', { trace, plugins: [dmaTracer()] });",
      'const put = m.guest.hcall(H_PUT_TCE, 0x80000000n, 0x1000n, 0x200000n | 3n);',
      "m.guest.memory.write(0x200000n, new TextEncoder().encode('packed'));",
      "const tr0 = m.get(DmaTraceTokens.Tracers).get('tr0');",
      'const read = tr0.dmaRead(0x1000n, 6);',
      'const text = new TextDecoder().decode(read.data);',
      'console.log(JSON.stringify({ put: String(put.ret), text, lines: lines.lines, counters: tr0.counters }));',
      'm.dispose();',
      '',
    ].join('\n'),
  );
}
