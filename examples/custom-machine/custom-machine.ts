/**
 * A machine composed in code, not from the pseries preset: the sPAPR IOMMU, PCI host bridges with
 * this board's own DMA defaults, the DDW RTAS calls, and two small plugins of the example's own.
 * One publishes what a guest sizes its DMA windows from (/memory@0, /rtas ibm,lrdr-capacity) and
 * provides the board's memory layout through a DI token; the other provides a service, built by
 * the machine's container from `@inject`ed tokens, that the program resolves afterwards.
 *
 * Only published entry points are imported, so this file runs unchanged in a project that installed
 * the packages from npm.
 */
import { type DmaDirection, LinuxGuest, type PciFunction, type PeDecision } from '@ddw/guest-linux';
import {
  createMachine,
  definePlugin,
  inject,
  injectable,
  type Machine,
  MachineTokens,
  type TraceBus,
  token,
} from '@ddw/machine';
import type { PciDevice } from '@ddw/pci';
import { rtasDdw } from '@ddw/rtas-ddw';
import { spaprIommu } from '@ddw/spapr-iommu';
import { type PhbDmaProperties, SpaprPciTokens, type SpaprPhbs, spaprPci } from '@ddw/spapr-pci';

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** What the board plugin knows about memory, shared with other plugins through `BoardTokens.Layout`. */
export interface BoardLayout {
  /** Boot RAM at guest physical 0. */
  ram: bigint;
  /** The end of hotpluggable memory: 0, this board has none (as QEMU writes it then). */
  maxDeviceAddress: bigint;
}

/** Tokens of this example's plugins: `Symbol.for('@ddw/custom-machine:<name>')`. */
export const BoardTokens = {
  Layout: token<BoardLayout>('custom-machine', 'BoardLayout'),
  Inventory: token<WindowInventory>('custom-machine', 'WindowInventory'),
} as const;

/** PAPR's memory block size, the granule of `ibm,lrdr-capacity`. */
const MEMORY_BLOCK_SIZE = 0x10000000;

/**
 * The board: publishes guest RAM as the device tree's /memory@0 and /rtas `ibm,lrdr-capacity`,
 * which a pseries Linux reads to size its DMA windows (the pseries preset's own plugin does the
 * same), and provides the layout to whoever asks for `BoardTokens.Layout`.
 */
export const boardMemory = definePlugin(() => ({
  name: 'board-memory',
  register(ctx) {
    ctx.provide(BoardTokens.Layout, {
      useFactory: (get) => {
        const layout: BoardLayout = { ram: get(MachineTokens.GuestRam).size, maxDeviceAddress: 0n };
        const dt = get(MachineTokens.DeviceTree);
        dt.ensureNode('/memory@0');
        dt.setPropString('/memory@0', 'device_type', 'memory');
        dt.setPropU32Cells('/memory@0', 'reg', [
          0,
          0,
          Number(layout.ram >> 32n),
          Number(layout.ram & 0xffffffffn),
        ]);
        dt.ensureNode('/rtas');
        dt.setPropU32Cells('/rtas', 'ibm,lrdr-capacity', [
          Number(layout.maxDeviceAddress >> 32n),
          Number(layout.maxDeviceAddress & 0xffffffffn),
          0,
          MEMORY_BLOCK_SIZE,
          1,
        ]);
        return layout;
      },
    });
  },
}));

/** One enabled DMA window of a PHB, as the inventory reports it. */
export interface WindowSummary {
  phb: string;
  liobn: number;
  busOffset: bigint;
  pageShift: number;
  size: bigint;
  /** Whether the window can map every byte of RAM 1:1 (a direct window, for Linux). */
  coversRam: boolean;
}

/**
 * A service the machine's container builds: every constructor parameter names its token with
 * `@inject` (no decorator metadata is emitted, so the type alone would not do). One instance per
 * machine, created on the first `resolve`.
 */
@injectable()
export class WindowInventory {
  constructor(
    @inject(BoardTokens.Layout) private readonly layout: BoardLayout,
    @inject(SpaprPciTokens.Phbs) private readonly phbs: SpaprPhbs,
    @inject(MachineTokens.Trace) private readonly trace: TraceBus,
  ) {}

  /** Every PHB's enabled windows, now. */
  windows(): WindowSummary[] {
    return this.phbs.list.flatMap((phb) =>
      phb.windows
        .filter((t) => t.enabled)
        .map((t) => {
          const size = BigInt(t.nbTable) << BigInt(t.pageShift);
          return {
            phb: phb.id,
            liobn: t.liobn,
            busOffset: t.busOffset,
            pageShift: t.pageShift,
            size,
            coversRam: size >= this.layout.ram,
          };
        }),
    );
  }

  /** The trace events the machine's plugins declared, by name. */
  traceEvents(): string[] {
    return this.trace.events().map((e) => e.name);
  }
}

/** Provides the inventory; it needs the board's layout and the PHBs, so it registers after both. */
export const windowInventory = definePlugin(() => ({
  name: 'window-inventory',
  requires: ['board-memory', 'spapr-pci'],
  register(ctx) {
    ctx.provide(BoardTokens.Inventory, { useClass: WindowInventory });
  },
}));

/** This board's PHB defaults: a 512 MiB default window, 4K/64K/16M IOMMU pages, DDW on. */
export const BOARD_PHB_DEFAULTS: PhbDmaProperties = {
  dma_win_addr: 0n,
  dma_win_size: 0x20000000n,
  dma64_win_addr: 0x800000000000000n,
  pgsz: 0x1011000n,
  ddw: true,
};

/**
 * Where the devices go: two PHBs, a NIC on the first, a DMA engine on the second (whose default
 * window is overridden to 256 MiB and 4K/64K pages only).
 */
