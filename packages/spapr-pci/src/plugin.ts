import {
  ConfigError,
  type Device,
  definePlugin,
  hexSchema,
  MachineTokens,
  qemuIdSchema,
  RTAS_IBM_RESET_PE_DMA_WINDOW,
  token,
} from '@ddw/machine';
import {
  checkDeviceProps,
  E1000E_IDS,
  E1000E_PROPERTIES,
  emulatedDmaDriver,
  type PciBus,
  PciBuses,
  type PciDevice,
  PciDriverRegistry,
  PciTokens,
} from '@ddw/pci';
import { SpaprIommuTokens } from '@ddw/spapr-iommu';
import * as z from 'zod';
import { type PhbDmaProperties, QEMU_7_2_PHB_DEFAULTS } from './constants.js';
import { PhbMigration, spaprPciVmstate } from './migration.js';
import { SpaprPhb, type SpaprPhbCompat } from './phb.js';

export const SpaprPciTokens = {
  /** Every PHB of the machine, in description order. */
  Phbs: token<SpaprPhbs>('spapr-pci', 'Phbs'),
} as const;

/** The machine's PHBs; RTAS looks them up by BUID. */
export class SpaprPhbs {
  readonly list: SpaprPhb[] = [];

  byBuid(buid: bigint): SpaprPhb | undefined {
    return this.list.find((p) => p.buid === buid);
  }

  /** The PHB whose root bus is named `bus` (a device's `bus.name`). */
  byBus(bus: string): SpaprPhb | undefined {
    return this.list.find((p) => p.name === bus);
  }
}

/** QEMU's highest PHB index on pseries (SPAPR_MAX_PHBS - 1). */
export const SPAPR_MAX_PHB_INDEX = 30;

const phbSchema = z.strictObject({
  id: qemuIdSchema,
  index: z
    .number()
    .int()
    .min(0)
    .max(SPAPR_MAX_PHB_INDEX, `"index" for PAPR PHB is too large (max ${SPAPR_MAX_PHB_INDEX})`),
  bus: z.string().min(1).optional(),
  dma_win_addr: hexSchema.optional(),
  dma_win_size: hexSchema.optional(),
  dma64_win_addr: hexSchema.optional(),
  pgsz: hexSchema.optional(),
  ddw: z.boolean().optional(),
  /** A ddw extension, not a QEMU property: the windows a DDW PHB offers (1 or 2). */
  'x-ddw-windows': z.number().int().min(1).max(2).optional(),
});

const deviceSchema = z.strictObject({
  id: qemuIdSchema,
  driver: z.string().min(1),
  bus: z.string().min(1).default('pci.0'),
  slot: z.number().int().min(0).max(31).optional(),
  fn: z.number().int().min(0).max(7).default(0),
  props: z.record(z.string(), z.string()).default({}),
});

export type PhbDescription = z.infer<typeof phbSchema>;
export type PciDeviceDescription = z.infer<typeof deviceSchema>;

export interface SpaprPciOptions {
  /** PHB property defaults of the machine type (QEMU 7.2's unless a preset says otherwise). */
  defaults?: PhbDmaProperties;
  compat?: SpaprPhbCompat;
}

/**
 * sPAPR PCI host bridges and the PCI devices on them. Description sections: `phbs` (default: the
 * PHB "pci" with index 0, as QEMU's pseries creates) and `devices`. It provides the machine's
 * PciTokens (the driver registry, with dma-engine and e1000e in it, and every PHB's root bus), so
 * plugins that add PCI drivers require it.
 */
