import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBrowser, launchBrowser } from './support/browser.js';
import { type StaticServer, serveStatic } from './support/static-server.js';

// The static page (packages/web) in a real headless Chromium, checked against the built CLI: the
// page must print what `ddw` prints for the same machine. Nothing is built here: CI runs
// `npm run build:web` first (which also builds packages/cli/dist).

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'packages/web/dist');
const bin = join(root, 'packages/cli/dist/bin.js');
const fixtures = join(root, 'test/fixtures');

const browserPath = findBrowser();
const inCi = Boolean(process.env.CI);
const NO_BROWSER =
  'no Chromium found (set DDW_CHROMIUM, or `apt-get install chromium-headless-shell`, which gives ' +
  '/usr/bin/chromium-headless-shell)';
if (!browserPath && !inCi) console.warn(`test/browser.test.ts skipped: ${NO_BROWSER}`);

const exec = promisify(execFile);

/** `node packages/cli/dist/bin.js ...args`: stdout, stderr and the exit code (never throws on exit != 0). */
async function ddw(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  try {
    const r = await exec(process.execPath, [bin, ...args], { cwd: root, maxBuffer: 64 << 20 });
    return { out: r.stdout, err: r.stderr, code: 0 };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; code?: unknown };
    if (typeof x.code !== 'number') throw e;
    return { out: x.stdout ?? '', err: x.stderr ?? '', code: x.code };
  }
}

/** A machine as the page's URL gives it, and the CLI flags that give the same one. */
interface Machine {
  name: string;
  /** QEMU options ('' for ddw's default machine). */
  qemu: string;
  /** It has a vfio-pci device (the host picture is shown). */
  vfio?: boolean;
  guest?: string;
  host?: string;
  qemuVersion?: string;
}

function pageQuery(m: Machine): string {
  const q = new URLSearchParams();
  if (m.qemu) q.set('qemu', m.qemu);
  if (m.guest) q.set('guest', m.guest);
  if (m.host) q.set('host', m.host);
  if (m.qemuVersion) q.set('qemuVersion', m.qemuVersion);
  const query = q.toString();
  return query === '' ? 'index.html' : `index.html?${query}`;
}

function cliArgs(m: Machine): string[] {
  const args = m.qemu ? ['--qemu-args', m.qemu] : [];
  if (m.guest) args.push('--guest', m.guest);
  if (m.host) args.push('--host', m.host);
  if (m.qemuVersion) args.push('--qemu', m.qemuVersion);
  return args;
}

// `-m 4G,maxmem=8G` alone is refused by QEMU and ddw alike (maxmem needs slots): the default
// machine gives slots. The refused form is one of the error cases below.
const DEFAULT: Machine = { name: 'default', qemu: '-M pseries -m 4G,maxmem=8G,slots=2 -device e1000e' };
/** No options: ddw's default machine (an emulated DMA engine and a vfio-pci device on a v2 host). */
const DDW_DEFAULT: Machine = { name: "ddw's default", qemu: '', vfio: true };
const MACHINES: Machine[] = [
  DDW_DEFAULT,
  DEFAULT,
  // No maxmem: Linux 6.12 sizes the DDW from ibm,lrdr-capacity alone, so no DDW.
  { name: 'two e1000e, no maxmem', qemu: '-m 2G -device e1000e -device e1000e' },
  {
    name: 'vfio-pci on a v2 host',
    qemu: '-M pseries -m 4G,maxmem=8G,slots=2 -device vfio-pci,host=0000:01:00.0',
    host: 'type=v2,rampage=16M',
    vfio: true,
  },
  {
    name: 'QEMU 7.2 with a Linux 6.1 guest',
    qemu: '-M pseries -m 2G -device e1000e',
    guest: 'linux-6.1',
    qemuVersion: '7.2',
  },
];
const BAD: string[] = ['-device bogus', '-M pseries -m 4G,maxmem=8G -device e1000e'];

const PICTURES = ['bus', 'ram', 'tce-heat', 'negotiation', 'mtree', 'trace'] as const;

const V1 = {
  file: join(fixtures, 'qemu-7.2/v1-basic.trace'),
  args: '-M pseries -cpu power9 -m 2G -device e1000e -netdev user,id=n0 -device e1000e,netdev=n0',
};
const V2 = {
  file: join(fixtures, 'qemu-7.2/v2-64k.trace'),
  args: '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e',
};

function withoutTime(report: unknown): unknown {
  if (!report || typeof report !== 'object') return report;
  const { timeMs: _timeMs, ...rest } = report as Record<string, unknown>;
  return rest;
}

/** A page that records console errors and uncaught exceptions. */
interface Watched {
  page: Page;
  consoleErrors: string[];
  pageErrors: string[];
}

const MISSING_PAGE = 'packages/web/dist/index.html is missing: run `npm run build:web` first';

