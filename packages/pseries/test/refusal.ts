import { ConfigError } from '@ddw/machine';

/** The ConfigError `fn` throws; anything else, or nothing, fails the test. */
export function refusal(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}
