export { pageMaskToQueryMask, RTAS_DDW_PGSIZE } from './query-mask.js';
export {
  QEMU_7_2_DDW,
  RTAS_DDW_TRACE_EVENTS,
  type RtasDdwCalls,
  type RtasDdwCompat,
  RtasDdwTokens,
  rtasDdw,
} from './rtas-ddw.js';
