import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DdwError } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import {
  abortPendingFiles,
  FileError,
  openAtomicFile,
  openInputFile,
  readInputFile,
  WRITE_CHUNK,
  writeFileAtomic,
  writeFileAtomicStreamed,
} from '../src/files.js';

const scratch = () => mkdtempSync(join(tmpdir(), 'ddw-files-'));
/** The temporary files ddw leaves while writing `name` (and must not leave after). */
const temps = (dir: string, name = 'out.txt') =>
  readdirSync(dir).filter((n) =>
    new RegExp(`^\\.${name.replace('.', '\\.')}\\.ddw-\\d+-[0-9a-f]{8}\\.tmp$`).test(n),
  );
const isRoot = process.getuid?.() === 0;

function thrown(fn: () => unknown): FileError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(FileError);
    expect(error).toBeInstanceOf(DdwError);
    expect((error as Error).message).not.toContain('\n');
    return error as FileError;
  }
  throw new Error('expected a FileError');
}

async function rejected(promise: Promise<unknown>): Promise<FileError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(FileError);
    expect((error as Error).message).not.toContain('\n');
    return error as FileError;
  }
  throw new Error('expected a FileError');
}

describe('writeFileAtomic', () => {
  it('writes a new file and replaces an existing one, keeping its permissions, leaving no temporary file', async () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    await writeFileAtomic(file, 'first\n');
    expect(readFileSync(file, 'utf8')).toBe('first\n');
    chmodSync(file, 0o640);
    // Larger than one chunk, not a multiple of it: every byte arrives, in order.
    const big = new Uint8Array(3 * WRITE_CHUNK + 12345).map((_, i) => (i * 7) & 0xff);
    await writeFileAtomic(file, big);
    expect(Buffer.compare(readFileSync(file), Buffer.from(big))).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir)).toEqual(['out.txt']);
  });

  it('replaces the file a symbolic link points to, and keeps the link', async () => {
    const dir = scratch();
    writeFileSync(join(dir, 'real.txt'), 'old');
    symlinkSync('real.txt', join(dir, 'out.txt'));
    await writeFileAtomic(join(dir, 'out.txt'), 'new');
    expect(lstatSync(join(dir, 'out.txt')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, 'out.txt'))).toBe('real.txt');
    expect(readFileSync(join(dir, 'real.txt'), 'utf8')).toBe('new');
  });

  it('two concurrent writes to one path leave one of them, complete', async () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    const a = new Uint8Array(5 * WRITE_CHUNK).fill(0xaa);
    const b = new Uint8Array(4 * WRITE_CHUNK + 1).fill(0xbb);
    await Promise.all([writeFileAtomic(file, a), writeFileAtomic(file, b)]);
    const result = readFileSync(file);
    expect([a.length, b.length]).toContain(result.length);
    expect(result.every((x) => x === result[0])).toBe(true);
    expect(readdirSync(dir)).toEqual(['out.txt']);
  });

  it('refuses a missing directory, a directory, a path through a file, in one line naming the path', async () => {
    const dir = scratch();
    const missing = join(dir, 'NO/SUCH/DIR/x.snap');
    const e = await rejected(writeFileAtomic(missing, 'x', { what: 'snapshot file' }));
    expect(e.message).toBe(
      `snapshot file ${missing}: cannot write: no such directory; create the directory first, or write the file somewhere else`,
    );
    expect(e).toMatchObject({ path: missing, action: 'write', reason: 'no such directory', code: 'FILE' });
    expect(readdirSync(dir)).toEqual([]);

    expect((await rejected(writeFileAtomic(dir, 'x', { what: 'trace log' }))).message).toBe(
      `trace log ${dir}: cannot write: it is a directory; give a file name, not a directory`,
    );
    writeFileSync(join(dir, 'plain'), 'keep');
    expect((await rejected(writeFileAtomic(join(dir, 'plain', 'x'), 'x'))).message).toBe(
      `file ${join(dir, 'plain', 'x')}: cannot write: a part of the path is not a directory; check the path`,
    );
    expect((await rejected(writeFileAtomic('', 'x'))).message).toBe(
      'file : cannot write: the path is empty; give a file name',
    );
    expect(readFileSync(join(dir, 'plain'), 'utf8')).toBe('keep');
    expect(readdirSync(dir)).toEqual(['plain']);
  });

  it.skipIf(isRoot)('refuses a directory it may not write to, leaving the file there untouched', async () => {
    const dir = scratch();
    writeFileSync(join(dir, 'out.txt'), 'old');
    chmodSync(dir, 0o555);
    try {
      const e = await rejected(writeFileAtomic(join(dir, 'out.txt'), 'new'));
      expect(e.reason).toBe('permission denied');
      expect(readFileSync(join(dir, 'out.txt'), 'utf8')).toBe('old');
      expect(readdirSync(dir)).toEqual(['out.txt']);
    } finally {
      chmodSync(dir, 0o755);
    }
  });

  it('a failure after the temporary file was created removes it and leaves the target as it was', async () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    // The temporary file exists as soon as the call returns; the target then becomes a directory,
    // so the final rename fails.
    const writing = writeFileAtomic(file, new Uint8Array(2 * WRITE_CHUNK));
    expect(temps(dir)).toHaveLength(1);
    mkdirSync(file);
    const e = await rejected(writing);
    expect(e.message).toMatch(new RegExp(`^file ${file}: cannot write: it is a directory`));
    expect(readdirSync(dir)).toEqual(['out.txt']);
    expect(statSync(file).isDirectory()).toBe(true);

    // The temporary file removed by someone else: the rename fails, the old file stays.
    const other = join(dir, 'other.txt');
    writeFileSync(other, 'old');
    const second = writeFileAtomic(other, 'new');
    for (const t of temps(dir, 'other.txt')) unlinkSync(join(dir, t));
    expect((await rejected(second)).message).toMatch(
      /^file .*other\.txt: cannot write: its temporary file \.other\.txt\.ddw-\d+-[0-9a-f]{8}\.tmp was removed before it was complete$/,
    );
    expect(readFileSync(other, 'utf8')).toBe('old');
  });
});

