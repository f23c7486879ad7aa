import { EventEmitter } from 'eventemitter3';
import { injectable } from './di.js';

export type LifecyclePhase = 'register' | 'realize' | 'reset' | 'run' | 'unrealize' | 'dispose';

export interface LifecycleEvent {
  phase: LifecyclePhase;
  /** The device that went through the phase; absent for the machine as a whole. */
  device?: string;
}

/** Something the guest did wrong, as QEMU reports under `-d guest_errors`. */
export interface GuestErrorEvent {
  /** The model that noticed, e.g. `spapr-iommu` or `rtas`. */
  source: string;
  message: string;
}

/**
 * The host side failed (QEMU's error_report). `fatal` marks what QEMU answers with hw_error, which
 * aborts QEMU; ddw keeps the machine alive and lets the model mark itself broken instead.
 */
export interface HostErrorEvent {
  source: string;
  message: string;
  fatal: boolean;
}

export interface ProgressEvent {
  task: string;
  done: number;
  total: number;
}

/** Coarse machine events. Per-access detail belongs on the trace bus, not here. */
export interface MachineEvents {
  lifecycle: (event: LifecycleEvent) => void;
  'guest-error': (event: GuestErrorEvent) => void;
  'host-error': (event: HostErrorEvent) => void;
  progress: (event: ProgressEvent) => void;
}

@injectable()
export class MachineEventBus extends EventEmitter<MachineEvents> {
  guestError(source: string, message: string): void {
    this.emit('guest-error', { source, message });
  }

  hostError(source: string, message: string, fatal = false): void {
    this.emit('host-error', { source, message, fatal });
  }

  lifecycle(phase: LifecyclePhase, device?: string): void {
    this.emit('lifecycle', device === undefined ? { phase } : { phase, device });
  }

  progress(task: string, done: number, total: number): void {
    this.emit('progress', { task, done, total });
  }
}
