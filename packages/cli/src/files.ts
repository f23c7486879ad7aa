import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fchmodSync,
  fstatSync,
  fsync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  type Stats,
  statSync,
  unlinkSync,
  write,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DdwError, messageOf } from '@ddw/machine';

/**
 * The one way ddw writes a file (whole, progressively, or streamed synchronously), and the way
 * it reads an input file (whole, or at positions for a snapshot).
 *
 * A file is written to a temporary file in the same directory (`.<name>.ddw-<pid>-<random>.tmp`),
 * flushed to disk (fsync) and renamed over the target, so the target is either the previous file,
 * untouched, or the complete new one; never a truncated mix, whatever happens meanwhile (an error,
 * Ctrl-C, a concurrent writer, a crash). On a failure, an abort or a normal process exit before
 * the commit, the temporary file is removed. Only a SIGKILL (or a power cut) can leave one
 * behind, recognisable by that name. A concurrent writer of the same path gets its own temporary
 * file; the last rename wins and the file is always one writer's complete output.
 *
 * An existing file keeps its permission bits (not its owner). A symbolic link is followed: the
 * file it points to is replaced, the link stays. A target that is not a regular file (a FIFO, a
 * terminal, /dev/null) or is one of the process's own streams (/dev/stdout, /dev/stderr,
 * /dev/fd/N, /proc/...) cannot be replaced by a rename; it is opened for appending and written
 * directly, as QEMU's `-D /dev/stderr` does.
 *
 * Errors are FileErrors: one line naming what the file is for, the path, the reason and a fix.
 *
 * Why not the write-file-atomic package: a trace log is written progressively (openAtomicFile),
 * which it cannot do, and one implementation keeps one list of pending files for the SIGINT
 * handler (signals.ts) to abort. It also names its temporary files `<name>.<hash>` (not
 * recognisable as ours after a SIGKILL), writes a buffer with a single write() call (a short
 * write is not retried), and cleans up through its own signal-exit hook, a second signal path.
 */

export type FileAction = 'read' | 'write';

/** A file ddw could not read or write: `<what> <path>: cannot <action>: <reason>; <fix>`. */
export class FileError extends DdwError {
  override name = 'FileError';
  /** What the file is for: "snapshot file", "trace log", "description file". */
  readonly what: string;
  /** The path as the user gave it. */
  readonly path: string;
  readonly action: FileAction;
  /** Why, in words: "no such directory", "permission denied", "it is a directory". */
  readonly reason: string;
  readonly fix: string | undefined;

  constructor(
    what: string,
    path: string,
    action: FileAction,
    reason: string,
    fix?: string,
    options: { cause?: unknown } = {},
  ) {
    super('FILE', `${what} ${path}: cannot ${action}: ${reason}${fix ? `; ${fix}` : ''}`, options);
    this.what = what;
    this.path = path;
    this.action = action;
    this.reason = reason;
    this.fix = fix;
  }
}

