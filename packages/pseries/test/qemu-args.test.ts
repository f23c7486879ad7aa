import { parseQemuSize } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import {
  machineType,
  parseQemuArgs,
  pseriesDescription,
  pseriesMemoryLayout,
  resolvePhbConfig,
  splitCommandLine,
} from '../src/index.js';
import { refusal } from './refusal.js';

const GiB = 1n << 30n;
const MiB = 1n << 20n;

describe('machine types', () => {
  it("takes pseries as the default QEMU version's newest type (pseries-10.0) and knows pseries-2.7", () => {
    expect(machineType('pseries').name).toBe('pseries-10.0');
    expect(machineType('pseries', '-M', '7.2').name).toBe('pseries-7.2');
    expect(machineType('pseries-2.7').ddw.queryNret6).toBe(false);
    expect(machineType('pseries-2.7').phbDefaults.pgsz).toBe(0x11000n);
    expect(machineType('pseries-7.2').phbDefaults.pgsz).toBe(0x1211000n);
  });

  it('refuses an unknown type, naming it and the known ones', () => {
    const e = refusal(() => parseQemuArgs('-M pseries-9.9'));
    expect(e.field).toBe('-M');
    expect(e.message).toContain('"pseries-9.9" for QEMU 10.0');
    expect(e.message).toContain('pseries-3.0');
    expect(refusal(() => parseQemuArgs('-M pseries-9.9', { version: '7.2' })).message).toContain(
      'pseries-2.7',
    );
  });
});

describe('-m', () => {
  it('reads a bare number as MiB, as QEMU does, and suffixes and fractions as sizes', () => {
    expect(parseQemuArgs('-m 2048').ram).toBe(2n * GiB);
    expect(parseQemuArgs('-m 2G').ram).toBe(2n * GiB);
    expect(parseQemuArgs('-m size=1.5g').ram).toBe(1536n * MiB);
    expect(parseQemuArgs('-M pseries').ram).toBe(512n * MiB);
    expect(parseQemuSize('0x1000', 'x')).toBe(0x1000n);
  });

  it('takes maxmem and slots, and places hotplug memory at RAM rounded up to 1 GiB', () => {
    const args = parseQemuArgs('-m 2560M,maxmem=8G,slots=4');
    expect(args).toMatchObject({ ram: 2560n * MiB, maxmem: 8n * GiB, slots: 4 });
    const layout = pseriesMemoryLayout(args);
    expect(layout.deviceMemory).toEqual({ base: 3n * GiB, size: 8n * GiB - 2560n * MiB });
    expect(layout.maxRamAddress).toBe(3n * GiB + 8n * GiB - 2560n * MiB);
    expect(pseriesMemoryLayout({ ram: 4n * GiB }).maxRamAddress).toBe(4n * GiB);
  });

  it('refuses what QEMU refuses, naming the sub-option', () => {
    expect(refusal(() => pseriesMemoryLayout({ ram: 4n * GiB, maxmem: 2n * GiB, slots: 1 })).field).toBe(
      'maxmem',
    );
    expect(refusal(() => pseriesMemoryLayout({ ram: 2n * GiB, maxmem: 8n * GiB })).field).toBe('maxmem');
    expect(refusal(() => pseriesMemoryLayout({ ram: 2n * GiB, maxmem: 2n * GiB, slots: 2 })).field).toBe(
      'maxmem',
    );
    expect(
      refusal(() => pseriesMemoryLayout({ ram: 2n * GiB, maxmem: 8n * GiB, slots: 33 })).message,
    ).toContain('max supported 32');
    expect(refusal(() => pseriesMemoryLayout({ ram: 100n * MiB })).message).toContain(
      'not aligned to 256 MiB',
    );
    expect(refusal(() => parseQemuArgs('-m 2G,foo=1')).field).toBe('-m foo');
    expect(refusal(() => parseQemuArgs('-m lots')).field).toBe('-m size');
  });
});

