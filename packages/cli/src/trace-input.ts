import type { Stats } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { FileError, fileError } from './files.js';

/**
 * Reading a QEMU trace log as a stream of lines: memory stays at one chunk and one line whatever
 * the file's size. Windows line ends (CRLF) and a UTF-8 byte order mark read as if absent.
 */

/** One line of the file. */
export interface InputLine {
  /** 1-based line number in the file. */
  readonly number: number;
  /** The line without its line end; only its first MAX_LINE_CHARS characters when `length` is set. */
  readonly text: string;
  /** Set on a line longer than MAX_LINE_CHARS: its full length (its text is cut). */
  readonly length?: number;
}

/** No QEMU trace line comes near this; a longer line is cut, so a file with no newline stays cheap. */
export const MAX_LINE_CHARS = 1 << 20;

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
  let number = 0;
  let pending = '';
  // The length of the current line when it is over the limit (only its start is kept).
  let overlong = 0;
  const line = (text: string, length: number): InputLine => {
    number++;
    let t = text.endsWith('\r') && length <= MAX_LINE_CHARS ? text.slice(0, -1) : text;
    if (number === 1 && t.startsWith('\uFEFF')) t = t.slice(1);
    return length > MAX_LINE_CHARS ? { number, text: t, length } : { number, text: t };
  };
  try {
    const chunks = stream[Symbol.asyncIterator]();
    for (;;) {
      let next: IteratorResult<string>;
      try {
        next = await chunks.next();
      } catch (error) {
        throw unreadable(file, error);
      }
      if (next.done) break;
      const chunk = next.value;
      let from = 0;
      for (;;) {
        const nl = chunk.indexOf('\n', from);
        if (nl < 0) break;
        const piece = chunk.slice(from, nl);
        from = nl + 1;
        if (overlong > 0) {
          yield line(pending, overlong + piece.length);
          overlong = 0;
        } else {
          const text = pending === '' ? piece : pending + piece;
          if (text.length > MAX_LINE_CHARS) yield line(text.slice(0, MAX_LINE_CHARS), text.length);
          else yield line(text, text.length);
        }
        pending = '';
      }
      const rest = chunk.slice(from);
      if (overlong > 0) {
        overlong += rest.length;
      } else if (pending.length + rest.length > MAX_LINE_CHARS) {
        overlong = pending.length + rest.length;
        pending = (pending + rest).slice(0, MAX_LINE_CHARS);
      } else {
        pending += rest;
      }
    }
    if (overlong > 0) yield line(pending, overlong);
    else if (pending !== '') yield line(pending, pending.length);
  } finally {
    stream.destroy();
  }
}