/** Turns what a file-system call threw into a FileError naming `path` (never a temporary name). */
export function fileError(what: string, path: string, action: FileAction, error: unknown): FileError {
  if (error instanceof FileError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  const { reason, fix } = explain(typeof code === 'string' ? code : undefined, action, error);
  return new FileError(what, path, action, reason, fix, { cause: error });
}

function explain(
  code: string | undefined,
  action: FileAction,
  error: unknown,
): { reason: string; fix?: string } {
  const elsewhere = 'write the file somewhere else';
  switch (code) {
    case 'ENOENT':
      return action === 'read'
        ? { reason: 'no such file', fix: 'check the path' }
        : { reason: 'no such directory', fix: `create the directory first, or ${elsewhere}` };
    case 'ENOTDIR':
      return { reason: 'a part of the path is not a directory', fix: 'check the path' };
    case 'EISDIR':
      return {
        reason: 'it is a directory',
        fix: action === 'read' ? 'give the path of a file' : 'give a file name, not a directory',
      };
    case 'EACCES':
    case 'EPERM':
      return {
        reason: 'permission denied',
        fix:
          action === 'read'
            ? "check the file's permissions"
            : `check the directory's permissions, or ${elsewhere}`,
      };
    case 'EROFS':
      return { reason: 'read-only file system', fix: elsewhere };
    case 'ENOSPC':
      return { reason: 'no space left on the device', fix: `free some space, or ${elsewhere}` };
    case 'EDQUOT':
      return { reason: 'disk quota exceeded', fix: `free some space, or ${elsewhere}` };
    case 'ENAMETOOLONG':
      return { reason: 'the name is too long', fix: 'use a shorter path' };
    case 'ELOOP':
      return { reason: 'too many levels of symbolic links', fix: 'check the path' };
    case 'EMFILE':
    case 'ENFILE':
      return { reason: 'too many open files' };
    default: {
      // Node's "EIO: i/o error, write '/tmp/x'": keep the words, drop the call and the path.
      const message = messageOf(error);
      return { reason: /^[A-Z0-9_]+: ([^,]+)/.exec(message)?.[1] ?? message };
    }
  }
}

/**
 * Reads a whole input file (a snapshot, a machine description, a trace). A missing file, a
 * directory, a file it may not read: a FileError, `description file x.json: cannot read: no such
 * file; check the path`.
 */
export function readInputFile(path: string, what: string): Buffer;
export function readInputFile(path: string, what: string, encoding: 'utf8'): string;
export function readInputFile(path: string, what: string, encoding?: 'utf8'): Buffer | string {
  try {
    return encoding === undefined ? readFileSync(path) : readFileSync(path, encoding);
  } catch (error) {
    throw fileError(what, path, 'read', error);
  }
}

/** An input file read at positions, as a snapshot is: a SnapshotSource over the file. */
export interface InputFile {
  /** Its size when it was opened. */
  readonly size: number;
  /** `length` bytes from `offset` (a new buffer); a FileError if they cannot be read. */
  read(offset: number, length: number): Uint8Array;
  /** Closes it; safe to call more than once. */
  close(): void;
}

/** How much one readSync asks for (it takes at most 2^31 - 1 bytes). */
const READ_PIECE = 1 << 30;

/**
 * Opens an input file to read it at positions (fs.readSync), never as a whole: what a large
 * snapshot needs. A missing file, a directory, a file it may not read: a FileError, as
 * readInputFile's. Something that is not a regular file (a FIFO) has no positions: it is read
 * whole once.
 */
export function openInputFile(path: string, what: string): InputFile {
  let fd: number | null;
  let size: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw fileError(what, path, 'read', error);
  }
  try {
    const stats = fstatSync(fd);
    if (stats.isDirectory())
      throw Object.assign(new Error('EISDIR: illegal operation on a directory'), { code: 'EISDIR' });
    if (!stats.isFile()) {
      const bytes = new Uint8Array(readFileSync(fd));
      closeSync(fd);
      return {
        size: bytes.length,
        read: (offset, length) => bytes.slice(offset, offset + length),
        close() {},
      };
    }
    size = stats.size;
  } catch (error) {
    closeSync(fd);
    throw fileError(what, path, 'read', error);
  }
  return {
    size,
    read(offset, length) {
      if (fd === null) throw new DdwError('FILE_STATE', `${what} ${path} is already closed`);
      const out = Buffer.allocUnsafe(length);
      try {
        for (let got = 0; got < length; ) {
          const n = readSync(fd, out, got, Math.min(length - got, READ_PIECE), offset + got);
          if (n === 0)
            throw new FileError(
              what,
              path,
              'read',
              `it ends at byte ${offset + got}, it had ${size} bytes`,
              'was it changed while it was read?',
            );
          got += n;
        }
      } catch (error) {
        throw fileError(what, path, 'read', error);
      }
      return out;
    },
    close() {
      if (fd === null) return;
      const open = fd;
      fd = null;
      try {
        closeSync(open);
      } catch {
        // Closing is all that is left to do with it.
      }
    },
  };
}

/** A file being written progressively (see openAtomicFile). */
export interface AtomicFile {
  /** Appends to the file; a FileError (and the temporary file removed) if that fails. */
  write(data: string | Uint8Array): void;
  /** Flushes, syncs and renames into place: from here on `path` is the new file. */
  commit(): void;
  /** Removes the temporary file; `path` stays what it was. Safe to call more than once, or after commit. */
  abort(): void;
}

/** How a file is named in error messages. */
export interface AtomicFileOptions {
  /** What the file is for, in error messages: "snapshot file", "trace log". Default "file". */
  what?: string;
}

/**
 * Opens `path` for writing through a temporary file; nothing at `path` changes until commit().
 * Fails at once (a FileError) if the file could not be written: no such directory, permission
 * denied, a directory. Writes are buffered; a pending file is aborted when the process exits
 * without committing it, and by abortPendingFiles() (the SIGINT handler).
 */
export function openAtomicFile(path: string, options: AtomicFileOptions = {}): AtomicFile {
  const file = new PendingFile(path, options.what ?? 'file');
  return {
    write: (data) => file.write(data),
    commit: () => file.commit(),
    abort: () => file.abort(),
  };
}

