/**
 * ddw-plugin-dma-trace: a ddw plugin published on its own. It adds the `dma-tracer` PCI device
 * (`-device dma-tracer,id=tr0`): an emulated bus master whose every DMA goes through its PHB's TCE
 * windows like any other function's, and is also a trace line (QEMU trace-events syntax, selected
 * with `-trace dma_tracer_*`) and a byte count.
 *
 * It imports only the packages' published entry points, as any third-party plugin must.
 */
import { definePlugin, MachineTokens, type TraceEvent, token } from '@ddw/machine';
import { DMA_ENGINE_IDS, type PciAddress, type PciBus, PciDevice, type PciIds, PciTokens } from '@ddw/pci';
import { SpaprPciTokens } from '@ddw/spapr-pci';

/** The plugin's trace events, in QEMU's trace-events syntax (one declaration per line). */
export const DMA_TRACE_EVENTS = `
# ddw-plugin-dma-trace
dma_tracer_realize(const char *dev, uint64_t buid, uint32_t cfgaddr) "%s buid=0x%"PRIx64" addr=0x%"PRIx32
dma_tracer_read(const char *dev, uint64_t iova, uint32_t len, int res) "%s iova=0x%"PRIx64" len=0x%"PRIx32" res=%d"
dma_tracer_write(const char *dev, uint64_t iova, uint32_t len, int res) "%s iova=0x%"PRIx64" len=0x%"PRIx32" res=%d"
`;

/** The driver name `-device` and machine descriptions use. */
export const DMA_TRACER_DRIVER = 'dma-tracer';

/** What one dma-tracer function has moved. A transfer that fails moves nothing and counts as a fault. */
export interface DmaTraceCounters {
  reads: number;
  writes: number;
  /** Bytes the device read from guest memory (successful reads only). */
  bytesRead: number;
  /** Bytes the device wrote to guest memory (successful writes only). */
  bytesWritten: number;
  /** Transfers the IOMMU refused (not mapped, or mapped without the needed permission). */
  faults: number;
}

/** One transfer, as the `onTransfer` option receives it. */
export interface DmaTransferRecord {
  device: string;
  direction: 'read' | 'write';
  iova: bigint;
  length: number;
  /** The memory transaction result: 0 (MEMTX_OK) or an error bit set. */
  result: number;
}

interface DmaTraceEvents {
  realize: TraceEvent;
  read: TraceEvent;
  write: TraceEvent;
}

type DmaReadResult = ReturnType<PciDevice['dmaRead']>;
type DmaWriteResult = ReturnType<PciDevice['dmaWrite']>;

/** The dma-tracer function: a PciDevice whose DMA is traced and counted. */
export class DmaTracerDevice extends PciDevice {
  readonly counters: DmaTraceCounters = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, faults: 0 };

  constructor(
    id: string,
    driver: string,
    bus: PciBus,
    address: PciAddress,
    ids: PciIds,
    /** The BUID of the PHB whose root bus `bus` is, for the realize trace. */
    private readonly buid: bigint,
    private readonly events: DmaTraceEvents,
    private readonly tracers: DmaTracers,
    private readonly onTransfer: ((record: DmaTransferRecord) => void) | undefined,
  ) {
    super(id, driver, bus, address, true, ids);
  }

  override realize(): void {
    this.tracers.add(this);
    if (this.events.realize.enabled) this.events.realize.emit(this.id, this.buid, this.configAddress);
  }

  override unrealize(): void {
    this.tracers.remove(this);
  }

  override dmaRead(iova: bigint, length: number): DmaReadResult {
    const out = super.dmaRead(iova, length);
    this.counters.reads++;
    if (out.result === 0) this.counters.bytesRead += length;
    else this.counters.faults++;
    if (this.events.read.enabled) this.events.read.emit(this.id, iova, length, out.result);
    this.onTransfer?.({ device: this.id, direction: 'read', iova, length, result: out.result });
    return out;
  }

  override dmaWrite(iova: bigint, data: Uint8Array): DmaWriteResult {
    const result = super.dmaWrite(iova, data);
    this.counters.writes++;
    if (result === 0) this.counters.bytesWritten += data.length;
    else this.counters.faults++;
    if (this.events.write.enabled) this.events.write.emit(this.id, iova, data.length, result);
    this.onTransfer?.({ device: this.id, direction: 'write', iova, length: data.length, result });
    return result;
  }

  /** Zeroes the counters (a machine reset keeps them: they are the host's view, not the device's state). */
  clearCounters(): void {
    Object.assign(this.counters, { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, faults: 0 });
  }
}

/** The machine's dma-tracer functions, by id: what `DmaTraceTokens.Tracers` resolves to. */
export class DmaTracers {
  readonly #byId = new Map<string, DmaTracerDevice>();

  add(device: DmaTracerDevice): void {
    this.#byId.set(device.id, device);
  }

  remove(device: DmaTracerDevice): void {
    if (this.#byId.get(device.id) === device) this.#byId.delete(device.id);
  }

  get(id: string): DmaTracerDevice | undefined {
    return this.#byId.get(id);
  }

  list(): DmaTracerDevice[] {
    return [...this.#byId.values()];
  }

  /** Every function's counters added up. */
  total(): DmaTraceCounters {
    const sum: DmaTraceCounters = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, faults: 0 };
    for (const { counters } of this.#byId.values()) {
      sum.reads += counters.reads;
      sum.writes += counters.writes;
      sum.bytesRead += counters.bytesRead;
      sum.bytesWritten += counters.bytesWritten;
      sum.faults += counters.faults;
    }
    return sum;
  }
}

export const DmaTraceTokens = {
  /** The machine's dma-tracer functions. */
  Tracers: token<DmaTracers>('dma-trace', 'Tracers'),
} as const;

export interface DmaTracerOptions {
  /** The IDs the function presents (default: ddw's dma-engine, QEMU's `edu`, a 64-bit DMA device). */
  ids?: PciIds;
  /** Called after every transfer, traced or not. */
  onTransfer?: (record: DmaTransferRecord) => void;
}

/**
 * The plugin: registers the `dma-tracer` PCI driver with the PHBs' driver registry, declares the
 * trace events, and provides the machine's tracers under `DmaTraceTokens.Tracers`.
 */
export const dmaTracer = definePlugin((options: DmaTracerOptions = {}) => ({
  name: 'dma-trace',
  requires: ['spapr-pci'],
  register(ctx) {
    const ids = options.ids ?? DMA_ENGINE_IDS;
    // Built when the machine is assembled: the tracers, with the driver that makes them.
    ctx.provide(DmaTraceTokens.Tracers, {
      useFactory: (get) => {
        const declared = new Map(
          get(MachineTokens.Trace)
            .defineAll(DMA_TRACE_EVENTS, 'dma_tracer')
            .map((e) => [e.name, e]),
        );
        const events: DmaTraceEvents = {
          realize: declared.get('dma_tracer_realize')!,
          read: declared.get('dma_tracer_read')!,
          write: declared.get('dma_tracer_write')!,
        };
        const tracers = new DmaTracers();
        const phbs = get(SpaprPciTokens.Phbs);
        get(PciTokens.Drivers).register({
          name: DMA_TRACER_DRIVER,
          dma64: true,
          create: ({ id, bus, address }) => {
            const buid = phbs.byBus(bus.name)?.buid ?? 0n;
            return new DmaTracerDevice(
              id,
              DMA_TRACER_DRIVER,
              bus,
              address,
              ids,
              buid,
              events,
              tracers,
              options.onTransfer,
            );
          },
        });
        return tracers;
      },
    });
  },
}));