export const CUSTOM_MACHINE_DESCRIPTION = {
  name: 'custom-board',
  ram: '2G',
  phbs: [
    { id: 'pci', index: 0 },
    { id: 'fast', index: 1, dma_win_size: '0x10000000', pgsz: '0x11000' },
  ],
  devices: [
    { id: 'nic0', driver: 'e1000e', bus: 'pci.0', slot: 1 },
    { id: 'dma0', driver: 'dma-engine', bus: 'fast.0', slot: 0 },
  ],
};

/** Builds the machine from the chosen plugins (any order: `requires` orders them) and the description. */
export function buildCustomMachine(description: unknown = CUSTOM_MACHINE_DESCRIPTION): Promise<Machine> {
  return createMachine(
    [spaprIommu(), spaprPci({ defaults: BOARD_PHB_DEFAULTS }), rtasDdw(), boardMemory(), windowInventory()],
    description,
    { ramRegionName: 'board.ram' },
  );
}

export interface TransferResult {
  device: string;
  direction: DmaDirection;
  busAddress: bigint | undefined;
  bytes: number;
  ok: boolean;
}

export interface CustomMachineReport {
  decisions: Pick<PeDecision, 'peNode' | 'outcome' | 'defaultWindowRemoved'>[];
  functions: { node: string; device: string | undefined }[];
  windows: WindowSummary[];
  transfers: TransferResult[];
  ok: boolean;
}

/**
 * Builds the machine, boots the Linux guest model on it, lets it probe every PCI function (and
 * negotiate DMA windows), then moves a buffer each way through every function and checks the bytes.
 */
export async function runCustomMachine(description?: unknown): Promise<CustomMachineReport> {
  const machine = await buildCustomMachine(description);
  try {
    const guest = new LinuxGuest(machine.guest);
    guest.boot();
    guest.probeAll();
    const phbs = machine.get(SpaprPciTokens.Phbs).list;
    const deviceOf = (fn: PciFunction) =>
      phbs.find((phb) => phb.buid === fn.buid)?.devices.find((d) => d.configAddress === fn.cfgAddr);
    const transfers: TransferResult[] = [];
    for (const [i, fn] of guest.functions.entries()) {
      const device = deviceOf(fn);
      if (device) transfers.push(...roundTrip(machine, guest, fn, device, i));
    }
    const inventory = machine.get(BoardTokens.Inventory);
    return {
      decisions: guest.decisions().map(({ peNode, outcome, defaultWindowRemoved }) => ({
        peNode,
        outcome,
        defaultWindowRemoved,
      })),
      functions: guest.functions.map((fn) => ({ node: fn.node, device: deviceOf(fn)?.id })),
      windows: inventory.windows(),
      transfers,
      ok: transfers.length > 0 && transfers.every((t) => t.ok),
    };
  } finally {
    machine.dispose();
  }
}

/** The guest fills a buffer the device reads, and the device fills a buffer the guest reads back. */
function roundTrip(
  machine: Machine,
  guest: LinuxGuest,
  fn: PciFunction,
  device: PciDevice,
  index: number,
): TransferResult[] {
  const length = 0x12345; // odd-sized and starting mid-page: it crosses IOMMU pages
  const base = machine.get(MachineTokens.GuestRam).size - 0x4000000n - BigInt(index) * 0x400000n;
  const results: TransferResult[] = [];

  const out = pattern(length, 2 * index + 1);
  const src = base + 0x321n;
  machine.guest.memory.write(src, out);
  const busIn = guest.dmaMap(fn, src, length, 'to-device');
  let ok = false;
  if (busIn !== undefined) {
    const read = device.dmaRead(busIn, length);
    ok = read.result === 0 && same(read.data, out);
    guest.dmaUnmap(fn, busIn, length);
  }
  results.push({ device: device.id, direction: 'to-device', busAddress: busIn, bytes: length, ok });

  const back = pattern(length, 2 * index + 2);
  const dst = base + 0x200000n + 0x55n;
  machine.guest.memory.write(dst, new Uint8Array(length));
  const busOut = guest.dmaMap(fn, dst, length, 'from-device');
  ok = false;
  if (busOut !== undefined) {
    const wrote = device.dmaWrite(busOut, back);
    const seen = new Uint8Array(length);
    machine.guest.memory.read(dst, seen);
    ok = wrote === 0 && same(seen, back);
    guest.dmaUnmap(fn, busOut, length);
  }
  results.push({ device: device.id, direction: 'from-device', busAddress: busOut, bytes: length, ok });
  return results;
}

/** A short text report, one line per fact. */
export function formatCustomReport(report: CustomMachineReport): string {
  const lines: string[] = [];
  for (const d of report.decisions) {
    lines.push(`pe ${d.peNode}: ${d.outcome}${d.defaultWindowRemoved ? ' (default window removed)' : ''}`);
  }
  for (const w of report.windows) {
    lines.push(
      `window ${w.phb} liobn=${hex(w.liobn)} bus=${hex(w.busOffset)} size=${hex(w.size)} page=2^${w.pageShift}${w.coversRam ? ' covers RAM' : ''}`,
    );
  }
  for (const t of report.transfers) {
    const where = t.busAddress === undefined ? 'not mapped' : `bus ${hex(t.busAddress)}`;
    lines.push(`dma ${t.device} ${t.direction} ${t.bytes} bytes at ${where}: ${t.ok ? 'ok' : 'FAILED'}`);
  }
  lines.push(report.ok ? 'custom machine: all DMA verified' : 'custom machine: DMA FAILED');
  return `${lines.join('\n')}\n`;
}

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
