// Recorders: what sees every event and every hypercall and RTAS dispatch, whatever the selection.

import type { HypercallObserver } from '../hcall.js';
import type { RtasObserver } from '../rtas.js';
import type { TraceArg } from './declaration.js';
import type { TraceEvent } from './event.js';

/**
 * Sees what the machines on a bus do, whatever the selection (a timeline: `ddw --trace-json`).
 * With `event`, every trace event as emitted: while such a recorder is attached every event is
 * enabled (enabling an event never changes what is computed), and sinks and listeners still get
 * only the selected ones. With `hypercall` and `rtas`, every hypercall and RTAS dispatch of the
 * machines built on the bus. A recorder only observes: it must not throw or call into the machine.
 */
export interface TraceRecorder {
  event?(event: TraceEvent, args: readonly TraceArg[]): void;
  hypercall?: HypercallObserver;
  rtas?: RtasObserver;
}

/** The registries a machine connects to its bus (TraceBus.connectCalls). */
export interface CallSite {
  hypercalls: { observer: HypercallObserver | undefined };
  rtas: { observer: RtasObserver | undefined };
}

/** One observer for several (undefined for none): what a registry calls on each dispatch. */
export function fanOut<O extends { enter(...args: never[]): void; leave(...args: never[]): void }>(
  observers: readonly O[],
): O | undefined {
  if (observers.length <= 1) return observers[0];
  return {
    enter: (...args: never[]) => {
      for (const o of observers) o.enter(...args);
    },
    leave: (...args: never[]) => {
      for (const o of observers) o.leave(...args);
    },
  } as unknown as O;
}
