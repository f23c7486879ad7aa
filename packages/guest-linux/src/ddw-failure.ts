/**
 * How enable_ddw gives up: the exception a step throws to end the run with its cause, and the
 * values such a cause carries (RTAS statuses, the errnos of reading ibm,ddw-extensions).
 */
import { RTAS_OUT_BUSY } from '@ddw/machine';
import type { DdwFailureCause } from './negotiation-record.js';

/** enable_ddw giving up: the reason line, and the step that failed for the summary. */
export class DdwFailure extends Error {
  constructor(
    message: string,
    readonly why: DdwFailureCause,
  ) {
    super(message);
  }
}

/** Errnos 6.12 reports from reading ibm,ddw-extensions for limited-address mode. */
export const EINVAL = -22;
export const EOVERFLOW = -75;
export const EPROTO = -71;

/** RTAS statuses rtas_busy_delay() retries on: busy and the extended-delay range. */
export function isRtasBusy(status: number): boolean {
  return status === RTAS_OUT_BUSY || (status >= 9900 && status <= 9905);
}
