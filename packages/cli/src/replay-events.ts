/** Which events of a QEMU trace log the replay covers, and their names read without parsing the lines. */

/** Events the model reproduces; other lines of a QEMU log (MSI, LSI, ...) are outside its scope. */
export const MODELLED_EVENT = /^(spapr_iommu_|vfio_)/;
/** The same, as trace patterns: the replay's bus always traces all of them. */
export const MODELLED_PATTERNS = ['spapr_iommu_*', 'vfio_*'];
/** Lines that stand for a guest-visible operation; the rest (VFIO's) are only its consequences. */
export const OPERATION_EVENT = /^spapr_iommu_/;

/** The event name of a QEMU log line (as parseTraceLine reads it), without parsing its fields. */
const LOG_LINE_NAME = /^(?:\d+@\d+\.\d{6}:)?([A-Za-z_]\w*)(?: [^\n\r\u2028\u2029]*)?$/;

export function eventName(line: string): string | undefined {
  return LOG_LINE_NAME.exec(line)?.[1];
}

/**
 * The events to compare when the user names none: the TCE events, and each VFIO event the trace
 * has (QEMU was run with some selection of them; an event it did not record says nothing).
 */
export function defaultReplayPatterns(input: Iterable<string>): string[] {
  const vfio = new Set<string>();
  for (const line of input) {
    const name = eventName(line.endsWith('\r') ? line.slice(0, -1) : line);
    if (name?.startsWith('vfio_')) vfio.add(name);
  }
  return ['spapr_iommu_*', ...vfio];
}

/** The modelled events the input has. */
export function modelledEvents(input: Iterable<string>): Set<string> {
  const names = new Set<string>();
  for (const line of input) {
    const name = eventName(line.endsWith('\r') ? line.slice(0, -1) : line);
    if (name !== undefined && MODELLED_EVENT.test(name)) names.add(name);
  }
  return names;
}