describe('openAtomicFile', () => {
  it('changes nothing at the path until commit, then the file is everything written', () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    writeFileSync(file, 'previous\n');
    const log = openAtomicFile(file, { what: 'trace log' });
    const lines: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const line = `spapr_iommu_put liobn=0x80000001 ioba=0x${(i * 4096).toString(16)} tce=0x${i.toString(16)} ret=0\n`;
      lines.push(line);
      log.write(line);
    }
    // More than the buffer has gone to the temporary file; the target is still the previous file.
    expect(readFileSync(file, 'utf8')).toBe('previous\n');
    const [temp] = temps(dir);
    expect(statSync(join(dir, temp!)).size).toBeGreaterThan(0);
    log.write(new TextEncoder().encode('end\n'));
    log.commit();
    expect(readFileSync(file, 'utf8')).toBe(`${lines.join('')}end\n`);
    expect(readdirSync(dir)).toEqual(['out.txt']);
    expect(() => log.write('more')).toThrow(/trace log .*out\.txt is already committed/);
    log.abort(); // after commit: nothing to undo
    expect(readFileSync(file, 'utf8')).toMatch(/end\n$/);
  });

  it('abort removes the temporary file and leaves the previous file', () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    writeFileSync(file, 'previous\n');
    const log = openAtomicFile(file);
    log.write('x'.repeat(200_000));
    log.abort();
    log.abort();
    expect(readFileSync(file, 'utf8')).toBe('previous\n');
    expect(readdirSync(dir)).toEqual(['out.txt']);
  });

  it('fails at open, before anything is written, when the file cannot be written', () => {
    const dir = scratch();
    const e = thrown(() => openAtomicFile(join(dir, 'no', 'x.log'), { what: 'trace log' }));
    expect(e.message).toBe(
      `trace log ${join(dir, 'no', 'x.log')}: cannot write: no such directory; create the directory first, or write the file somewhere else`,
    );
  });

  it('a commit that fails removes the temporary file', () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    const log = openAtomicFile(file);
    log.write('data');
    mkdirSync(file);
    expect(thrown(() => log.commit()).reason).toBe('it is a directory');
    expect(readdirSync(dir)).toEqual(['out.txt']);
  });

  it('writes a device such as /dev/null directly, since no rename can replace it', () => {
    const log = openAtomicFile('/dev/null');
    log.write('discarded\n');
    log.commit();
    expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
  });

  it('abortPendingFiles aborts every file not yet committed', async () => {
    const dir = scratch();
    writeFileSync(join(dir, 'a.txt'), 'a');
    const a = openAtomicFile(join(dir, 'a.txt'));
    a.write('new a');
    const b = openAtomicFile(join(dir, 'b.txt'));
    const c = openAtomicFile(join(dir, 'c.txt'));
    c.commit();
    const d = writeFileAtomic(join(dir, 'd.txt'), new Uint8Array(3 * WRITE_CHUNK));
    expect(abortPendingFiles()).toBe(3);
    expect((await rejected(d)).message).toMatch(
      /^file .*d\.txt: cannot write: interrupted; the previous file is unchanged$/,
    );
    expect(readdirSync(dir).sort()).toEqual(['a.txt', 'c.txt']);
    expect(readFileSync(join(dir, 'a.txt'), 'utf8')).toBe('a');
    expect(() => b.commit()).toThrow(/is already aborted/);
  });
});

