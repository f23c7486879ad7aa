/**
 * A `ddw snapshot save` as the CLI runs it, for tests that interrupt it: installs the CLI's signal
 * handlers, builds the machine from QEMU options, lets the Linux guest model negotiate its DMA
 * windows (a large DDW of 64 KiB pages makes the snapshot large), and saves it to FILE.
 *
 *   tsx test/support/save-snapshot-child.ts FILE QEMU_ARGS
 *
 * Prints "saving" just before the file is written and "saved <bytes>" once it is in place.
 */
import { LinuxGuest } from '@ddw/guest-linux';
import { buildRunMachine } from '../../packages/cli/src/run.js';
import { installSignalHandlers } from '../../packages/cli/src/signals.js';
import { saveMachineSnapshot } from '../../packages/cli/src/snapshot.js';

installSignalHandlers();
const [file, qemuArgs] = process.argv.slice(2);
if (file === undefined || qemuArgs === undefined) {
  process.stderr.write('usage: save-snapshot-child.ts FILE QEMU_ARGS\n');
  process.exit(2);
}
const machine = await buildRunMachine({ qemuArgs });
try {
  const guest = new LinuxGuest(machine.guest, { generation: 'linux-6.1' });
  guest.boot();
  guest.probeAll();
  process.stdout.write('saving\n');
  const saved = await saveMachineSnapshot(file, machine);
  process.stdout.write(`saved ${saved.bytes}\n`);
} finally {
  machine.dispose();
}