/**
 * Writes `data` to `path` atomically (see the module comment). The bytes go out in chunks of
 * WRITE_CHUNK on the thread pool, so the event loop (and a SIGINT handler) runs while a large
 * file is written; the returned promise settles once the file is in place, or rejects with a
 * FileError with `path` unchanged. `data` must not change until then (it is not copied).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: AtomicFileOptions = {},
): Promise<void> {
  const file = new PendingFile(path, options.what ?? 'file');
  try {
    await file.writeAsync(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    await file.commitAsync();
  } catch (error) {
    file.abort();
    throw file.error(error);
  }
}

/**
 * Writes `path` atomically (see the module comment) with what `produce` writes, synchronously,
 * through the function it is given: each chunk goes to the temporary file at once (fs.writeSync,
 * no copy kept, so the caller may reuse it), then the file is synced and renamed into place
 * asynchronously. The event loop turns once between the two, so a SIGINT that came while the
 * content was written aborts it there (abortPendingFiles): `path` keeps its previous content.
 * What `produce` throws is thrown as it is (a FileError if writing failed), with the temporary
 * file removed; the promise resolves to what `produce` returned once the file is in place.
 */
export async function writeFileAtomicStreamed<T>(
  path: string,
  produce: (write: (chunk: Uint8Array) => void) => T,
  options: AtomicFileOptions = {},
): Promise<T> {
  const file = new PendingFile(path, options.what ?? 'file');
  let result: T;
  try {
    result = produce((chunk) => file.writeThrough(chunk));
  } catch (error) {
    file.abort();
    throw error;
  }
  try {
    await new Promise<void>((resolve) => setImmediate(resolve));
    await file.commitAsync();
  } catch (error) {
    file.abort();
    throw file.error(error);
  }
  return result;
}

/**
 * Aborts every file opened and not yet committed or aborted (their temporary files removed,
 * their targets untouched); returns how many there were. Synchronous, so a signal handler or a
 * process 'exit' listener can call it.
 */
export function abortPendingFiles(): number {
  const files = [...pending];
  for (const file of files) file.abort();
  return files.length;
}

/** How much one asynchronous write hands to the kernel; the event loop runs between two. */
export const WRITE_CHUNK = 1 << 20;
/** /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N: a stream of this process, maybe redirected to a file. */
const STANDARD_STREAM = /^\/(dev\/(stdout|stderr|fd\/)|proc\/)/;
/** How much a progressively written file buffers before it writes. */
const BUFFER_BYTES = 1 << 16;

const pending = new Set<PendingFile>();
let exitHookInstalled = false;

class PendingFile {
  private fd: number | null;
  /** The temporary file, or null when the target is written directly. */
  private readonly temp: string | null;
  /** The file the rename replaces: the target of a symbolic link, else `path`. */
  private readonly final: string;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  /** An asynchronous write or fsync on `fd` is in flight: `fd` must not be closed under it. */
  private busy = false;