export const spaprPci = definePlugin((options: SpaprPciOptions = {}) => ({
  name: 'spapr-pci',
  requires: ['spapr-iommu'],
  sections: {
    phbs: z.array(phbSchema).default([{ id: 'pci', index: 0 }]),
    devices: z.array(deviceSchema).default([]),
  },
  register(ctx) {
    const defaults = options.defaults ?? QEMU_7_2_PHB_DEFAULTS;
    const compat = options.compat ?? { ddwExtensions: [RTAS_IBM_RESET_PE_DMA_WINDOW, 1] };
    const described = ctx.description.phbs as PhbDescription[];
    const devices = ctx.description.devices as PciDeviceDescription[];
    checkIds(described, devices);

    ctx.provide(PciTokens.Drivers, {
      useFactory: () => {
        const drivers = new PciDriverRegistry();
        drivers.register(
          emulatedDmaDriver('dma-engine', undefined, {
            description: "ddw's DMA engine: a bus master with a 64-bit DMA mask (QEMU's edu IDs)",
          }),
        );
        drivers.register(
          emulatedDmaDriver('e1000e', E1000E_IDS, {
            description: 'Intel 82574L GbE Controller (its DMA only)',
            properties: E1000E_PROPERTIES,
          }),
        );
        return drivers;
      },
    });
    ctx.provide(PciTokens.Buses, { useFactory: () => new PciBuses() });
    ctx.provide(SpaprPciTokens.Phbs, {
      useFactory: (get) => {
        const tables = get(SpaprIommuTokens.Tables);
        const deviceTree = get(MachineTokens.DeviceTree);
        const machineDevices = get(MachineTokens.Devices);
        const vmstate = get(MachineTokens.Vmstate);
        const addressSpaces = get(MachineTokens.AddressSpaces);
        const drivers = get(PciTokens.Drivers);
        const buses = get(PciTokens.Buses);
        const phbs = new SpaprPhbs();
        const section = spaprPciVmstate(compat.pre28Migration ?? false);
        for (const d of described) {
          const phb = new SpaprPhb(
            {
              id: d.id,
              index: d.index,
              ...(d.bus !== undefined ? { bus: d.bus } : {}),
              dma_win_addr: d.dma_win_addr ?? defaults.dma_win_addr,
              dma_win_size: d.dma_win_size ?? defaults.dma_win_size,
              dma64_win_addr: d.dma64_win_addr ?? defaults.dma64_win_addr,
              pgsz: d.pgsz ?? defaults.pgsz,
              ddw: d.ddw ?? defaults.ddw,
              ...(d['x-ddw-windows'] !== undefined ? { ddwWindows: d['x-ddw-windows'] } : {}),
            },
            compat,
            tables,
            deviceTree,
          );
          phbs.list.push(phb);
          buses.list.push(phb);
          machineDevices.add(phb);
          vmstate.register(section, phb.index, new PhbMigration(phb));
          addressSpaces.add(phb.dmaAddressSpace);
        }
        // Each PCI function is a device of its own; its model is created at realize, once every
        // plugin has registered its drivers, and realized there (vfio-pci connects to the host then).
        for (const [i, d] of devices.entries()) machineDevices.add(pciFunction(d, i, drivers, buses));
        return phbs;
      },
    });
  },
}));

/** Refuses PHBs or devices sharing an index, id or bus, naming the description field. */
function checkIds(described: PhbDescription[], devices: PciDeviceDescription[]): void {
  for (const [i, d] of described.entries()) {
    for (const [j, other] of described.slice(0, i).entries()) {
      if (other.index === d.index)
        throw new ConfigError(
          `phbs[${i}].index`,
          `index ${d.index} is already used by PHB "${other.id}"`,
          'give each PHB its own index',
        );
      if (other.id === d.id)
        throw new ConfigError(`phbs[${i}].id`, `id "${d.id}" is already used by phbs[${j}]`);
      if ((other.bus ?? `${other.id}.0`) === (d.bus ?? `${d.id}.0`))
        throw new ConfigError(
          `phbs[${i}].bus`,
          `bus "${d.bus ?? `${d.id}.0`}" is already used by PHB "${other.id}"`,
        );
    }
  }
  for (const [i, d] of devices.entries()) {
    const j = devices.findIndex((other) => other.id === d.id);
    if (j < i)
      throw new ConfigError(
        `devices[${i}].id`,
        `id "${d.id}" is already used by devices[${j}]`,
        'give each device its own id',
      );
    const k = described.findIndex((phb) => phb.id === d.id);
    if (k >= 0)
      throw new ConfigError(
        `devices[${i}].id`,
        `id "${d.id}" is already used by phbs[${k}]`,
        'give each device its own id',
      );
  }
}

/** The machine's device for PCI function `d` (devices[i]): its model is made by its driver at realize. */
function pciFunction(
  d: PciDeviceDescription,
  i: number,
  drivers: PciDriverRegistry,
  buses: PciBuses,
): Device {
  let device: PciDevice | undefined;
  return {
    id: d.id,
    realize: () => {
      const driver = drivers.get(d.driver);
      if (!driver) {
        throw new ConfigError(
          `devices[${i}].driver`,
          `unknown device "${d.driver}"`,
          `known: ${drivers.names().join(', ')}`,
        );
      }
      const bus = buses.byName(d.bus);
      if (!bus) {
        throw new ConfigError(
          `devices[${i}].bus`,
          `no bus "${d.bus}"`,
          `buses: ${buses.list.map((b) => b.name).join(', ')}`,
        );
      }
      checkDeviceProps(driver, d.props, `devices[${i}]`);
      const slot = d.slot ?? firstFreeSlot(bus);
      const created = driver.create({
        id: d.id,
        bus,
        address: { slot, fn: d.fn },
        props: d.props,
        field: `devices[${i}]`,
      });
      bus.attach(created);
      device = created;
      return created.realize?.();
    },
    reset: () => device?.reset?.(),
    unrealize: () => {
      if (!device) return;
      device.unrealize?.();
      device.bus.detach(device);
      device = undefined;
    },
    dispose: () => device?.dispose?.(),
  };
}

function firstFreeSlot(bus: PciBus): number {
  for (let slot = 0; slot < 32; slot++) {
    if (!bus.devices.some((d) => d.address.slot === slot)) return slot;
  }
  throw new ConfigError('devices', `bus ${bus.name} has no free slot`);
}
