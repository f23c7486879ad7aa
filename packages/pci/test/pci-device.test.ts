import { ConfigError } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import { DMA_ENGINE_IDS, E1000E_IDS, emulatedDmaDriver, PciDevice } from '../src/index.js';
import { RamBus } from './helpers.js';

describe('PciDevice', () => {
  it('computes devfn, the RTAS config address and its device-tree node name from its address and ids', () => {
    const bus = new RamBus();
    const nic = new PciDevice('nic', 'e1000e', bus, { slot: 1, fn: 0 }, true, E1000E_IDS);
    const engine = new PciDevice('dma', 'dma-engine', bus, { slot: 5, fn: 1 }, true, DMA_ENGINE_IDS);
    expect([nic.devfn, nic.configAddress, nic.nodeName]).toEqual([0x8, 0x800, 'ethernet@1']);
    expect([engine.devfn, engine.configAddress, engine.nodeName]).toEqual([0x29, 0x2900, 'pci1234,11e8@5,1']);
  });

  it("DMAs through its bus's address space, and an access that does not reach memory whole touches nothing", () => {
    const bus = new RamBus();
    const dev = new PciDevice('dma', 'dma-engine', bus, { slot: 0, fn: 0 }, true);
    expect(dev.dmaAddressSpace).toBe(bus.dmaAddressSpace);
    expect(dev.dmaWrite(0x100n, Uint8Array.of(1, 2, 3))).toBe(MemTxResult.OK);
    expect(dev.dmaRead(0x100n, 3)).toEqual({ result: MemTxResult.OK, data: Uint8Array.of(1, 2, 3) });
    // The last two bytes are past the RAM's end.
    expect(dev.dmaWrite(0xfffen, new Uint8Array(4).fill(0xcc))).toBe(MemTxResult.DECODE_ERROR);
    expect(dev.dmaRead(0xfffen, 2).data).toEqual(new Uint8Array(2));
    expect(dev.dmaRead(0x10000n, 4).result).toBe(MemTxResult.DECODE_ERROR);
  });
});

describe('emulatedDmaDriver', () => {
  it('creates a 64-bit DMA device on the bus it is given, with its ids; the bus attaches it', () => {
    const bus = new RamBus();
    const driver = emulatedDmaDriver('e1000e', E1000E_IDS);
    const dev = driver.create({ id: 'nic0', bus, address: { slot: 2, fn: 0 }, props: {} });
    expect(dev.bus).toBe(bus);
    expect([dev.driver, dev.dma64, dev.ids]).toEqual(['e1000e', true, E1000E_IDS]);
    bus.attach(dev);
    const clash = driver.create({ id: 'nic1', bus, address: { slot: 2, fn: 0 }, props: {} });
    expect(() => bus.attach(clash)).toThrow(ConfigError);
    bus.detach(dev);
    bus.attach(clash);
    expect(bus.devices).toEqual([clash]);
  });
});
