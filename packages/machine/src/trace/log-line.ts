// Reading QEMU's log-backend trace lines back: what a real `qemu -trace ... -D file` wrote.

export interface ParsedTraceLine {
  /** The thread id of a `-msg timestamp=on` line. */
  pid?: number;
  /** Microseconds since the Unix epoch, from a `-msg timestamp=on` line. */
  timestamp?: number;
  name: string;
  /** Everything after the name and its space, unchanged. */
  text: string;
  /**
   * `key=value` tokens, trailing commas dropped. A key is the run of plain words before `=`, so
   * `page size=0x10000` gives `fields['page size']`; the first occurrence of a key wins.
   */
  fields: Record<string, string>;
  /** Tokens that are not part of a field, in order, trailing commas dropped. */
  positional: string[];
}

const LOG_LINE = /^(?:(\d+)@(\d+)\.(\d{6}):)?([A-Za-z_]\w*)(?: (.*))?$/;
const PLAIN_WORD = /^[A-Za-z]+$/;

/** Reads a QEMU log-backend trace line; undefined for a line that is not one. */
export function parseTraceLine(line: string): ParsedTraceLine | undefined {
  const match = LOG_LINE.exec(line.replace(/\r?\n$/, ''));
  if (!match) return undefined;
  const text = match[5] ?? '';
  const parsed: ParsedTraceLine = { name: match[4]!, text, fields: {}, positional: [] };
  if (match[1] !== undefined) {
    parsed.pid = Number(match[1]);
    parsed.timestamp = Number(match[2]) * 1e6 + Number(match[3]);
  }
  const pending: string[] = [];
  for (const token of text.split(/\s+/).filter((t) => t !== '')) {
    const field = /^([A-Za-z_]\w*)=(.*)$/.exec(token);
    if (field) {
      const key = [...pending, field[1]!].join(' ');
      pending.length = 0;
      if (!(key in parsed.fields)) parsed.fields[key] = field[2]!.replace(/,$/, '');
      continue;
    }
    if (PLAIN_WORD.test(token)) {
      pending.push(token);
      continue;
    }
    parsed.positional.push(...pending, token.replace(/,$/, ''));
    pending.length = 0;
  }
  parsed.positional.push(...pending);
  return parsed;
}
