/**
 * The built `ddw` as a user meets it: a child process, bad input of every kind it accepts, and
 * what comes back — the exit code (0 done, 1 no, 2 usage/configuration/input), one line on stderr
 * naming what is wrong, and never a stack trace. Random argv, QEMU option strings and description
 * documents come from fast-check.
 *
 * It runs packages/cli/dist/bin.js: CI runs `npm run build` before `npm test` (.ci/run); run it
 * yourself before this file otherwise.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import * as z from 'zod';
import { runDdw } from './support/ddw-program.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'packages/cli/dist/bin.js');
const fixture = (name: string) => join(root, 'test/fixtures/qemu-7.2', name);
const work = mkdtempSync(join(tmpdir(), 'ddw-cli-surface-'));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function ddw(args: readonly string[], options: { input?: string } = {}): Result {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: work,
    encoding: 'utf8',
    env: { ...process.env, DDW_DEBUG: '' },
    ...(options.input !== undefined ? { input: options.input } : {}),
    maxBuffer: 64 << 20,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const STACK = /\n\s+at |^\s+at .+:\d+:\d+/m;

/** A usage, configuration or input error: exit 2, nothing on stdout, one line on stderr, no stack. */
function expectRefused(r: Result, message: RegExp | string): void {
  expect(r.stderr).not.toMatch(STACK);
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr.endsWith('\n')).toBe(true);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^ddw: /);
  if (typeof message === 'string') expect(r.stderr).toContain(message);
  else expect(r.stderr).toMatch(message);
}

function file(name: string, text: string | Uint8Array): string {
  const path = join(work, name);
  writeFileSync(path, text);
  return path;
}

beforeAll(() => {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` before this test`);
});

