import { readdirSync, readFileSync } from 'node:fs';
import { LinuxGuest } from '@ddw/guest-linux';
import {
  createMachine,
  H_PARAMETER,
  H_PUT_TCE,
  H_SUCCESS,
  type Machine,
  MachineTokens,
  TraceBus,
} from '@ddw/machine';
import { buildPseries } from '@ddw/pseries';
import { spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BoardTokens,
  buildCustomMachine,
  CUSTOM_MACHINE_DESCRIPTION,
  formatCustomReport,
  runCustomMachine,
  WindowInventory,
} from '../examples/custom-machine/custom-machine.js';
import {
  DMA_TRACER_DRIVER,
  type DmaTracerDevice,
  DmaTraceTokens,
  type DmaTransferRecord,
  dmaTracer,
} from '../examples/third-party-plugin/src/index.js';
import {
  H_GET_TERM_CHAR,
  H_PUT_TERM_CHAR,
  type VtyDevice,
  vtyConsole,
} from '../examples/vty-console/vty-console.js';

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** Packs up to 16 characters into two big-endian registers, as a guest's hvc driver does. */
function pack(text: string): [bigint, bigint, bigint] {
  const bytes = new Uint8Array(16);
  bytes.set(new TextEncoder().encode(text));
  const view = new DataView(bytes.buffer);
  return [BigInt(text.length), view.getBigUint64(0), view.getBigUint64(8)];
}

describe('example: the vty-console plugin', () => {
  it('carries guest output through H_PUT_TERM_CHAR and input through H_GET_TERM_CHAR', async () => {
    const m = await createMachine([vtyConsole()], { ram: '512M', vty: [{ id: 'hvc0', reg: 0x30000000 }] });
    machines.push(m);
    m.trace.enable('spapr_vty_*');
    const lines = m.trace.collect();
    expect(m.guest.hcall(H_PUT_TERM_CHAR, 0x30000000, ...pack('Linux version 6')).ret).toBe(H_SUCCESS);
    expect(m.guest.hcall(H_PUT_TERM_CHAR, 0x30000000, ...pack('.1\n')).ret).toBe(H_SUCCESS);
    const vty = m.get(MachineTokens.Devices).get('hvc0') as VtyDevice;
    expect(vty.output).toBe('Linux version 6.1\n');
    expect(lines.lines).toEqual([
      'spapr_vty_put reg=0x30000000 len=15',
      'spapr_vty_put reg=0x30000000 len=3',
    ]);

    vty.type('root\n');
    const got = m.guest.hcall(H_GET_TERM_CHAR, 0x30000000);
    expect(got.outputs?.[0]).toBe(5n);
    expect(got.outputs?.[1]).toBe(pack('root\n')[1]);
    expect(m.guest.deviceTree.getPropStrings('/vdevice/vty@30000000', 'compatible')).toEqual(['hvterm1']);
  });

  it('answers a wrong terminal or a too-long write with H_PARAMETER', async () => {
    const m = await createMachine([vtyConsole()], { ram: '512M' });
    machines.push(m);
    expect(m.guest.hcall(H_PUT_TERM_CHAR, 0x1234, ...pack('x')).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_PUT_TERM_CHAR, 0x71000000, 17n, 0n, 0n).ret).toBe(H_PARAMETER);
    expect((m.get(MachineTokens.Devices).get('vty0') as VtyDevice).output).toBe('');
  });

  it('names the field when the description is wrong', async () => {
    await expect(createMachine([vtyConsole()], { ram: '512M', vty: [{ id: '', reg: -1 }] })).rejects.toThrow(
      /vty\[0\]\.id[\s\S]*vty\[0\]\.reg/,
    );
  });
});

const W0 = 0x80000000n; // the default PHB's default window: 4 KiB pages from bus address 0
const exampleDir = new URL('../examples/', import.meta.url);

