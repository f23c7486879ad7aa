import { accessSync, constants } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

/** Where a Chromium is looked for, in order (`DDW_CHROMIUM` first, when set). */
export const BROWSER_CANDIDATES: readonly string[] = [
  '/usr/bin/chromium-headless-shell',
  '/usr/lib/chromium/chromium-headless-shell',
  '/usr/lib/chromium/headless_shell',
  '/usr/bin/chromium',
];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The browser to test with: `DDW_CHROMIUM` when set (an error when it is not executable, so a
 * typo does not silently fall back), else the first executable candidate, else undefined.
 */
export function findBrowser(): string | undefined {
  const forced = process.env.DDW_CHROMIUM;
  if (forced) {
    if (!executable(forced)) throw new Error(`DDW_CHROMIUM=${forced} is not an executable file`);
    return forced;
  }
  return BROWSER_CANDIDATES.find(executable);
}

/** Launches `executablePath` headless through playwright-core (no sandbox when running as root). */
export function launchBrowser(executablePath: string): Promise<Browser> {
  const args = ['--disable-gpu', '--disable-dev-shm-usage'];
  if (process.getuid?.() === 0) args.push('--no-sandbox');
  return chromium.launch({ executablePath, headless: true, args, timeout: 30_000 });
}
