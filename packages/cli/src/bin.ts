import { runCli } from './program.js';
import { installOutputErrorHandlers, installSignalHandlers } from './signals.js';

installSignalHandlers();
installOutputErrorHandlers();
// An exit code, not process.exit(): output still buffered for a pipe is written before the end.
process.exitCode = await runCli(process.argv.slice(2));
