import { formatHex } from '@ddw/memory';
import { DdwError, messageOf } from '../errors.js';

/**
 * A snapshot that cannot be loaded (or a section that cannot be saved). `section` names the
 * section at fault, "header" for the file itself; the target machine is unchanged.
 */
export class SnapshotError extends DdwError {
  override name = 'SnapshotError';
  readonly section: string;
  readonly instanceId: number | undefined;
  readonly reason: string;

  constructor(
    section: string,
    instanceId: number | undefined,
    reason: string,
    options: { cause?: unknown } = {},
  ) {
    const where =
      section === 'header'
        ? 'snapshot header'
        : `snapshot section "${section}"${instanceId === undefined ? '' : ` (instance ${formatHex(instanceId)})`}`;
    super('SNAPSHOT', `${where}: ${reason}`, options);
    this.section = section;
    this.instanceId = instanceId;
    this.reason = reason;
  }
}

/** A malformed stream, found while decoding; turned into a SnapshotError naming the section. */
export class Malformed extends Error {}

/**
 * What a sink or a source threw (a file that cannot be written or read): it is not the snapshot's
 * fault, so it leaves saveSnapshot / loadSnapshot as it was thrown, not as a SnapshotError.
 */
export class PassThrough extends Error {
  constructor(readonly error: unknown) {
    super(messageOf(error));
  }
}

export function headerError(reason: string): SnapshotError {
  return new SnapshotError('header', undefined, reason);
}

/** `error` as the SnapshotError of `section` (a SnapshotError or a PassThrough stays what it is). */
export function asSnapshotError(
  section: string,
  instanceId: number | undefined,
  error: unknown,
  prefix: string,
): SnapshotError | PassThrough {
  if (error instanceof SnapshotError || error instanceof PassThrough) return error;
  const reason = error instanceof Malformed ? error.message : `${prefix}${messageOf(error)}`;
  return new SnapshotError(section, instanceId, reason, { cause: error });
}

/** A value as an error message shows it: integers in hex, strings quoted. */
export function describe(value: unknown): string {
  if (typeof value === 'bigint') return formatHex(value);
  if (typeof value === 'number')
    return Number.isInteger(value) && value >= 0 ? formatHex(value) : String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}
