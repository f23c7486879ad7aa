import type { CommandIO } from './io.js';
import { type ReplayCommandOptions, replaySource } from './replay-source.js';
import { checkTraceFile, readTraceLines } from './trace-input.js';

/**
 * `ddw replay`: replays the file and prints the model's lines, or with `check` the comparison.
 * Returns the exit code: 0, or 1 when the model differs from QEMU. Input errors throw DdwErrors
 * (ConfigError for an unreadable file, a file with no trace line, a --check that compared nothing).
 */
export async function replayCommand(options: ReplayCommandOptions, io: CommandIO): Promise<number> {
  const { file, ...rest } = options;
  await checkTraceFile(file);
  return replaySource({ name: file, lines: () => readTraceLines(file) }, rest, io);
}
