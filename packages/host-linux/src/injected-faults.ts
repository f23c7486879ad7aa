import type { HostIommuOp } from '@ddw/vfio-common';

/**
 * Faults a test injects into the host (HostIommu.injectFault): the next calls of an ioctl, on any
 * container of the host, fail with -errno before they change anything.
 */
export class InjectedFaults {
  readonly #queues = new Map<HostIommuOp, { errno: number; left: number }[]>();
  #pending = 0;

  inject(op: HostIommuOp, errno: number, count: number): void {
    if (!(count >= 1)) return;
    const left = Math.floor(count);
    const queue = this.#queues.get(op) ?? [];
    queue.push({ errno: Math.abs(errno), left });
    this.#queues.set(op, queue);
    this.#pending += left;
  }

  /** Whether the next call of `op` would fail by injection (without using the fault up). */
  due(op: HostIommuOp): boolean {
    return this.#pending > 0 && (this.#queues.get(op)?.length ?? 0) > 0;
  }

  /** -errno when an injected fault is due for `op`, else 0. */
  take(op: HostIommuOp): number {
    if (this.#pending === 0) return 0;
    const queue = this.#queues.get(op);
    const fault = queue?.[0];
    if (!fault) return 0;
    fault.left--;
    this.#pending--;
    if (fault.left === 0) queue!.shift();
    return -fault.errno;
  }
}
