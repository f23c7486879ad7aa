import { DdwError } from '@ddw/machine';
import { CommanderError } from 'commander';
import { createProgram } from './program.js';

try {
  await createProgram().parseAsync(process.argv);
} catch (error) {
  // Commander has already printed its usage error (or the help / version text).
  if (error instanceof CommanderError) process.exit(error.exitCode);
  // Configuration and host errors are for people: the message, no stack.
  if (error instanceof DdwError || (error instanceof Error && error.name.endsWith('ConfigError'))) {
    process.stderr.write(`ddw: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
}
