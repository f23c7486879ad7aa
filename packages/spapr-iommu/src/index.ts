// The TCE hypercall opcodes are @ddw/machine's (PAPR numbers have one definition); they are
// importable from here too, where the hypercalls they name are implemented and documented.
export { H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE } from '@ddw/machine';
export { registerTceHypercalls, TCE_LIST_MAX } from './hypercalls.js';
export {
  compatibleHostTable,
  H_TOO_HARD,
  type KvmHost,
  type KvmHostIommuTable,
  type KvmTceAttachment,
  type KvmTceResult,
  kvmGetTce,
  kvmPutTce,
  kvmPutTceIndirect,
  kvmStuffTce,
} from './kvm-tce.js';
export { MigratingTceTables, spaprIommuVmstate, TceTableMigration } from './migration.js';
export { addHypertasFunction, type SpaprIommuOptions, SpaprIommuTokens, spaprIommu } from './plugin.js';
export { SpaprTceTables } from './tables.js';
export { isPciLiobn, mappedTces, SpaprIommuRegion, SpaprIommuTraces, SpaprTceTable } from './tce-table.js';
export { SPAPR_IOMMU_TRACE_EVENTS } from './traces.js';
