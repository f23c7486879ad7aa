/**
 * The error types the kernel throws. Every one carries a stable `code` so the CLI and tests can
 * tell them apart without parsing messages, and a message that names what is wrong and how to fix
 * it, because the CLI prints it without a stack.
 *
 * Guest actions never throw (they get PAPR return codes); these are for configuration, plugin
 * composition, device lifecycle and programming mistakes in models.
 */
export class DdwError extends Error {
  override name = 'DdwError';
  readonly code: string;

  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/** One failing field of a configuration. */
export interface ConfigIssue {
  /** Dotted path with array indices, e.g. `phbs[0].dma_win_size`. */
  readonly field: string;
  readonly problem: string;
  readonly fix?: string;
}

function describeIssue(issue: ConfigIssue): string {
  return issue.fix ? `${issue.field}: ${issue.problem}; ${issue.fix}` : `${issue.field}: ${issue.problem}`;
}

/**
 * A configuration mistake: a bad machine description, device tree path or device id. The message
 * leads with what was being configured (`machine description` unless told otherwise) and names
 * every failing field.
 */
export class ConfigError extends DdwError {
  override name = 'ConfigError';
  /** The first failing field; `issues` has all of them. */
  readonly field: string;
  readonly problem: string;
  readonly fix: string | undefined;
  readonly subject: string;
  readonly issues: readonly ConfigIssue[];

  constructor(
    field: string,
    problem: string,
    fix?: string,
    options: { subject?: string; cause?: unknown; issues?: readonly ConfigIssue[] } = {},
  ) {
    const subject = options.subject ?? 'machine description';
    const issues = options.issues && options.issues.length > 0 ? options.issues : [{ field, problem, fix }];
    const message =
      issues.length === 1
        ? `${subject}: ${describeIssue(issues[0]!)}`
        : `${subject}: ${issues.length} problems\n${issues.map((issue) => `  ${describeIssue(issue)}`).join('\n')}`;
    super('CONFIG', message, { cause: options.cause });
    this.field = issues[0]!.field;
    this.problem = issues[0]!.problem;
    this.fix = issues[0]!.fix;
    this.subject = subject;
    this.issues = issues;
  }

  /** One error for several failing fields, so a user fixes them all in one go. */
  static fromIssues(issues: readonly ConfigIssue[], subject?: string): ConfigError {
    if (issues.length === 0) throw new DdwError('CONFIG', 'ConfigError.fromIssues needs at least one issue');
    const first = issues[0]!;
    return new ConfigError(first.field, first.problem, first.fix, { subject, issues });
  }
}

export type PluginErrorKind =
  | 'invalid'
  | 'duplicate'
  | 'missing-requirement'
  | 'cycle'
  | 'register'
  | 'conflict';

/** A plugin composition mistake; `plugin` names the plugin the user has to look at. */
export class PluginError extends DdwError {
  override name = 'PluginError';
  readonly plugin: string;
  readonly kind: PluginErrorKind;

  constructor(plugin: string, kind: PluginErrorKind, message: string, options: { cause?: unknown } = {}) {
    super('PLUGIN', message, { cause: options.cause });
    this.plugin = plugin;
    this.kind = kind;
  }

  static missingRequirement(plugin: string, required: string): PluginError {
    return new PluginError(
      plugin,
      'missing-requirement',
      `plugin "${plugin}" requires "${required}", which is not in the machine; add ${required}() to the plugin list`,
    );
  }

  static duplicate(plugin: string): PluginError {
    return new PluginError(
      plugin,
      'duplicate',
      `plugin "${plugin}" appears more than once in the machine; list each plugin once and pass all its options to that one call`,
    );
  }

  /** `path` starts and ends with the same plugin: ["a", "b", "a"]. */
  static cycle(path: readonly string[]): PluginError {
    return new PluginError(
      path[0] ?? '',
      'cycle',
      `plugins require each other in a cycle: ${path.join(' -> ')}; one of them must stop requiring the next`,
    );
  }

  static registerFailed(plugin: string, cause: unknown): PluginError {
    return new PluginError(plugin, 'register', `plugin "${plugin}" failed to register: ${messageOf(cause)}`, {
      cause,
    });
  }
}

export type DevicePhase = 'realize' | 'reset' | 'unrealize' | 'dispose';

/** A device failed in a lifecycle phase; the original error is the `cause`. */
export class DeviceError extends DdwError {
  override name = 'DeviceError';
  readonly device: string;
  readonly phase: DevicePhase;
  /** Errors from cleaning up after the failure (unrealizing the devices realized before it). */
  readonly suppressed: readonly unknown[];

  constructor(device: string, phase: DevicePhase, cause: unknown, suppressed: readonly unknown[] = []) {
    const also =
      suppressed.length > 0
        ? ` (and ${suppressed.length} more while rolling back: ${suppressed.map(messageOf).join('; ')})`
        : '';
    super('DEVICE', `device "${device}" failed to ${phase}: ${messageOf(cause)}${also}`, { cause });
    this.device = device;
    this.phase = phase;
    this.suppressed = suppressed;
  }
}

/**
 * A programming mistake in how the API was called (a missing or wrongly typed argument): the
 * message names the function, the argument and what it must be. Not something a machine
 * description can cause; those are ConfigErrors.
 */
export class InvalidArgumentError extends DdwError {
  override name = 'InvalidArgumentError';
  /** `createMachine(plugins)`, `new MachineBuilder(options)`: where the bad argument went. */
  readonly where: string;

  constructor(where: string, message: string) {
    super('INVALID_ARGUMENT', `${where}: ${message}`);
    this.where = where;
  }
}

/** The message of anything thrown, for wrapping errors whose type we do not control. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
