/**
 * A QEMU trace log as lines, from chunks of text (a file's stream in Node, a File's in a browser):
 * memory stays at one chunk and one line whatever the size. Windows line ends (CRLF) and a UTF-8
 * byte order mark read as if absent. Browser-safe.
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

/** The lines of a text split into chunks (of any size), in order. */
export async function* linesOf(chunks: AsyncIterable<string>): AsyncGenerator<InputLine> {
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
  for await (const chunk of chunks) {
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
}
