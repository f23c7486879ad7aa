import { ConfigError, type DeviceTree, definePlugin, MachineTokens, token } from '@ddw/machine';
import { registerTceHypercalls } from './hypercalls.js';
import { MigratingTceTables } from './migration.js';
import type { SpaprTceTables } from './tables.js';
import { SpaprIommuTraces } from './tce-table.js';

export const SpaprIommuTokens = {
  /** The machine's TCE tables by LIOBN. */
  Tables: token<SpaprTceTables>('spapr-iommu', 'Tables'),
} as const;

/**
 * sPAPR TCE tables and their hypercalls. Other plugins (a PHB, a VIO device) create the tables
 * through `SpaprIommuTokens.Tables`.
 */
export const spaprIommu = definePlugin((options: SpaprIommuOptions = {}) => ({
  name: 'spapr-iommu',
  register(ctx) {
    const migrationVersion = options.migrationVersion ?? 3;
    if (migrationVersion !== 2 && migrationVersion !== 3) {
      throw new ConfigError(
        'spapr-iommu.migrationVersion',
        `${String(migrationVersion)} is not a "spapr_iommu" section version ddw writes`,
        'use 3 (QEMU 7.1+) or 2 (QEMU 2.7 to 7.0)',
      );
    }
    const multiTce = options.multiTce ?? true;
    const owner = ctx.plugin;
    // The tables and their hypercalls are one service: each table registers its "spapr_iommu"
    // migration section (instance id = LIOBN) when created.
    ctx.provide(SpaprIommuTokens.Tables, {
      useFactory: (get) => {
        const guestMemory = get(MachineTokens.SystemAddressSpace);
        const tables = new MigratingTceTables(
          guestMemory,
          new SpaprIommuTraces(get(MachineTokens.Trace)),
          get(MachineTokens.Events),
          options.accel === 'kvm',
          get(MachineTokens.Vmstate),
          migrationVersion,
          owner,
        );
        registerTceHypercalls(get(MachineTokens.Hypercalls), tables, guestMemory, owner, { multiTce });
        if (multiTce) addHypertasFunction(get(MachineTokens.DeviceTree), 'hcall-multi-tce');
        return tables;
      },
    });
  },
}));

export interface SpaprIommuOptions {
  /**
   * Offer H_PUT_TCE_INDIRECT and H_STUFF_TCE, advertised as "hcall-multi-tce" in /rtas
   * ibm,hypertas-functions (default true, as QEMU). Without it a guest maps with H_PUT_TCE.
   */
  multiTce?: boolean;
  /**
   * 'kvm' simulates in-kernel TCE tables: the guest's TCE hypercalls on them are handled by the
   * "kernel" (same results, no trace lines, no notifications) until a VFIO notifier moves the
   * table to userspace. Default 'tcg'.
   */
  accel?: 'tcg' | 'kvm';
  /**
   * Version of the "spapr_iommu" migration section each table writes: 3 (default, QEMU 7.1+,
   * carries def_win) or 2 (QEMU 2.7 to 7.0). A machine loads versions 2 up to this one.
   */
  migrationVersion?: number;
}

/** Appends a function set to /rtas ibm,hypertas-functions, a list several plugins add to. */
export function addHypertasFunction(dt: DeviceTree, name: string): void {
  dt.ensureNode('/rtas');
  const current = dt.getPropStrings('/rtas', 'ibm,hypertas-functions') ?? [];
  if (!current.includes(name)) dt.setPropStrings('/rtas', 'ibm,hypertas-functions', [...current, name]);
}
