/**
 * Lets the event loop turn (a signal handler, a progress message): setImmediate where there is one
 * (Node), a timer where there is not (a browser worker). Browser-safe.
 */
export function nextTurn(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate;
  return new Promise((resolve) => (immediate ? immediate(resolve) : setTimeout(resolve, 0)));
}
