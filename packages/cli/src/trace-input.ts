import type { Stats } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { FileError, fileError } from './files.js';
import { type InputLine, linesOf } from './trace-lines.js';

/**
 * Reading a QEMU trace log as a stream of lines: memory stays at one chunk and one line whatever
 * the file's size. Windows line ends (CRLF) and a UTF-8 byte order mark read as if absent.
 */

export { type InputLine, MAX_LINE_CHARS } from './trace-lines.js';

/** The error for a trace file that cannot be read: `trace FILE: cannot read: no such file; check the path`. */
export function unreadable(file: string, error: unknown): FileError {
  return fileError('trace', file, 'read', error);
}

/**
 * Checks that `file` is a regular file that can be opened, so both passes of the replay can read
 * it; throws a ConfigError naming the file and the reason otherwise.
 */
export async function checkTraceFile(file: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    throw unreadable(file, error);
  }
  let stats: Stats;
  try {
    stats = await handle.stat();
  } catch (error) {
    throw unreadable(file, error);
  } finally {
    await handle.close().catch(() => undefined);
  }
  if (stats.isDirectory())
    throw unreadable(file, Object.assign(new Error('is a directory'), { code: 'EISDIR' }));
  if (!stats.isFile()) {
    throw new FileError(
      'trace',
      file,
      'read',
      'not a regular file (the replay reads it twice, which a pipe or device does not allow)',
      'save the trace to a file first',
    );
  }
}

/**
 * The lines of `file`, read in 64 KiB chunks. A read error (the file vanished, an I/O error)
 * throws the same ConfigError as checkTraceFile.
 */
export async function* readTraceLines(file: string): AsyncGenerator<InputLine> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    throw unreadable(file, error);
  }
  const stream = handle.createReadStream({ encoding: 'utf8', highWaterMark: 1 << 16 });
  try {
    yield* linesOf(chunksOf(file, stream));
  } finally {
    stream.destroy();
  }
}

/** The stream's chunks; a read error is the file's one-line error. */
async function* chunksOf(file: string, stream: AsyncIterable<unknown>): AsyncGenerator<string> {
  const chunks = stream[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<unknown>;
    try {
      next = await chunks.next();
    } catch (error) {
      throw unreadable(file, error);
    }
    if (next.done) return;
    yield next.value as string;
  }
}
