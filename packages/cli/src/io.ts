/** Where a command prints: stdout and stderr in the real CLI, strings in tests. */
export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
}
