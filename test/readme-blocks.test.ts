/**
 * Every fenced code block of README.md and packages/*\/README.md is run here, or marked as a fragment.
 *
 * The marker: an HTML comment alone on the line right before the opening fence (GitHub does not show it),
 *
 *     <!-- fragment -->
 *     <!-- fragment: why it cannot run -->
 *
 * says "this block is not run": a partial snippet (names defined elsewhere), a shell session that
 * installs or builds, a synopsis, or sample output. Use it only for what genuinely cannot run.
 *
 * Blocks not marked:
 * - ```ts / ```typescript: written to test/.readme-blocks/ (gitignored, inside the repo so `@ddw/*`
 *   resolve through the workspace) and run with tsx in one child process
 *   (test/support/readme-block-runner.ts imports each block as a module, in order); each must finish
 *   without throwing. Relative imports (`./examples/...`) are resolved from the README's directory.
 *   Comments stating values (`// [0, 1, ...]`) are not checked.
 * - ```sh: every command must be `npm start -- ARGS`, `ddw ARGS` or `npx ddw ARGS`; each is run as
 *   `node packages/cli/dist/bin.js ARGS` (built by `npm test`'s pretest, or `npm run build`) in a
 *   scratch directory, and must exit 0, or N when the command is followed by a `# exit N` comment line.
 *   Arguments naming a file of the repository (`test/fixtures/...`) are given as absolute paths.
 *   Other comment lines after a command are its expected output: each must appear in stdout + stderr.
 *   Any other command (`npm ci`, `npm install`, `git ...`) makes the block a fragment to mark.
 * - ```json: must parse.
 * - any other block (```text, a bare ```): must be marked.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const scratch = join(root, 'test', '.readme-blocks');
const tsx = join(root, 'node_modules', '.bin', 'tsx');
const cliBin = join(root, 'packages', 'cli', 'dist', 'bin.js');
const BLOCK_TIMEOUT_MS = 50_000;

interface Block {
  /** README path relative to the repository root. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  code: string;
  fragment: boolean;
}

const FRAGMENT = /^<!--\s*fragment(?::[^>]*)?\s*-->$/;

/** Every fenced block of a Markdown file, indented ones (inside list items) included. */
function findBlocks(file: string, text: string): Block[] {
  const lines = text.split(/\r?\n/);
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]!);
    if (!open) continue;
    const [, indent = '', fence = '', lang = ''] = open;
    const body: string[] = [];
    let j = i + 1;
    while (
      j < lines.length &&
      !(lines[j]!.trim().startsWith(fence) && lines[j]!.trim() === fence[0]!.repeat(lines[j]!.trim().length))
    ) {
      const l = lines[j]!;
      body.push(l.startsWith(indent) ? l.slice(indent.length) : l.trimStart());
      j++;
    }
    if (j >= lines.length) throw new Error(`${file}:${i + 1}: unclosed code fence`);
    const before = i > 0 ? lines[i - 1]!.trim() : '';
    blocks.push({
      file,
      line: i + 1,
      lang: lang.toLowerCase(),
      code: body.join('\n'),
      fragment: FRAGMENT.test(before),
    });
    i = j;
  }
  return blocks;
}

function readmes(): string[] {
  const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(root, 'packages', e.name, 'README.md')))
    .map((e) => `packages/${e.name}/README.md`);
  return ['README.md', ...packages.sort()];
}

function run(
  command: string,
  args: string[],
  cwd: string,
): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), BLOCK_TIMEOUT_MS);
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, out });
    });
  });
}

/** Splits a shell command line into words: single and double quotes, backslash escapes. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unclosed ' in: ${line}`);
      word += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (c === '"') {
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        word += line[i];
        i++;
      }
      if (i >= line.length) throw new Error(`unclosed " in: ${line}`);
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      word += line[++i];
      inWord = true;
    } else if (c === '#' && !inWord) {
      break;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

interface ShCommand {
  args: string[];
  exit: number;
  expect: string[];
  text: string;
}

/** The commands of a ```sh block; throws on a command that is not `ddw` or `npm start --`. */
function shCommands(code: string): ShCommand[] {
  const commands: ShCommand[] = [];
  const lines = code.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let text = lines[i]!.trim();
    if (text === '') continue;
    if (text.startsWith('#')) {
      const last = commands.at(-1);
      const comment = text.replace(/^#\s?/, '');
      const exit = /^exit (\d+)$/.exec(comment);
      if (last && exit) last.exit = Number(exit[1]);
      else if (last) last.expect.push(comment);
      continue;
    }
    while (text.endsWith('\\') && i + 1 < lines.length) text = `${text.slice(0, -1)} ${lines[++i]!.trim()}`;
    const words = shellWords(text);
    let args: string[];
    if (words[0] === 'ddw') args = words.slice(1);
    else if (words[0] === 'npx' && words[1] === 'ddw') args = words.slice(2);
    else if (words[0] === 'npm' && words[1] === 'start' && (words.length === 2 || words[2] === '--'))
      args = words.slice(3);
    else throw new Error(`not a ddw command (mark the block <!-- fragment -->): ${text}`);
    commands.push({ args, exit: 0, expect: [], text });
  }
  return commands;
}

