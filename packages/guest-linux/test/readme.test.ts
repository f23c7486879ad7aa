import { readFileSync } from 'node:fs';
import { afterEach, expect, it, vi } from 'vitest';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const blocks = (lang: string) =>
  [...readme.matchAll(new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``, 'g'))].map((m) => m[1]!);

afterEach(() => {
  vi.restoreAllMocks();
});

it('the README example is readme-example.ts, and prints what the README says', async () => {
  expect(blocks('ts')[0]).toBe(readFileSync(new URL('./readme-example.ts', import.meta.url), 'utf8'));
  const printed: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    printed.push(args.map(String).join(' '));
  });
  await import('./readme-example.js');
  expect(`${printed.join('\n')}\n`).toBe(blocks('text')[0]);
});