describe('example: the third-party dma-tracer plugin', () => {
  it('traces and counts DMA through a window the guest maps with H_PUT_TCE', async () => {
    const trace = new TraceBus();
    trace.setPatterns(['dma_tracer_*']);
    const lines = trace.collect();
    const m = await buildPseries('-M pseries -m 2G -device dma-tracer,id=tr0,addr=3', {
      trace,
      plugins: [dmaTracer()],
    });
    machines.push(m);
    const tr0 = m.get(DmaTraceTokens.Tracers).get('tr0')!;
    expect(tr0.driver).toBe(DMA_TRACER_DRIVER);
    expect(lines.lines).toEqual(['dma_tracer_realize tr0 buid=0x800000020000000 addr=0x1800']);
    lines.clear();

    // The guest maps guest page 0x7000000 read-write at bus 0x3000, and 0x7001000 device-read-only at 0x4000.
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x3000n, 0x7000000n | 3n).ret).toBe(H_SUCCESS);
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x4000n, 0x7001000n | 1n).ret).toBe(H_SUCCESS);
    const hello = new TextEncoder().encode('hello from the guest, via a TCE');
    m.guest.memory.write(0x7000010n, hello);

    const read = tr0.dmaRead(0x3010n, hello.length);
    expect(read.result).toBe(0);
    expect(new TextDecoder().decode(read.data)).toBe('hello from the guest, via a TCE');
    expect(tr0.dmaWrite(0x3100n, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8))).toBe(0);
    const back = new Uint8Array(8);
    m.guest.memory.read(0x7000100n, back);
    expect([...back]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // Crossing into the read-only page: reading is allowed, writing is refused and touches nothing.
    expect(tr0.dmaRead(0x3ff8n, 0x10).result).toBe(0);
    expect(tr0.dmaWrite(0x3ff8n, new Uint8Array(0x10).fill(0xee))).not.toBe(0);
    m.guest.memory.read(0x7000ff8n, back);
    expect(back.every((b) => b === 0)).toBe(true);
    // Nothing mapped there.
    expect(tr0.dmaRead(0x5000n, 0x10).result).not.toBe(0);

    expect(lines.lines).toEqual([
      'dma_tracer_read tr0 iova=0x3010 len=0x1f res=0',
      'dma_tracer_write tr0 iova=0x3100 len=0x8 res=0',
      'dma_tracer_read tr0 iova=0x3ff8 len=0x10 res=0',
      'dma_tracer_write tr0 iova=0x3ff8 len=0x10 res=2',
      'dma_tracer_read tr0 iova=0x5000 len=0x10 res=2',
    ]);
    expect(tr0.counters).toEqual({ reads: 3, writes: 2, bytesRead: 0x1f + 0x10, bytesWritten: 8, faults: 2 });

    // Unmapping the page (a zero TCE) makes the same read fail.
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x3000n, 0n).ret).toBe(H_SUCCESS);
    expect(tr0.dmaRead(0x3010n, 4).result).not.toBe(0);
    expect(tr0.counters.faults).toBe(3);
  });

  it('is probed by the Linux guest model like any 64-bit DMA device, and traces the DMA it maps', async () => {
    const trace = new TraceBus();
    trace.setPatterns(['dma_tracer_read', 'dma_tracer_write']);
    const lines = trace.collect();
    const m = await buildPseries('-M pseries -m 2G -device dma-tracer,id=tr0', {
      trace,
      plugins: [dmaTracer()],
    });
    machines.push(m);
    const tr0 = m.get(DmaTraceTokens.Tracers).get('tr0')!;
    const guest = new LinuxGuest(m.guest);
    guest.boot();
    guest.probeAll();
    const fn = guest.functions.find((f) => f.cfgAddr === tr0.configAddress)!;
    expect(guest.state(fn)?.mode).toBe('direct');
    const data = Uint8Array.from({ length: 0x3000 }, (_, i) => i & 0xff);
    m.guest.memory.write(0x1000800n, data);
    const bus = guest.dmaMap(fn, 0x1000800n, data.length, 'to-device')!;
    expect(bus).toBeDefined();
    const read = tr0.dmaRead(bus, data.length);
    expect(read.result).toBe(0);
    expect(read.data).toEqual(data);
    guest.dmaUnmap(fn, bus, data.length);
    expect(lines.lines).toEqual([`dma_tracer_read tr0 iova=0x${bus.toString(16)} len=0x3000 res=0`]);
    expect(tr0.counters).toMatchObject({ reads: 1, bytesRead: 0x3000, faults: 0 });
  });

  it('works in a machine composed with createMachine, and reports every transfer', async () => {
    const records: DmaTransferRecord[] = [];
    const m = await createMachine(
      [spaprIommu(), spaprPci(), dmaTracer({ onTransfer: (r) => records.push(r) })],
      {
        ram: '1G',
        devices: [
          { id: 'a', driver: 'dma-tracer', slot: 1 },
          { id: 'b', driver: 'dma-tracer', slot: 2 },
        ],
      },
    );
    machines.push(m);
    const tracers = m.get(DmaTraceTokens.Tracers);
    expect(tracers.list().map((t) => t.id)).toEqual(['a', 'b']);
    expect(m.guest.hcall(H_PUT_TCE, W0, 0n, 0x100000n | 3n).ret).toBe(H_SUCCESS);
    const a = tracers.get('a') as DmaTracerDevice;
    const b = tracers.get('b') as DmaTracerDevice;
    expect(a.dmaWrite(0x10n, new Uint8Array(0x100).fill(7))).toBe(0);
    expect(b.dmaRead(0x10n, 0x100).data[0xff]).toBe(7);
    expect(records).toEqual([
      { device: 'a', direction: 'write', iova: 0x10n, length: 0x100, result: 0 },
      { device: 'b', direction: 'read', iova: 0x10n, length: 0x100, result: 0 },
    ]);
    expect(tracers.total()).toEqual({
      reads: 1,
      writes: 1,
      bytesRead: 0x100,
      bytesWritten: 0x100,
      faults: 0,
    });
    // The device tree shows the functions as the edu device they present.
    expect(m.guest.deviceTree.getPropU32Cells('/pci@800000020000000/pci1234,11e8@1', 'vendor-id')).toEqual([
      0x1234,
    ]);
  });

  it('is needed for -device dma-tracer: without it the driver is unknown', async () => {
    await expect(buildPseries('-M pseries -device dma-tracer,id=tr0')).rejects.toThrow(
      /unknown device "dma-tracer"/,
    );
  });

  it('is a package of its own: built to dist/, published entry points only, peers on the framework', () => {
    const dir = new URL('third-party-plugin/', exampleDir);
    const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8'));
    expect(pkg.exports['.']).toEqual({ types: './dist/index.d.ts', default: './dist/index.js' });
    expect(pkg.files).toContain('dist');
    expect(pkg.scripts.prepack).toBeDefined();
    expect(Object.keys(pkg.peerDependencies)).toEqual(
      expect.arrayContaining([
        '@ddw/machine',
        '@ddw/spapr-pci',
        'tsyringe',
        'reflect-metadata',
        'eventemitter3',
      ]),
    );
    expect(pkg.dependencies ?? {}).toEqual({});
    for (const file of readdirSync(new URL('src/', dir))) {
      const source = readFileSync(new URL(`src/${file}`, dir), 'utf8');
      for (const [, spec] of source.matchAll(/from '([^']+)'/g)) {
        // Bare entry points (`@ddw/machine`), never a deep import or a path into the monorepo.
        expect(spec, `${file} imports ${spec}`).toMatch(/^(@ddw\/[a-z0-9-]+|\.\/[\w.-]+\.js)$/);
      }
    }
  });
});

