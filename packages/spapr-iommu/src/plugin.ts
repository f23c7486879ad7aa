import { definePlugin, provideValue, token } from '@ddw/machine';
import { registerTceHypercalls } from './hypercalls.js';
import { SpaprTceTables } from './tables.js';
import { SpaprIommuTraces } from './tce-table.js';

export const SpaprIommuTokens = {
  /** The machine's TCE tables by LIOBN. */
  Tables: token<SpaprTceTables>('spapr-iommu', 'Tables'),
} as const;

/**
 * sPAPR TCE tables and their hypercalls. Other plugins (a PHB, a VIO device) create the tables
 * through `SpaprIommuTokens.Tables`.
 */
export const spaprIommu = definePlugin(() => ({
  name: 'spapr-iommu',
  register(ctx) {
    const tables = new SpaprTceTables(ctx.memory.addressSpace, new SpaprIommuTraces(ctx.trace), ctx.events);
    provideValue(ctx.container, SpaprIommuTokens.Tables, tables);
    registerTceHypercalls(ctx.hypercalls, tables, ctx.memory.addressSpace, ctx.plugin);
  },
}));
