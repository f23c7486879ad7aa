import { abortPendingFiles } from './files.js';

/** The exit code for each signal ddw handles: 128 + the signal number, as a shell reports it. */
export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;

/** How long an exit waits for stdout and stderr to drain (a reader that stopped reading). */
const FLUSH_TIMEOUT_MS = 2000;

let uninstall: (() => void) | undefined;

/**
 * Makes Ctrl-C (SIGINT) and SIGTERM end ddw cleanly. Call once, first thing, in the CLI's entry
 * point (never in a library: it takes the process's signals over).
 *
 * On the signal: every pending atomic file (openAtomicFile, writeFileAtomic) is aborted at once,
 * synchronously, so its temporary file is removed and its target keeps its previous content;
 * then what stdout and stderr still buffer is flushed (at most FLUSH_TIMEOUT_MS) and the process
 * exits with 130 (SIGINT) or 143 (SIGTERM). Nothing is printed. A second signal while flushing
 * exits at once. An interrupted writeFileAtomic never gets to report anything: the exit comes
 * first when nothing is buffered (stdout and stderr are synchronous for files, pipes and
 * terminals on Linux).
 *
 * JavaScript runs a signal listener only when the event loop turns: a long synchronous stretch
 * (building and running a large machine) finishes before the exit. Writing a file is
 * asynchronous, so an interrupted save stops within one WRITE_CHUNK.
 *
 * Idempotent; returns a function that removes the handlers (for tests and embedders).
 */
export function installSignalHandlers(): () => void {
  if (uninstall) return uninstall;
  let exiting = false;
  const listeners = Object.entries(SIGNAL_EXIT_CODES).map(([signal, code]) => {
    const listener = () => {
      abortPendingFiles();
      if (exiting) process.exit(code);
      exiting = true;
      exitAfterFlush(code);
    };
    process.on(signal, listener);
    return [signal, listener] as const;
  });
  uninstall = () => {
    for (const [signal, listener] of listeners) process.off(signal, listener);
    uninstall = undefined;
  };
  return uninstall;
}

/** Exits with `code` once stdout and stderr have handed everything they buffer to the system. */
function exitAfterFlush(code: number): void {
  const streams = [process.stdout, process.stderr].filter((s) => s.writableLength > 0 && !s.destroyed);
  if (streams.length === 0) process.exit(code);
  let left = streams.length;
  // The callback of an empty write runs once everything written before it is flushed (or failed).
  for (const stream of streams) stream.write('', () => --left === 0 && process.exit(code));
  setTimeout(() => process.exit(code), FLUSH_TIMEOUT_MS);
}

/**
 * Makes a failing stdout or stderr end ddw with one line instead of Node's unhandled-error stack:
 * a reader that went away (`ddw ... | head -1`: EPIPE) ends it quietly with the exit code so far,
 * as any Unix filter; another failure (ENOSPC on `> /dev/full`) is reported on stderr, exit 2.
 */
export function installOutputErrorHandlers(): void {
  const onError = (stream: 'stdout' | 'stderr') => (error: NodeJS.ErrnoException) => {
    abortPendingFiles();
    if (error.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    if (stream === 'stdout') {
      try {
        process.stderr.write(`ddw: cannot write the output: ${error.code ?? error.message}\n`);
      } catch {
        // stderr is gone too: the exit code is all that is left.
      }
    }
    process.exit(2);
  };
  process.stdout.on('error', onError('stdout'));
  process.stderr.on('error', onError('stderr'));
}