describe('example: a machine composed in code (custom-machine)', () => {
  it('composes plugins in requires order, publishes guest memory, and builds its service by DI', async () => {
    const m = await buildCustomMachine();
    machines.push(m);
    // /memory@0 covers the 2 GiB of RAM; no hotplug memory (lrdr-capacity 0).
    expect(m.guest.deviceTree.getPropU32Cells('/memory@0', 'reg')).toEqual([0, 0, 0, 0x80000000]);
    expect(m.guest.deviceTree.getPropU32Cells('/rtas', 'ibm,lrdr-capacity')).toEqual([
      0, 0, 0, 0x10000000, 1,
    ]);
    const inventory = m.get(BoardTokens.Inventory);
    expect(inventory).toBeInstanceOf(WindowInventory);
    expect(m.get(BoardTokens.Inventory)).toBe(inventory); // one per machine
    // Before the guest: each PHB's default window, with the board's defaults or the description's.
    expect(inventory.windows()).toEqual([
      { phb: 'pci', liobn: 0x80000000, busOffset: 0n, pageShift: 12, size: 0x20000000n, coversRam: false },
      { phb: 'fast', liobn: 0x80000100, busOffset: 0n, pageShift: 12, size: 0x10000000n, coversRam: false },
    ]);
    expect(inventory.traceEvents()).toContain('spapr_iommu_ddw_create');
    // Another machine gets its own instance.
    const other = await buildCustomMachine({ ...CUSTOM_MACHINE_DESCRIPTION, ram: '1G' });
    machines.push(other);
    expect(other.get(BoardTokens.Inventory)).not.toBe(inventory);
    expect(other.guest.deviceTree.getPropU32Cells('/memory@0', 'reg')).toEqual([0, 0, 0, 0x40000000]);
  });

  it('names the field when the description places a device wrongly', async () => {
    await expect(
      buildCustomMachine({
        ...CUSTOM_MACHINE_DESCRIPTION,
        devices: [{ id: 'x', driver: 'e1000e', bus: 'nowhere.0' }],
      }),
    ).rejects.toThrow(/devices\[0\]\.bus/);
  });

  it('runs the Linux guest model on it: probe, negotiate, and a DMA round trip per function', async () => {
    const report = await runCustomMachine();
    expect(report.ok).toBe(true);
    // Both PEs get a direct window over all 2 GiB, with the largest page each PHB offers.
    expect(report.decisions.map((d) => [d.peNode, d.outcome])).toEqual([
      ['/pci@800000020000000', 'direct'],
      ['/pci@800000020000001', 'direct'],
    ]);
    expect(report.functions.map((f) => f.device)).toEqual(['nic0', 'dma0']);
    const direct = report.windows.filter((w) => w.coversRam);
    expect(direct.map((w) => [w.phb, w.liobn, w.busOffset, w.pageShift])).toEqual([
      ['pci', 0x80000001, 0x800000000000000n, 24],
      ['fast', 0x80000101, 0x800000000000000n, 16],
    ]);
    expect(report.transfers.map((t) => `${t.device} ${t.direction}`)).toEqual([
      'nic0 to-device',
      'nic0 from-device',
      'dma0 to-device',
      'dma0 from-device',
    ]);
    expect(formatCustomReport(report)).toMatch(/custom machine: all DMA verified\n$/);
  });
});