/** Rewrites relative import specifiers so they resolve from the README's directory. */
function rebaseImports(code: string, readmeDir: string, fromDir: string): string {
  return code.replace(
    /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\2/g,
    (_m, lead, q, spec) => {
      let rel = relative(fromDir, resolve(readmeDir, spec)).replaceAll('\\', '/');
      if (!rel.startsWith('.')) rel = `./${rel}`;
      return `${lead}${q}${rel}${q}`;
    },
  );
}

function slug(block: Block): string {
  return `${block.file.replace(/\/README\.md$|\.md$/, '').replace(/[^\w-]+/g, '_')}-L${block.line}`;
}

const blocks = readmes().flatMap((file) => findBlocks(file, readFileSync(join(root, file), 'utf8')));
const name = (b: Block) => `${b.file}:${b.line} \`\`\`${b.lang}`;

beforeAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('README code blocks', () => {
  it('finds the blocks of every README', () => {
    expect(blocks.length).toBeGreaterThan(20);
    for (const file of readmes()) expect(blocks.some((b) => b.file === file)).toBe(true);
  });

  it('every block not run is marked as a fragment', () => {
    const unrunnable = blocks.filter(
      (b) => !b.fragment && !['ts', 'typescript', 'sh', 'json'].includes(b.lang),
    );
    expect(unrunnable.map(name)).toEqual([]);
  });

  for (const block of blocks.filter((b) => !b.fragment && b.lang === 'json')) {
    it(`${name(block)} parses`, () => {
      expect(() => JSON.parse(block.code)).not.toThrow();
    });
  }
});

const tsBlocks = blocks.filter((b) => !b.fragment && (b.lang === 'ts' || b.lang === 'typescript'));
const tsFile = (b: Block) => join(scratch, `${slug(b)}.ts`);
const RESULTS_PREFIX = 'README-BLOCK-RESULTS ';
let tsRun: Promise<{ results: Record<string, { ok: boolean; error?: string }>; out: string }> | undefined;

/** Runs every ```ts block, in order, in one tsx process (test/support/readme-block-runner.ts). */
function runTsBlocks() {
  tsRun ??= (async () => {
    for (const block of tsBlocks) {
      const code = rebaseImports(block.code, dirname(join(root, block.file)), scratch);
      writeFileSync(tsFile(block), `${code}\n`);
    }
    const runner = join(root, 'test', 'support', 'readme-block-runner.ts');
    const result = await run(tsx, [runner, ...tsBlocks.map(tsFile)], root);
    const last = result.out.split('\n').find((l) => l.startsWith(RESULTS_PREFIX));
    const results = last ? JSON.parse(last.slice(RESULTS_PREFIX.length)) : {};
    return { results, out: `exit ${result.code ?? result.signal}\n${result.out}` };
  })();
  return tsRun;
}

describe.concurrent('README code blocks that run', () => {
  for (const block of tsBlocks) {
    it(`${name(block)} runs with tsx`, async () => {
      const { results, out } = await runTsBlocks();
      const result = results[tsFile(block)];
      expect(result, out).toBeDefined();
      expect(result?.error ?? '', out).toBe('');
    });
  }

  for (const block of blocks.filter((b) => !b.fragment && b.lang === 'sh')) {
    it(`${name(block)} runs through the built CLI`, async () => {
      expect(existsSync(cliBin), 'packages/cli/dist/bin.js: run `npm run build` first').toBe(true);
      const commands = shCommands(block.code);
      expect(commands.length).toBeGreaterThan(0);
      const cwd = join(scratch, slug(block));
      mkdirSync(cwd, { recursive: true });
      for (const command of commands) {
        const args = command.args.map((a) =>
          !a.startsWith('-') && !isAbsolute(a) && a.includes('/') && existsSync(join(root, a))
            ? join(root, a)
            : a,
        );
        const result = await run(process.execPath, [cliBin, ...args], cwd);
        expect({ command: command.text, code: result.code }, result.out).toEqual({
          command: command.text,
          code: command.exit,
        });
        for (const line of command.expect) expect(result.out, command.text).toContain(line);
      }
    });
  }
});