describe('exit codes and messages', () => {
  it('exits 0 with help and version, as QEMU users ask for them', () => {
    for (const args of [['--help'], ['run', '--help'], ['--version'], ['-version'], ['run', '-version']]) {
      const r = ddw(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).not.toBe('');
    }
    expect(ddw(['-version']).stdout).toMatch(/^ddw version \d+\.\d+\.\d+\n/);
  });

  it("lists machine types, devices, a device's properties and trace events, and exits 0", () => {
    const machines = ddw(['-M', 'help']);
    expect(machines.code).toBe(0);
    expect(machines.stdout).toMatch(
      /^Supported machines are \(QEMU 10\.0\):\npseries +.*alias of pseries-10\.0/,
    );
    expect(ddw(['run', '-machine', 'help']).stdout).toBe(machines.stdout);
    const devices = ddw(['-device', 'help']);
    expect(devices.stdout).toContain('name "e1000e", bus PCI');
    expect(devices.stdout).toContain('name "vfio-pci", bus PCI');
    const props = ddw(['-device', 'e1000e,help']);
    expect(props.code).toBe(0);
    expect(props.stdout).toMatch(/^e1000e options:\n/);
    expect(props.stdout).toMatch(/\n {2}netdev=<netdev> +- /);
    const events = ddw(['-trace', 'help']);
    expect(events.code).toBe(0);
    expect(events.stdout.split('\n')).toEqual(
      expect.arrayContaining(['spapr_iommu_put', 'vfio_spapr_create_window']),
    );
  });

  it('models the QEMU version asked for: its machine types, deprecations and VFIO trace lines', () => {
    const help10 = ddw(['--qemu', '10.0', '-M', 'help']);
    expect(help10.code).toBe(0);
    expect(help10.stdout).toMatch(
      /^Supported machines are \(QEMU 10\.0\):\npseries +.*alias of pseries-10\.0/,
    );
    expect(help10.stdout).toMatch(/\npseries-4\.2 +.*\(deprecated\)\n/);
    expectRefused(
      ddw(['run', '--qemu', '7.2', '-M', 'pseries-9.0']),
      'unknown machine type "pseries-9.0" for QEMU 7.2',
    );
    const old = ddw(['run', '--qemu', '10.0', '-M', 'pseries-4.2', '-m', '1G', '--guest', 'none']);
    expect(old.code).toBe(0);
    expect(old.stderr).toBe(
      "ddw: warning: Machine type 'pseries-4.2' is deprecated: machines more than 3 years old are subject to deletion after 6 years\n",
    );
    const vfio = [
      'run',
      '-m',
      '2G',
      '-device',
      'vfio-pci,host=0000:01:00.0',
      '-trace',
      'vfio_listener_region_*',
    ];
    expect(ddw([...vfio, '--qemu', '10.0']).stderr).toContain(
      'region_add [iommu] iommu-spapr 0x0 - 0x3fffffff',
    );
    expect(ddw([...vfio, '--qemu', '7.2']).stderr).toContain(
      'vfio_listener_region_add_iommu region_add [iommu] 0x0 - 0x3fffffff',
    );
    expectRefused(ddw(['run', '--qemu', '9.9']), "'9.9' is invalid");
  });

  it('keeps TCEs in the kernel under -accel kvm with --host kvmvfio=on, and DMA still works', () => {
    const args = [
      'run',
      '-accel',
      'kvm',
      '-m',
      '2G',
      '-device',
      'vfio-pci,host=0000:01:00.0',
      '-trace',
      'spapr_iommu_put',
    ];
    const inKernel = ddw([...args, '--host', 'kvmvfio=on', '-trace', 'vfio_spapr_group_attach']);
    expect(inKernel.code).toBe(0);
    expect(inKernel.stderr).toMatch(/^vfio_spapr_group_attach Attached groupfd \d+ to liobn fd \d+\n/);
    expect(inKernel.stdout).toMatch(/bytes verified, 0 failed\n/);
    expect(ddw([...args, '--host', 'kvmvfio=off']).code).toBe(0);
    expectRefused(ddw([...args, '--host', 'kvmvfio=maybe']), '--host kvmvfio');
  });

  it('refuses usage mistakes with exit 2 and one line', () => {
    expectRefused(ddw(['bogus']), 'unknown command "bogus"');
    expectRefused(ddw(['run', '--bogus']), 'unknown or unsupported option "--bogus"');
    expectRefused(ddw(['run', '-bogus']), 'unknown or unsupported option "-bogus"');
    expectRefused(ddw(['run', '--guest', 'linux-9']), "'linux-9' is invalid");
    expectRefused(ddw(['run', '--host']), "option '--host <options>' argument missing");
    expectRefused(ddw(['run', '-m']), '-m: requires an argument');
    expectRefused(ddw(['run', 'a.json', 'b.json']), 'give at most one description file');
    expectRefused(ddw(['snapshot']), /snapshot/);
    expectRefused(ddw(['replay']), "missing required argument 'trace'");
    expectRefused(ddw(['schema', 'nope']), 'no schema "nope"');
    expectRefused(ddw(['-device', 'nope,help']), "'nope' is not a valid device model name");
  });

  it('refuses what QEMU refuses, naming the option as written', () => {
    expectRefused(
      ddw(['run', '-device', 'e1000e,bogusprop=1']),
      "QEMU options: -device e1000e,bogusprop=1: Property 'e1000e.bogusprop' not found",
    );
    expectRefused(ddw(['run', '-device', 'e1000e,id=my nic']), "Parameter 'id' expects an identifier");
    expectRefused(
      ddw([
        'run',
        '-m',
        '2G',
        '-device',
        'vfio-pci,host=0000:01:00.0',
        '-device',
        'vfio-pci,host=0000:01:00.0',
      ]),
      /vfio-pci,host=0000:01:00\.0.*already/,
    );
    expectRefused(ddw(['run', '-M', 'pseries-9.9']), 'unknown machine type "pseries-9.9"');
    expectRefused(ddw(['run', '-m', '4G,maxmem=2G']), /maxmem/);
    expectRefused(ddw(['run', '--host', 'type=v3']), '--host type');
    expectRefused(ddw(['run', '-trace', 'events=/no/such/events']), 'trace events file /no/such/events');
  });

  it('refuses missing, unreadable and malformed files in one line', () => {
    expectRefused(ddw(['run', join(work, 'missing.json')]), /missing\.json: .*no such file/);
    expectRefused(ddw(['run', work]), /directory/);
    expectRefused(ddw(['run', file('bad.json', '{ "ram": ')]), /bad\.json: .*is not JSON/);
    expectRefused(ddw(['replay', join(work, 'missing.trace')]), /missing\.trace.*no such file/);
    expectRefused(ddw(['replay', work]), /directory/);
    expectRefused(ddw(['snapshot', 'save', join(work, 'NO/SUCH/DIR/x.snap')]), /NO\/SUCH\/DIR\/x\.snap/);
    expectRefused(ddw(['snapshot', 'info', join(work, 'missing.snap')]), /missing\.snap.*no such file/);
    expectRefused(ddw(['snapshot', 'load', join(work, 'missing.snap')]), /missing\.snap.*no such file/);
    expectRefused(ddw(['snapshot', 'info', file('garbage.snap', 'not a snapshot at all')]), /snapshot/);
  });
});

