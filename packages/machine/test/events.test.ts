import { describe, expect, it } from 'vitest';
import {
  type GuestErrorEvent,
  type LifecycleEvent,
  MachineEventBus,
  type ProgressEvent,
} from '../src/events.js';

describe('MachineEventBus', () => {
  it('delivers typed guest-error, lifecycle and progress events', () => {
    const bus = new MachineEventBus();
    const guestErrors: GuestErrorEvent[] = [];
    const lifecycle: LifecycleEvent[] = [];
    const progress: ProgressEvent[] = [];
    bus.on('guest-error', (e) => guestErrors.push(e));
    bus.on('lifecycle', (e) => lifecycle.push(e));
    bus.on('progress', (e) => progress.push(e));

    bus.guestError('spapr-iommu', 'H_PUT_TCE on unknown LIOBN 0x12');
    bus.lifecycle('realize', 'phb0');
    bus.lifecycle('run');
    bus.emit('lifecycle', { phase: 'reset' });
    bus.progress('map', 3, 10);

    expect(guestErrors).toEqual([{ source: 'spapr-iommu', message: 'H_PUT_TCE on unknown LIOBN 0x12' }]);
    expect(lifecycle).toEqual([{ phase: 'realize', device: 'phb0' }, { phase: 'run' }, { phase: 'reset' }]);
    expect(progress).toEqual([{ task: 'map', done: 3, total: 10 }]);
  });

  it('stops delivering after a listener is removed', () => {
    const bus = new MachineEventBus();
    const seen: string[] = [];
    const listener = (e: GuestErrorEvent) => seen.push(e.message);
    bus.on('guest-error', listener);
    bus.guestError('rtas', 'one');
    bus.off('guest-error', listener);
    bus.guestError('rtas', 'two');
    expect(seen).toEqual(['one']);
  });
});