  constructor(
    private readonly path: string,
    private readonly what: string,
  ) {
    if (path === '') throw new FileError(what, path, 'write', 'the path is empty', 'give a file name');
    let final = path;
    try {
      final = realpathSync(path);
    } catch {
      // No such file yet (or a dangling link): the path itself is created.
    }
    let stats: Stats | undefined;
    try {
      stats = statSync(final);
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'ENOENT') throw this.error(error);
    }
    if (stats?.isDirectory() || /[\\/]$/.test(path))
      throw new FileError(what, path, 'write', 'it is a directory', 'give a file name, not a directory');
    this.final = final;
    try {
      if ((stats && !stats.isFile()) || STANDARD_STREAM.test(path)) {
        // A device, a FIFO, /dev/stderr: no rename can replace it; write it as it is.
        this.temp = null;
        this.fd = openSync(path, 'a');
      } else {
        const mode = stats ? stats.mode & 0o7777 : undefined;
        const [temp, fd] = openTemp(final, mode);
        this.temp = temp;
        this.fd = fd;
        // The umask may have cleared bits of the old file's mode; it keeps them.
        if (mode !== undefined) fchmodSync(fd, mode);
      }
    } catch (error) {
      this.closeFd();
      throw this.error(error);
    }
    pending.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', abortPendingFiles);
    }
  }

  /** A FileError about this file (never naming the temporary file). */
  error(error: unknown): FileError {
    return fileError(this.what, this.path, 'write', error);
  }

  write(data: string | Uint8Array): void {
    this.expectOpen();
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    this.buffered.push(bytes);
    this.bufferedBytes += bytes.length;
    if (this.bufferedBytes >= BUFFER_BYTES) this.guard(() => this.flush());
  }

  /** Writes `data` now, synchronously, after what is buffered; `data` is not kept. */
  writeThrough(data: Uint8Array): void {
    this.expectOpen();
    this.guard(() => {
      this.flush();
      for (let at = 0; at < data.length; ) at += writeSync(this.fd!, data, at, data.length - at);
    });
  }

  commit(): void {
    this.expectOpen();
    this.guard(() => {
      this.flush();
      if (this.temp !== null) fsyncSync(this.fd!);
      this.place();
    });
  }

  abort(): void {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    pending.delete(this);
    if (this.temp !== null) {
      try {
        unlinkSync(this.temp);
      } catch {
        // Already gone: nothing to clean up.
      }
    }
    // An in-flight asynchronous write still uses the descriptor; it is closed when that returns.
    if (!this.busy) this.closeFd();
  }

  async writeAsync(data: Uint8Array): Promise<void> {
    this.expectOpen();
    for (let at = 0; at < data.length; ) {
      const end = Math.min(at + WRITE_CHUNK, data.length);
      at += await this.inFlight((fd, done) => write(fd, data, at, end - at, null, done));
    }
  }

  async commitAsync(): Promise<void> {
    if (this.state === 'aborted')
      throw new FileError(this.what, this.path, 'write', 'interrupted', 'the previous file is unchanged');
    this.expectOpen();
    if (this.temp !== null) await this.inFlight((fd, done) => fsync(fd, (error) => done(error, 0)));
    this.guard(() => this.place());
  }

  /** One asynchronous call on the descriptor; an abort while it runs rejects it once it returns. */
  private async inFlight(
    call: (fd: number, done: (error: NodeJS.ErrnoException | null, n: number) => void) => void,
  ): Promise<number> {
    this.busy = true;
    let result: number;
    try {
      result = await new Promise<number>((resolve, reject) =>
        call(this.fd!, (error, n) => (error ? reject(error) : resolve(n))),
      );
    } finally {
      this.busy = false;
      if (this.state === 'aborted') this.closeFd();
    }
    if (this.state === 'aborted')
      throw new FileError(this.what, this.path, 'write', 'interrupted', 'the previous file is unchanged');
    return result;
  }

  /** Runs `fn`; on an error removes the temporary file and throws a FileError. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.abort();
      throw this.error(error);
    }
  }

  private flush(): void {
    if (this.bufferedBytes === 0) return;
    const bytes = this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered);
    this.buffered = [];
    this.bufferedBytes = 0;
    for (let at = 0; at < bytes.length; ) at += writeSync(this.fd!, bytes, at, bytes.length - at);
  }

  /** Closes the synced temporary file and renames it over the target, then syncs the directory. */
  private place(): void {
    this.expectOpen();
    const fd = this.fd!;
    this.fd = null;
    closeSync(fd);
    if (this.temp !== null) {
      try {
        renameSync(this.temp, this.final);
      } catch (error) {
        if ((error as { code?: unknown }).code !== 'ENOENT') throw error;
        // Not a missing directory this time: the directory, or the file in it, went away meanwhile.
        throw new FileError(
          this.what,
          this.path,
          'write',
          `its temporary file ${basename(this.temp)} was removed before it was complete`,
          undefined,
          { cause: error },
        );
      }
    }
    // From here on the target is the new file: nothing to abort any more.
    this.state = 'committed';
    pending.delete(this);
    if (this.temp !== null) syncDirectory(dirname(this.final));
  }

  private expectOpen(): void {
    if (this.state !== 'open')
      throw new DdwError('FILE_STATE', `${this.what} ${this.path} is already ${this.state}`);
  }

  private closeFd(): void {
    if (this.fd === null) return;
    try {
      closeSync(this.fd);
    } catch {
      // Closing is all that is left to do with it.
    }
    this.fd = null;
  }
}

/** Creates `.<name>.ddw-<pid>-<random>.tmp` next to `final`, exclusively. */
function openTemp(final: string, mode: number | undefined): [string, number] {
  for (let attempt = 0; ; attempt++) {
    const temp = join(
      dirname(final),
      `.${basename(final)}.ddw-${process.pid}-${randomBytes(4).toString('hex')}.tmp`,
    );
    try {
      return [temp, openSync(temp, 'wx', mode ?? 0o666)];
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST' || attempt >= 4) throw error;
    }
  }
}

/** Makes the rename durable (the directory entry); best effort, as not every system allows it. */
function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Windows cannot open a directory; some file systems refuse fsync on one.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