describe('descriptions', () => {
  it('refuses a document that is not an object, forbidden keys, deep nesting', () => {
    for (const text of ['[]', 'null', '42', '"pseries"', 'true']) {
      expectRefused(ddw(['run', file('doc.json', text)]), /doc\.json: \(document\): is .*not a JSON object/);
    }
    expectRefused(ddw(['run', file('proto.json', '{"__proto__": {"ram": "1G"}}')]), '__proto__');
    expectRefused(
      ddw(['run', file('ctor.json', '{"devices": [{"id": "a", "driver": "e1000e", "constructor": 1}]}')]),
      'constructor',
    );
    const deepArray = `{"devices": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    expectRefused(
      ddw(['run', file('deep.json', deepArray)]),
      /deep\.json: devices: nesting deeper than 64 levels/,
    );
    const deepObject = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`;
    expectRefused(
      ddw(['run', file('deeper.json', deepObject)]),
      /deeper\.json: a: nesting deeper than 64 levels/,
    );
  });

  it("names the user's index, not the merged one", () => {
    const path = file(
      'devices.json',
      JSON.stringify({ devices: [{ id: 'n', driver: 'nope', bus: 'pci.0' }] }),
    );
    expectRefused(ddw(['run', path]), `${path}: devices[0].driver: unknown device "nope"`);
  });
});

describe('reports', () => {
  it('reports machines without devices, without a guest, without DDW, with several PHBs', () => {
    for (const args of [
      ['-m', '4G'],
      ['--guest', 'none'],
      ['-m', '1G', '-global', 'spapr-pci-host-bridge.ddw=off', '-device', 'e1000e'],
      ['-device', 'spapr-pci-host-bridge,index=1', '-device', 'e1000e,bus=pci.1', '-device', 'e1000e'],
    ]) {
      const text = ddw(['run', ...args]);
      expect(text.stderr, args.join(' ')).toBe('');
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/\nOK in \d+ ms\n$/);
      const json = ddw(['run', ...args, '--json']);
      expect(json.code).toBe(0);
      const report = JSON.parse(json.stdout);
      expect(report).toMatchObject({ schemaVersion: 1, kind: 'run', ok: true });
      for (const phb of report.phbs) for (const w of phb.windows) expect(w.liobn).toMatch(/^0x[0-9a-f]+$/);
    }
  });

  it('prints --json for every report, each with its schema from `ddw schema`', () => {
    const snap = join(work, 'report.snap');
    expect(ddw(['snapshot', 'save', snap, '-m', '1G', '-device', 'e1000e']).code).toBe(0);
    const reports = {
      run: ddw(['run', '--json', '-m', '1G', '-device', 'e1000e']),
      mtree: ddw(['info', 'mtree', '--json', '-m', '1G']),
      'snapshot-info': ddw(['snapshot', 'info', snap, '--json']),
      replay: ddw(['replay', fixture('v1-basic.trace'), '--json']),
    };
    for (const [name, r] of Object.entries(reports)) {
      expect(r.stderr, name).not.toMatch(STACK);
      const report = JSON.parse(r.stdout);
      expect(report.schemaVersion, name).toBe(1);
      const schema = JSON.parse(ddw(['schema', name]).stdout);
      expect(schema.type, name).toBe('object');
      expect(Object.keys(schema.properties), name).toEqual(expect.arrayContaining(Object.keys(report)));
    }
    const description = JSON.parse(ddw(['schema', 'description']).stdout);
    expect(Object.keys(description.properties)).toEqual(
      expect.arrayContaining(['ram', 'type', 'phbs', 'devices', 'host', 'guest', 'preset']),
    );
    // A description file is an overlay: the schema accepts the README's example and what
    // --print-description prints, and refuses a misspelt field.
    const fileSchema = z.fromJSONSchema(description);
    const example = {
      ram: '8G',
      devices: [
        { id: 'hostdev0', remove: true },
        { id: 'nic', driver: 'e1000e', bus: 'pci.0', slot: 3 },
      ],
      host: { rampage: '16M' },
    };
    expect(fileSchema.safeParse(example).success).toBe(true);
    expect(fileSchema.safeParse(JSON.parse(ddw(['run', '--print-description']).stdout)).success).toBe(true);
    expect(fileSchema.safeParse({ devices: [{ id: 'n', colour: 'red' }] }).success).toBe(false);
  });
});