describe('PHBs and devices', () => {
  it('has the default PHB "pci" on bus pci.0, and numbers id-less extra PHBs pci.1, pci.2', () => {
    const args = parseQemuArgs(
      '-device spapr-pci-host-bridge,index=1 -device spapr-pci-host-bridge,index=2,id=phb2,ddw=off -device spapr-pci-host-bridge,index=3',
    );
    expect(args.phbs.map((p) => [p.index, p.bus])).toEqual([
      [0, 'pci.0'],
      [1, 'pci.1'],
      [2, 'phb2.0'],
      [3, 'pci.2'],
    ]);
    expect(resolvePhbConfig(args, 2)).toEqual({ ddw: false });
  });

  it('applies -global to every PHB, and a PHB property over the global', () => {
    const args = parseQemuArgs(
      '-global spapr-pci-host-bridge.pgsz=0x11000 -global driver=spapr-pci-host-bridge,property=dma_win_size,value=0x80000000 -device spapr-pci-host-bridge,index=1,pgsz=69632',
    );
    expect(resolvePhbConfig(args, 0)).toEqual({ pgsz: '0x11000', dma_win_size: '0x80000000' });
    expect(resolvePhbConfig(args, 1)).toEqual({ pgsz: '0x11000', dma_win_size: '0x80000000' });
  });

  it('takes bus, id and a hexadecimal slot.function address for devices', () => {
    const args = parseQemuArgs(
      '-device spapr-pci-host-bridge,index=1,id=b1 -device e1000e,id=nic,bus=b1.0,addr=0x1f.2,netdev=n0',
    );
    expect(args.devices).toEqual([
      {
        option: '-device e1000e,id=nic,bus=b1.0,addr=0x1f.2,netdev=n0',
        driver: 'e1000e',
        id: 'nic',
        bus: 'b1.0',
        slot: 31,
        fn: 2,
        props: { netdev: 'n0' },
      },
    ]);
    const description = pseriesDescription(parseQemuArgs('-device e1000e -device e1000e'));
    expect((description.devices as { id: string }[]).map((d) => d.id)).toEqual(['e1000e-0', 'e1000e-1']);
  });

  it('refuses bad PHB and device options, naming them', () => {
    expect(refusal(() => parseQemuArgs('-device spapr-pci-host-bridge')).field).toBe(
      '-device spapr-pci-host-bridge index',
    );
    expect(refusal(() => parseQemuArgs('-device spapr-pci-host-bridge,index=31')).message).toContain(
      'too large (max 30)',
    );
    expect(refusal(() => parseQemuArgs('-device spapr-pci-host-bridge,index=0')).message).toContain(
      'index 0',
    );
    expect(refusal(() => parseQemuArgs('-device spapr-pci-host-bridge,index=1,frob=2')).message).toContain(
      'no property "frob"',
    );
    expect(refusal(() => parseQemuArgs('-global spapr-pci-host-bridge.ddw=maybe')).field).toBe(
      '-global spapr-pci-host-bridge.ddw',
    );
    expect(refusal(() => parseQemuArgs('-global spapr-pci-host-bridge.pgsz=big')).field).toBe(
      '-global spapr-pci-host-bridge.pgsz',
    );
    expect(refusal(() => parseQemuArgs('-global e1000e.mac=1')).field).toBe('-global e1000e.mac');
    expect(refusal(() => parseQemuArgs('-device e1000e,bus=pci.7')).message).toContain(
      "Bus 'pci.7' not found",
    );
    expect(refusal(() => parseQemuArgs('-device e1000e,addr=0x20')).field).toBe('-device e1000e addr');
  });
});

describe('the command line', () => {
  it('splits like a shell and accepts options that do not shape DMA', () => {
    expect(splitCommandLine(`-append 'console=hvc0 quiet' -m "2G"`)).toEqual([
      '-append',
      'console=hvc0 quiet',
      '-m',
      '2G',
    ]);
    const args = parseQemuArgs(
      "-M pseries,cap-htm=off -cpu power9 -nographic -m 2G -kernel vmlinux -append 'console=hvc0' -netdev user,id=n0 -device e1000e,netdev=n0",
    );
    expect(args.ignored).toEqual([
      '-cpu power9',
      '-nographic',
      '-kernel vmlinux',
      '-append console=hvc0',
      '-netdev user,id=n0',
    ]);
    expect(args.machineProps).toEqual({ 'cap-htm': 'off' });
    expect(parseQemuArgs('-enable-kvm').accel).toBe('kvm');
    expect(parseQemuArgs('-M pseries,accel=kvm').accel).toBe('kvm');
    expect(parseQemuArgs('-accel accel=kvm').accel).toBe('kvm');
  });

  it('refuses an unknown option or machine property by name', () => {
    expect(refusal(() => parseQemuArgs('-M pseries -frobnicate')).message).toContain('"-frobnicate"');
    expect(refusal(() => parseQemuArgs('-M pseries,wibble=1')).field).toBe('-M wibble');
    expect(refusal(() => parseQemuArgs('-m')).message).toContain('requires an argument');
    expect(refusal(() => parseQemuArgs('-accel hvf')).message).toContain('"hvf"');
  });
});