describe('readInputFile', () => {
  it('reads bytes or text', () => {
    const dir = scratch();
    writeFileSync(join(dir, 'd.json'), '{"ram":"1G"}');
    expect(readInputFile(join(dir, 'd.json'), 'description file', 'utf8')).toBe('{"ram":"1G"}');
    expect([...readInputFile(join(dir, 'd.json'), 'description file').subarray(0, 2)]).toEqual([0x7b, 0x22]);
  });

  it('turns a missing file and a directory into one line naming the path', () => {
    const dir = scratch();
    const missing = join(dir, 'nope.json');
    expect(thrown(() => readInputFile(missing, 'description file')).message).toBe(
      `description file ${missing}: cannot read: no such file; check the path`,
    );
    expect(thrown(() => readInputFile(dir, 'trace', 'utf8')).message).toBe(
      `trace ${dir}: cannot read: it is a directory; give the path of a file`,
    );
  });

  it.skipIf(isRoot)('turns a file it may not read into one line', () => {
    const dir = scratch();
    writeFileSync(join(dir, 'secret'), 'x');
    chmodSync(join(dir, 'secret'), 0o000);
    expect(thrown(() => readInputFile(join(dir, 'secret'), 'trace')).message).toBe(
      `trace ${join(dir, 'secret')}: cannot read: permission denied; check the file's permissions`,
    );
  });
});

describe('writeFileAtomicStreamed', () => {
  it('writes each chunk as it comes (the caller may reuse it), then puts the file in place', async () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    writeFileSync(file, 'old');
    const chunk = new Uint8Array(3);
    const pending = writeFileAtomicStreamed(file, (write) => {
      for (let i = 0; i < 5; i++) {
        chunk.fill(0x61 + i);
        write(chunk);
      }
      // Written, not yet in place.
      expect(readFileSync(file, 'utf8')).toBe('old');
      expect(temps(dir)).toHaveLength(1);
      expect(statSync(join(dir, temps(dir)[0]!)).size).toBe(15);
      return 'done';
    });
    expect(await pending).toBe('done');
    expect(readFileSync(file, 'utf8')).toBe('aaabbbcccdddeee');
    expect(temps(dir)).toEqual([]);
  });

  it('what produce throws comes out as it is, the temporary file removed and the file unchanged', async () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    writeFileSync(file, 'old');
    const failure = new Error('cannot encode');
    await expect(
      writeFileAtomicStreamed(file, (write) => {
        write(new Uint8Array([1, 2, 3]));
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(readFileSync(file, 'utf8')).toBe('old');
    expect(temps(dir)).toEqual([]);
    // A path that cannot be written fails before produce runs.
    let ran = false;
    const e = await rejected(
      writeFileAtomicStreamed(join(dir, 'no/such/dir/x'), () => {
        ran = true;
      }),
    );
    expect(e.reason).toBe('no such directory');
    expect(ran).toBe(false);
  });

  it('an abort (the SIGINT handler) between the writing and the commit leaves the previous file', async () => {
    const dir = scratch();
    const file = join(dir, 'out.txt');
    writeFileSync(file, 'old');
    const pending = writeFileAtomicStreamed(file, (write) => write(new Uint8Array([0x6e, 0x65, 0x77])), {
      what: 'snapshot file',
    });
    // What a signal handler does while the content is written synchronously: it runs next.
    expect(abortPendingFiles()).toBe(1);
    const e = await rejected(pending);
    expect(e.message).toBe(
      `snapshot file ${file}: cannot write: interrupted; the previous file is unchanged`,
    );
    expect(readFileSync(file, 'utf8')).toBe('old');
    expect(temps(dir)).toEqual([]);
  });
});

describe('openInputFile', () => {
  it('reads a file at positions, without reading it whole', () => {
    const dir = scratch();
    const file = join(dir, 'in.bin');
    writeFileSync(
      file,
      Uint8Array.from({ length: 100_000 }, (_, i) => i & 0xff),
    );
    const input = openInputFile(file, 'snapshot file');
    expect(input.size).toBe(100_000);
    expect([...input.read(99_998, 2)]).toEqual([99_998 & 0xff, 99_999 & 0xff]);
    const a = input.read(1000, 50_000);
    expect(a.length).toBe(50_000);
    expect(a[0]).toBe(1000 & 0xff);
    // Each read is its own buffer: a read keeps what it got.
    input.read(1000, 10).fill(0);
    expect(a[0]).toBe(1000 & 0xff);
    input.close();
    input.close();
    expect(() => input.read(0, 1)).toThrow(/is already closed/);
  });

  it('a missing file, a directory, a file that shrinks: one line naming the path', () => {
    const dir = scratch();
    expect(thrown(() => openInputFile(join(dir, 'nope'), 'snapshot file')).message).toBe(
      `snapshot file ${join(dir, 'nope')}: cannot read: no such file; check the path`,
    );
    expect(thrown(() => openInputFile(dir, 'snapshot file')).message).toBe(
      `snapshot file ${dir}: cannot read: it is a directory; give the path of a file`,
    );
    const file = join(dir, 'in.bin');
    writeFileSync(file, new Uint8Array(100));
    const input = openInputFile(file, 'snapshot file');
    writeFileSync(file, new Uint8Array(10));
    expect(thrown(() => input.read(0, 100)).message).toBe(
      `snapshot file ${file}: cannot read: it ends at byte 10, it had 100 bytes; was it changed while it was read?`,
    );
    input.close();
  });
});