// Fails (never skips) without the built page, browser or not.
it('finds the built page in packages/web/dist', () => {
  expect(existsSync(join(dist, 'index.html')), MISSING_PAGE).toBe(true);
});

describe.skipIf(!browserPath && !inCi)('the web page in headless Chromium', () => {
  let server: StaticServer | undefined;
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;

  beforeAll(async () => {
    if (!existsSync(join(dist, 'index.html'))) {
      throw new Error(MISSING_PAGE);
    }
    if (!existsSync(bin)) throw new Error('packages/cli/dist/bin.js is missing: run `npm run build` first');
    if (!browserPath) throw new Error(`CI is set and ${NO_BROWSER}`);
    server = await serveStatic(dist);
    browser = await launchBrowser(browserPath);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  async function open(path: string): Promise<Watched> {
    context ??= await browser!.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    const pageErrors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('crash', () => pageErrors.push('the page crashed'));
    await page.goto(server!.url + path);
    return { page, consoleErrors, pageErrors };
  }

  /** Waits until the run on the page ends; its `data-status` (`ok` or `failed`). */
  async function finished(page: Page): Promise<string> {
    try {
      await page.waitForSelector('body[data-status="ok"], body[data-status="failed"]', {
        state: 'attached',
        timeout: 60_000,
      });
    } catch (e) {
      const status = await page
        .locator('body')
        .getAttribute('data-status')
        .catch(() => '?');
      const step = await page
        .locator('[data-output="step"]')
        .textContent()
        .catch(() => '?');
      throw new Error(`the page did not finish its run: data-status=${status}, step=${step}: ${e}`);
    }
    return (await page.locator('body').getAttribute('data-status')) ?? '';
  }

  /** A picture is shown and has something in it (a drawing with elements, or text). */
  async function hasPicture(page: Page, name: string): Promise<boolean> {
    const el = page.locator(`[data-picture="${name}"]`);
    if ((await el.count()) !== 1 || !(await el.isVisible())) return false;
    return el.evaluate((e) =>
      ['svg', 'CANVAS', 'IMG'].includes(e.tagName)
        ? e.tagName !== 'svg' || e.childElementCount > 0
        : (e.textContent ?? '').trim() !== '',
    );
  }

  for (const m of MACHINES) {
    it(`runs the ${m.name} machine from the URL as \`ddw run --json\` does`, async () => {
      const [cli, { page, consoleErrors, pageErrors }] = await Promise.all([
        ddw('run', ...cliArgs(m), '--json'),
        open(pageQuery(m)),
      ]);
      expect(cli.err).toBe('');
      const expected = JSON.parse(cli.out) as { ok: boolean };
      expect(await finished(page)).toBe(expected.ok ? 'ok' : 'failed');
      const report = await page.evaluate('window.ddwReport');
      expect(withoutTime(report)).toEqual(withoutTime(expected));

      for (const p of PICTURES) expect(await hasPicture(page, p), `picture ${p}`).toBe(true);
      if (m.vfio) expect(await hasPicture(page, 'host'), 'picture host').toBe(true);
      else expect(await page.locator('[data-picture="host"]').isVisible(), 'picture host').toBe(false);

      // docs/page.png: the page as it opens (ddw's default machine), at 1280x900.
      if (m === DDW_DEFAULT && process.env.DDW_SCREENSHOT === '1') {
        mkdirSync(join(root, 'docs'), { recursive: true });
        await page.screenshot({ path: join(root, 'docs/page.png') });
      }
      expect(pageErrors).toEqual([]);
      expect(consoleErrors).toEqual([]);
      await page.close();
    });
  }

  it('runs a machine given through the form', async () => {
    const m: Machine = { name: 'form', qemu: '-m 2G -device e1000e', guest: 'linux-6.1', qemuVersion: '7.2' };
    const [cli, { page, consoleErrors, pageErrors }] = await Promise.all([
      ddw('run', ...cliArgs(m), '--json'),
      open('index.html'),
    ]);
    await page.locator('textarea[data-input="qemu"]').fill(m.qemu);
    await page.locator('select[data-input="qemu-version"]').selectOption(m.qemuVersion!);
    await page.locator('select[data-input="guest"]').selectOption(m.guest!);
    await page.locator('input[data-input="host"]').fill('');
    // A run may already be on its way (the page's own default): let it end, then forget it.
    if ((await page.locator('body').getAttribute('data-status')) === 'running') await finished(page);
    await page.evaluate("window.ddwReport = undefined; document.body.removeAttribute('data-status')");
    await page.locator('button[data-action="run"]').click();
    expect(await finished(page)).toBe('ok');
    expect(withoutTime(await page.evaluate('window.ddwReport'))).toEqual(withoutTime(JSON.parse(cli.out)));
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    await page.close();
  });

  for (const qemu of BAD) {
    it(`refuses \`${qemu}\` with the CLI's one-line message`, async () => {
      const [cli, { page, pageErrors }] = await Promise.all([
        ddw('run', '--qemu-args', qemu, '--json'),
        open(pageQuery({ name: 'bad', qemu })),
      ]);
      expect(cli.code).toBe(2);
      expect(cli.out).toBe('');
      const message = cli.err.trimEnd();
      expect(message).toMatch(/^ddw: [^\n]+$/);
      expect(await finished(page)).toBe('failed');
      const shown = ((await page.locator('[data-output="error"]').textContent()) ?? '').trim();
      expect(shown.split('\n')).toHaveLength(1);
      expect([message, message.replace(/^ddw: /, '')]).toContain(shown);
      expect(pageErrors).toEqual([]);
      await page.close();
    });
  }

  /** Replays `trace` with `args` on the page; the summary line and the diff's text. */
  async function replayOnPage(page: Page, trace: string, args: string) {
    await page.locator('input[type=file][data-input="replay-trace"]').setInputFiles(trace);
    await page.locator('input[data-input="replay-qemu"]').fill(args);
    await page.locator('button[data-action="replay"]').click();
    const summary = page.locator('[data-output="replay-summary"]');
    await expect
      .poll(async () => (await summary.textContent()) ?? '', { timeout: 60_000 })
      .toMatch(/\d+ compared, \d+ differ/);
    const line = /\d+ compared, \d+ differ/.exec((await summary.textContent()) ?? '')![0];
    const diff = (await page.locator('[data-output="replay-diff"]').textContent()) ?? '';
    return { line, diff };
  }

  it('replays the public QEMU 7.2 samples as `ddw replay --check` does', async () => {
    const [same, differs, { page, consoleErrors, pageErrors }] = await Promise.all([
      ddw('replay', V1.file, '--qemu-args', V1.args, '--check'),
      ddw('replay', V2.file, '--qemu-args', '-m 4G', '--check'),
      open('index.html'),
    ]);
    expect(same.out).toMatch(/^\d+ compared, 0 differ\n$/);
    const agree = await replayOnPage(page, V1.file, V1.args);
    expect(agree.line).toBe(same.out.trimEnd());

    // The same trace on a machine without the 64K-only mask: 2 lines differ, and the diff shows them.
    const summary = differs.out.trimEnd().split('\n').at(-1)!;
    expect(summary).toMatch(/ compared, 2 differ$/);
    const other = await replayOnPage(page, V2.file, '-m 4G');
    expect(other.line).toBe(summary);
    expect(other.diff).toContain('spapr_iommu_ddw_query');
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    await page.close();
  });

  it('saves a snapshot, loads it back and shows its windows as `ddw snapshot load` does', async () => {
    const { page, consoleErrors, pageErrors } = await open(pageQuery(DEFAULT));
    expect(await finished(page)).toBe('ok');
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 30_000 }),
      page.locator('button[data-action="snapshot-save"]').click(),
    ]);
    const file = join(mkdtempSync(join(tmpdir(), 'ddw-web-')), download.suggestedFilename() || 'page.snap');
    await download.saveAs(file);

    // The page's file is a ddw snapshot: the CLI reads it and restores the same windows.
    const info = await ddw('snapshot', 'info', file);
    expect(info.err).toBe('');
    expect(info.code).toBe(0);
    const load = await ddw('snapshot', 'load', file, ...cliArgs(DEFAULT));
    expect(load.code).toBe(0);
    const windows = load.out.split('\n').filter((l) => /LIOBN 0x[0-9a-f]+:/.test(l));
    expect(windows.length).toBeGreaterThan(0);

    await page.locator('input[type=file][data-input="snapshot-file"]').setInputFiles(file);
    const shown = page.locator('[data-output="snapshot"]');
    await expect.poll(async () => (await shown.textContent()) ?? '', { timeout: 30_000 }).toMatch(/LIOBN/);
    // biome-ignore lint/performance/useDomNodeTextContent: Playwright's Locator.innerText (one line per rendered row)
    const text = (await shown.innerText()).split('\n').map((l) => l.trim());
    for (const w of windows) expect(text).toContain(w.trim());
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    await page.close();
  });

  it('downloads the timeline as trace-event JSON', async () => {
    const { page, consoleErrors, pageErrors } = await open(pageQuery(DEFAULT));
    expect(await finished(page)).toBe('ok');
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 30_000 }),
      page.locator('button[data-action="timeline"]').click(),
    ]);
    const file = join(mkdtempSync(join(tmpdir(), 'ddw-web-')), 'timeline.json');
    await download.saveAs(file);
    const timeline = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents?: unknown };
    expect(Array.isArray(timeline.traceEvents)).toBe(true);
    expect((timeline.traceEvents as unknown[]).length).toBeGreaterThan(0);
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    await page.close();
  });
});
