/**
 * A command writing a file progressively (as a `-D` trace log is), for tests that end it early:
 *
 *   atomic-file-child.ts wait FILE   with the CLI's signal handlers: writes, prints "open", and
 *                                    keeps writing a line every few milliseconds until a signal
 *   atomic-file-child.ts exit FILE   writes, then exits with code 3 without committing
 */
import { openAtomicFile } from '../../packages/cli/src/files.js';
import { installSignalHandlers } from '../../packages/cli/src/signals.js';

const [mode, file] = process.argv.slice(2);
if ((mode !== 'wait' && mode !== 'exit') || file === undefined) {
  process.stderr.write('usage: atomic-file-child.ts wait|exit FILE\n');
  process.exit(2);
}
if (mode === 'wait') installSignalHandlers();
const log = openAtomicFile(file, { what: 'trace log' });
let n = 0;
const line = () =>
  log.write(`spapr_iommu_put liobn=0x80000001 ioba=0x${(n++ * 4096).toString(16)} tce=0x0 ret=0\n`);
for (let i = 0; i < 50_000; i++) line();
if (mode === 'exit') {
  process.exitCode = 3;
} else {
  process.stdout.write('open\n');
  setInterval(line, 5);
}