describe('output through a pipe', () => {
  it('writes everything before exiting 1: a failing --check piped into another process ends with its summary', () => {
    const trace = fixture('v2-64k.trace');
    const direct = ddw(['replay', trace, '--qemu-args', '-m 4G', '--check']);
    expect(direct.code).toBe(1);
    const piped = spawnSync(
      '/bin/sh',
      ['-c', `"${process.execPath}" "${bin}" replay "${trace}" --qemu-args "-m 4G" --check | cat; exit $?`],
      { cwd: work, encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    expect(piped.stdout).toBe(direct.stdout);
    expect(piped.stdout).toMatch(/\n\d+ compared, [1-9]\d* differ\n$/);
  });

  it("runs the README's headline command line as QEMU users type it", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const line = /^ddw run (-M pseries .*)$/m.exec(readme)![1]!;
    const r = spawnSync('/bin/sh', ['-c', `"${process.execPath}" "${bin}" run ${line}`], {
      cwd: work,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(readFileSync(join(work, 'trace.log'), 'utf8')).toMatch(/^spapr_iommu_/);
  });

  it('refuses a ddw flag on a command that does not take it, and an id given twice', () => {
    expectRefused(
      ddw(['snapshot', 'load', 'x.snap', '--guest', 'none']),
      "--guest is not an option of 'ddw snapshot load'",
    );
    expectRefused(ddw(['run', '-device', 'e1000e,id=a', '-device', 'dma-engine,id=a']), /duplicate ID "a"/);
    expectRefused(ddw(['info', 'bogus']), 'unknown command "info bogus"');
  });

  it('warns about a -trace pattern that selects no event, and still runs', () => {
    const r = ddw(['run', '-m', '1G', '-trace', 'spapr_iommu_nope*', '-trace', 'spapr_iommu_ddw_*']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(
      'ddw: warning: -trace pattern "spapr_iommu_nope*" matches no trace event (-trace help lists them)\n',
    );
  });

  it('writes -D FILE trace logs atomically, and the same lines as stderr would get', () => {
    const log = join(work, 'trace.log');
    const args = ['run', '-m', '2G', '-device', 'e1000e', '-trace', 'spapr_iommu_ddw_*'];
    const toStderr = ddw(args);
    const toFile = ddw([...args, '-D', log]);
    expect(toFile.code).toBe(0);
    expect(toFile.stderr).toBe('');
    expect(readFileSync(log, 'utf8')).toBe(toStderr.stderr);
    expect(toStderr.stderr).toMatch(/^spapr_iommu_ddw_query buid=0x800000020000000/);
    // The output does not depend on where the trace goes.
    expect(toFile.stdout.replace(/\d+ ms/, '')).toBe(toStderr.stdout.replace(/\d+ ms/, ''));
  });
});

/** In-process runs for the property tests (a child process per case would take minutes). */
const inProcess = (args: string[]) => runDdw(...args);

function expectHandled(r: { code: number; err: string }, context: string): void {
  expect(r.err, context).not.toMatch(STACK);
  expect(r.err, context).not.toContain('internal error');
  expect([0, 1, 2], `${context}\n${r.err}`).toContain(r.code);
  if (r.code === 2) expect(r.err.trimEnd().split('\n'), context).toHaveLength(1);
}

describe('fuzzed input never reaches a user as a stack trace', () => {
  const junk = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.constantFrom(
      '',
      '=',
      ',',
      ',,',
      'help',
      '?',
      '0x',
      '-1',
      '1e9',
      '99999999999999999999999',
      'on',
      'off',
    ),
  );
  const value = fc.oneof(
    junk,
    fc.constantFrom('4G', '512', '1T', 'pseries', 'pseries-2.7', 'e1000e', 'vfio-pci', 'dma-engine', 'kvm'),
  );
  const option = fc.constantFrom(
    '-M',
    '-machine',
    '-m',
    '-device',
    '-global',
    '-accel',
    '-enable-kvm',
    '-trace',
    '-d',
    '-msg',
    '--qemu-args',
    '--host',
    '--guest',
    '--json',
    '--print-description',
    '-nographic',
    '-cpu',
    '-smp',
  );
  const word = fc.oneof(option, value, fc.constantFrom('e1000e,id=a', 'spapr-pci-host-bridge,index=1'));

  it('random argv for run: exit 0, 1 or 2, and a refusal is one line', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(word, { maxLength: 8 }), async (words) => {
        const args = ['run', '--print-description', ...words];
        expectHandled(await inProcess(args), JSON.stringify(args));
      }),
      { numRuns: 300 },
    );
  });

  it('random machines, mostly valid, built and run', async () => {
    const pair = fc.oneof(
      fc.tuple(fc.constant('-m'), fc.constantFrom('1G', '2G', '512', '3G,maxmem=8G', '0', 'x')),
      fc.tuple(fc.constant('-M'), fc.constantFrom('pseries', 'pseries-2.7', 'pseries-7.2', 'pseries-0.1')),
      fc.tuple(
        fc.constant('-device'),
        fc.constantFrom(
          'e1000e',
          'dma-engine',
          'vfio-pci,host=0000:01:00.0',
          'e1000e,bogus=1',
          'e1000e,addr=3',
        ),
      ),
      fc.tuple(
        fc.constant('-global'),
        fc.constantFrom('spapr-pci-host-bridge.ddw=off', 'spapr-pci-host-bridge.pgsz=0x11000', 'x.y=1'),
      ),
      fc.tuple(fc.constant('--host'), fc.constantFrom('type=v1', 'type=v2', 'page=4K', 'windows=1', 'bad')),
      fc.tuple(fc.constant('--guest'), fc.constantFrom('linux-6.1', 'linux-4.x', 'none', 'linux-0')),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(pair, { maxLength: 4 }), async (pairs) => {
        const args = ['run', ...pairs.flat()];
        const r = await inProcess(args);
        expectHandled(r, JSON.stringify(args));
        if (r.code !== 2) expect(r.out).toMatch(/\n(OK|FAILED) in \d+ ms\n$/);
      }),
      { numRuns: 40 },
    );
  });

  it('random QEMU option strings in --qemu-args and -device', async () => {
    const text = fc
      .array(fc.oneof(word, fc.string({ maxLength: 20 })), { maxLength: 6 })
      .map((w) => w.join(' '));
    await fc.assert(
      fc.asyncProperty(text, fc.string({ maxLength: 40 }), async (qemu, device) => {
        expectHandled(await inProcess(['run', '--print-description', '--qemu-args', qemu]), qemu);
        expectHandled(await inProcess(['run', '--print-description', '-device', device]), device);
      }),
      { numRuns: 300 },
    );
  });

  it('random description documents, including forbidden keys', async () => {
    const dir = mkdtempSync(join(work, 'docs-'));
    mkdirSync(dir, { recursive: true });
    const doc = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }),
      fc.record({
        ram: value,
        devices: fc.array(
          fc.dictionary(
            fc.constantFrom('id', 'driver', 'bus', 'slot', 'props', '__proto__', 'remove'),
            fc.jsonValue({ maxDepth: 2 }),
          ),
          { maxLength: 3 },
        ),
      }),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(doc, async (d) => {
        const path = join(dir, `d${n++}.json`);
        writeFileSync(path, JSON.stringify(d));
        expectHandled(await inProcess(['run', path, '--print-description']), JSON.stringify(d));
      }),
      { numRuns: 300 },
    );
  });

  it('random argv through the built CLI, a few cases end to end', () => {
    fc.assert(
      fc.property(fc.array(word, { maxLength: 6 }), (words) => {
        const r = ddw(['run', '--print-description', ...words]);
        expect(r.stderr).not.toMatch(STACK);
        expect([0, 1, 2], r.stderr).toContain(r.code);
      }),
      { numRuns: 15 },
    );
  });
});
