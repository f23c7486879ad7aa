import { LinuxGuest } from '@ddw/guest-linux';
import { H_GET_TCE, type Machine, MachineTokens, TraceBus } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { buildPseries, DRCONF_MEMORY_NODE, memoryHotplugOf, SPAPR_LMB_FLAGS_ASSIGNED } from '@ddw/pseries';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import { infoPci, parseHmpScript, runHmp } from '../packages/cli/src/monitor.js';

const GiB = 1n << 30n;
const HOTPLUG = '-M pseries -m 2G,maxmem=6G,slots=2 -device e1000e';

interface Rig {
  machine: Machine;
  guest: LinuxGuest;
  lines: string[];
  out: string[];
  err: string[];
  run(script: string): ReturnType<typeof runHmp>;
}

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function rig(qemuArgs = HOTPLUG): Promise<Rig> {
  const trace = new TraceBus();
  trace.setPatterns(['spapr_iommu_*']);
  const lines: string[] = [];
  trace.addSink({ write: (l) => void lines.push(l) });
  const machine = await buildPseries(qemuArgs, { trace });
  machines.push(machine);
  const guest = new LinuxGuest(machine.guest, { generation: 'linux-6.12' });
  guest.boot();
  guest.probeAll();
  const out: string[] = [];
  const err: string[] = [];
  const r: Rig = {
    machine,
    guest,
    lines,
    out,
    err,
    run: async (script: string) => {
      const result = await runHmp(parseHmpScript(script), {
        machine,
        guest: r.guest,
        io: { out: (t) => void out.push(t), err: (t) => void err.push(t) },
      });
      if (result.guest) r.guest = result.guest;
      return result;
    },
  };
  return r;
}

const count = (lines: readonly string[], event: string) =>
  lines.filter((l) => l.startsWith(`${event} `)).length;
const field = (line: string, name: string) =>
  BigInt(new RegExp(`${name}=(0x[0-9a-f]+|-?\\d+)`).exec(line)![1]!);

function e1000e(machine: Machine) {
  return machine.get(SpaprPciTokens.Phbs).list[0]!.devices.find((d) => d.id !== undefined)!;
}

describe('system_reset', () => {
  it('resets the machine and the guest reboots and negotiates its DDW again', async () => {
    const r = await rig();
    const first = r.guest;
    const queries = count(r.lines, 'spapr_iommu_ddw_query');
    const creates = count(r.lines, 'spapr_iommu_ddw_create');
    expect(creates).toBe(1);
    const result = await r.run('system_reset');
    expect(result.ok).toBe(true);
    expect(result.guest).not.toBe(first);
    // The reset took the DDW away (the PHB's DMA reset), so the rebooted guest queries and creates again.
    expect(count(r.lines, 'spapr_iommu_ddw_query')).toBe(2 * queries);
    expect(count(r.lines, 'spapr_iommu_ddw_create')).toBe(2);
    expect(r.guest.decisions().map((d) => d.outcome)).toEqual(['direct']);
    const ddw = r.machine.get(SpaprPciTokens.Phbs).list[0]!.windows[1]!;
    expect(ddw.enabled).toBe(true);
    expect(r.out.join('')).toContain('(qemu) system_reset');
  });
});

describe('system_reset with DIMMs', () => {
  it('keeps plugged DIMMs: still mapped, still assigned in ibm,dynamic-memory-v2', async () => {
    const r = await rig();
    await r.run('object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1');
    const result = await r.run('system_reset');
    expect(result.ok).toBe(true);
    expect(r.machine.mtree()).toMatch(/0000000080000000-00000000bfffffff \(prio 0, ram\): m1\n/);
    const cells = r.machine
      .get(MachineTokens.DeviceTree)
      .getPropU32Cells(DRCONF_MEMORY_NODE, 'ibm,dynamic-memory-v2')!;
    expect(cells[1 + 6 + 5]! & SPAPR_LMB_FLAGS_ASSIGNED).toBe(SPAPR_LMB_FLAGS_ASSIGNED);
  });

  it('a guest rebooted after a hot-add maps the DIMM into its DDW at boot, as System RAM', async () => {
    const r = await rig();
    await r.run('object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1');
    await r.run('system_reset');
    // The rebooted guest populates its direct window from every RAM range it booted with: boot
    // RAM and the DIMM's LMBs at 2 GiB, so the TCE for the DIMM's first 16M page maps it.
    const ddw = r.machine.get(SpaprPciTokens.Phbs).list[0]!.windows[1]!;
    const tce = r.machine.guest.hcall(H_GET_TCE, BigInt(ddw.liobn), ddw.busOffset + 0x80000000n);
    expect(tce.ret).toBe(0n);
    expect(tce.outputs![0]! & ~3n).toBe(0x80000000n);
    const beyond = r.machine.guest.hcall(H_GET_TCE, BigInt(ddw.liobn), ddw.busOffset + 0xc0000000n);
    expect(beyond.outputs![0]).toBe(0n);
  });
});

describe('memory hot-add', () => {
  it('plugs a 1G DIMM at the start of device memory and the guest maps its 4 LMBs into the DDW', async () => {
    const r = await rig();
    const ddw = r.machine.get(SpaprPciTokens.Phbs).list[0]!.windows[1]!;
    expect(ddw.enabled).toBe(true);
    const dev = e1000e(r.machine);
    const before = r.lines.length;
    const probe = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    const target = 2n * GiB + 0x12345678n; // inside the second LMB of the DIMM-to-be
    expect(dev.dmaWrite(ddw.busOffset + target, probe)).not.toBe(MemTxResult.OK);

    const result = await r.run(
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1',
    );
    expect(result.ok).toBe(true);
    const dimm = memoryHotplugOf(r.machine).dimm('d1')!;
    expect(dimm.addr).toBe(2n * GiB); // RAM's end rounded up to 1 GiB: the first free address
    expect(dimm.slot).toBe(0);

    const added = r.lines.slice(before);
    const indirect = added.filter((l) => l.startsWith('spapr_iommu_pci_indirect '));
    expect(indirect).toHaveLength(4);
    for (const [i, line] of indirect.entries()) {
      const lmb = 2n * GiB + BigInt(i) * (256n << 20n);
      expect(field(line, 'liobn')).toBe(BigInt(ddw.liobn));
      expect(field(line, 'ioba')).toBe(ddw.busOffset + lmb);
      // 16 x 16M TCEs per LMB: the trace gives the last entry's index and TCE.
      expect(field(line, 'iobaN')).toBe(15n);
      expect(field(line, 'tceN')).toBe((lmb + 15n * (1n << 24n)) | 3n);
      expect(field(line, 'tcelist')).toBe(field(indirect[0]!, 'tcelist')); // one list page, reused
      expect(field(line, 'ret')).toBe(0n);
    }
    // Every 16M TCE of the new memory maps its own page read-write.
    for (let a = 2n * GiB; a < 3n * GiB; a += 1n << 24n) {
      expect(ddw.entry(Number(a >> 24n))).toBe(a | 3n);
    }
    // The device now reaches the DIMM through the DDW, and the guest finds what it wrote.
    expect(dev.dmaWrite(ddw.busOffset + target, probe)).toBe(MemTxResult.OK);
    const back = new Uint8Array(probe.length);
    r.machine.guest.memory.read(target, back);
    expect([...back]).toEqual([...probe]);

    // What the guest sees: the LMBs assigned in ibm,dynamic-memory-v2.
    const cells = r.machine
      .get(MachineTokens.DeviceTree)
      .getPropU32Cells(DRCONF_MEMORY_NODE, 'ibm,dynamic-memory-v2')!;
    const entries = [];
    for (let i = 0; i < cells[0]!; i++) entries.push(cells.slice(1 + i * 6, 7 + i * 6));
    expect(entries.map((e) => [e[0], e[2], e[5]! & SPAPR_LMB_FLAGS_ASSIGNED])).toEqual([
      [8, 0, 0], // boot RAM: 8 reserved LMBs
      [4, 0x80000000, SPAPR_LMB_FLAGS_ASSIGNED], // the DIMM
      [12, 0xc0000000, 0], // the rest of device memory, free
    ]);
    expect(r.err.join('')).toContain('4 LMB(s) at 0x80000000 online');
  });

  it('places a second DIMM after the first and shows both in info mtree and info memory-devices', async () => {
    const r = await rig();
    const result = await r.run(
      [
        'object_add qom-type=memory-backend-ram,id=m1,size=1G',
        'object_add memory-backend-ram,id=m2,size=512M',
        'device_add pc-dimm,id=d1,memdev=m1',
        'device_add pc-dimm,id=d2,memdev=m2',
        'info mtree',
        'info memory-devices',
      ].join('\n'),
    );
    expect(result.ok).toBe(true);
    expect(memoryHotplugOf(r.machine).dimm('d2')!.addr).toBe(3n * GiB);
    expect(memoryHotplugOf(r.machine).dimm('d2')!.slot).toBe(1);
    const mtree = result.results[4]!.output;
    expect(mtree).toMatch(/0000000080000000-000000017fffffff \(prio 0, i\/o\): device-memory\n/);
    expect(mtree).toMatch(/ {6}0000000080000000-00000000bfffffff \(prio 0, ram\): m1\n/);
    expect(mtree).toMatch(/ {6}00000000c0000000-00000000dfffffff \(prio 0, ram\): m2\n/);
    expect(result.results[5]!.output).toBe(
      [
        'Memory device [dimm]: "d1"',
        '  addr: 0x80000000',
        '  slot: 0',
        '  node: 0',
        '  size: 1073741824',
        '  memdev: /objects/m1',
        '  hotplugged: true',
        '  hotpluggable: true',
        'Memory device [dimm]: "d2"',
        '  addr: 0xc0000000',
        '  slot: 1',
        '  node: 0',
        '  size: 536870912',
        '  memdev: /objects/m2',
        '  hotplugged: true',
        '  hotpluggable: true',
        '',
      ].join('\n'),
    );
  });
});

describe('refused hotplug', () => {
  const cases: [string, string, string][] = [
    [
      '-M pseries -m 2G -device e1000e',
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1',
      "no slots where allocated, please specify the 'slots' option",
    ],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=100M; device_add pc-dimm,id=d1,memdev=m1',
      'Hotplugged memory size must be a multiple of 256 MB',
    ],
    [HOTPLUG, 'device_add pc-dimm,id=d1', "'memdev' property must be set"],
    [HOTPLUG, 'device_add pc-dimm,id=d1,memdev=m9', "Device 'm9' not found"],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1; device_add pc-dimm,id=d2,memdev=m1',
      "can't use already busy memdev: m1",
    ],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; object_add memory-backend-ram,id=m2,size=1G; object_add memory-backend-ram,id=m3,size=1G; device_add pc-dimm,id=d1,memdev=m1; device_add pc-dimm,id=d2,memdev=m2; device_add pc-dimm,id=d3,memdev=m3',
      'no free slots available',
    ],
    [
      '-M pseries -m 2G,maxmem=4G,slots=4 -device e1000e',
      'object_add memory-backend-ram,id=m1,size=1G; object_add memory-backend-ram,id=m2,size=2G; device_add pc-dimm,id=d1,memdev=m1; device_add pc-dimm,id=d2,memdev=m2',
      'not enough space, currently 0x40000000 in use of total space for memory devices 0x80000000',
    ],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1,addr=0x160000000',
      "can't add memory device [0x160000000:0x40000000], usable range for memory devices [0x80000000:0x100000000]",
    ],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; object_add memory-backend-ram,id=m2,size=1G; device_add pc-dimm,id=d1,memdev=m1; device_add pc-dimm,id=d2,memdev=m2,addr=0xa0000000',
      "address range conflicts with memory device id='d1'",
    ],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=e1000e-0,memdev=m1',
      "Duplicate device ID 'e1000e-0'",
    ],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; object_add memory-backend-ram,id=m1,size=2G',
      "attempt to add duplicate property 'm1' to object (type 'container')",
    ],
    [HOTPLUG, 'device_del nosuch', "Device 'nosuch' not found"],
    [HOTPLUG, 'device_del pci', "ddw does not model PHB hot unplug: 'pci' is a PCI host bridge"],
    [
      HOTPLUG,
      'object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1; object_del m1',
      "object 'm1' is in use, can not be deleted",
    ],
  ];
  it.each(cases)('%s: %s', async (qemuArgs, script, message) => {
    const r = await rig(qemuArgs);
    const result = await r.run(script);
    const last = result.results.at(-1)!;
    expect(result.results.slice(0, -1).every((x) => x.ok)).toBe(true);
    expect(last.ok).toBe(false);
    expect(last.error).toBe(message);
    expect(r.err.join('')).toContain(`Error: ${message}\n`);
  });

  it('changes nothing when refused', async () => {
    const r = await rig();
    const mtree = r.machine.mtree();
    await r.run('object_add memory-backend-ram,id=m1,size=100M; device_add pc-dimm,id=d1,memdev=m1');
    expect(memoryHotplugOf(r.machine).dimms()).toEqual([]);
    expect(r.machine.mtree()).toBe(mtree);
  });
});

describe('device_del', () => {
  it('takes a DIMM away after the guest offlines its LMBs (H_STUFF_TCE clears them from the DDW)', async () => {
    const r = await rig();
    await r.run('object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1');
    const ddw = r.machine.get(SpaprPciTokens.Phbs).list[0]!.windows[1]!;
    const before = r.lines.length;
    const result = await r.run('device_del d1; info memory-devices');
    expect(result.ok).toBe(true);
    const stuffs = r.lines.slice(before).filter((l) => l.startsWith('spapr_iommu_pci_stuff '));
    expect(stuffs).toHaveLength(4);
    for (let a = 2n * GiB; a < 3n * GiB; a += 1n << 24n) expect(ddw.entry(Number(a >> 24n))).toBe(0n);
    expect(memoryHotplugOf(r.machine).dimms()).toEqual([]);
    expect(result.results[1]!.output).toBe('');
    expect(r.machine.mtree()).not.toMatch(/\): m1\n/);
    expect(e1000e(r.machine).dmaWrite(ddw.busOffset + 2n * GiB, new Uint8Array(8))).not.toBe(MemTxResult.OK);
    // The backend is free again: a new DIMM can use it, at the same address.
    const again = await r.run('device_add pc-dimm,id=d2,memdev=m1');
    expect(again.ok).toBe(true);
    expect(memoryHotplugOf(r.machine).dimm('d2')!.addr).toBe(2n * GiB);
  });

  it('leaves a DIMM pending when no guest releases it, and refuses a second request', async () => {
    const r = await rig();
    await r.run('object_add memory-backend-ram,id=m1,size=1G; device_add pc-dimm,id=d1,memdev=m1');
    const io = { out: () => undefined, err: () => undefined };
    const result = await runHmp(parseHmpScript('device_del d1; device_del d1'), { machine: r.machine, io });
    expect(result.results.map((x) => x.ok)).toEqual([true, false]);
    expect(result.results[1]!.error).toBe('Memory unplug already in progress for device d1');
    expect(memoryHotplugOf(r.machine).dimm('d1')).toBeDefined();
  });

  it('unplugs a PCI device: info pci and the PHB node no longer show it', async () => {
    const r = await rig('-M pseries -m 2G,maxmem=6G,slots=2 -device e1000e,id=nic0 -device e1000e,id=nic1');
    const phb = r.machine.get(SpaprPciTokens.Phbs).list[0]!;
    const nodes = () =>
      r.machine
        .get(MachineTokens.DeviceTree)
        .nodes()
        .filter((n) => n.startsWith(`${phb.nodePath}/`));
    expect(nodes()).toHaveLength(2);
    const result = await r.run('device_del nic0; info pci');
    expect(result.ok).toBe(true);
    expect(phb.devices.map((d) => d.id)).toEqual(['nic1']);
    expect(nodes()).toHaveLength(1);
    expect(result.results[1]!.output).not.toContain('nic0');
    expect(result.results[1]!.output).toContain('id "nic1"');
    const twice = await r.run('device_del nic0');
    expect(twice.results[0]!.error).toBe("Device 'nic0' not found");
  });
});

describe('info', () => {
  it('info pci lists each function as QEMU does', async () => {
    const r = await rig(
      '-M pseries -m 2G -device spapr-pci-host-bridge,index=1,id=phb1 -device e1000e,id=nic0 -device e1000e,id=nic1,bus=phb1.0',
    );
    const text = infoPci(r.machine);
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(6);
    for (let i = 0; i < lines.length; i += 3) {
      expect(lines[i]).toMatch(/^ {2}Bus {2}0, device +\d+, function 0:$/);
      expect(lines[i + 1]).toBe('    Ethernet controller: PCI device 8086:10d3');
      expect(lines[i + 2]).toMatch(/^ {6}id "nic[01]"$/);
    }
    expect(lines[2]).toBe('      id "nic0"');
    expect(lines[5]).toBe('      id "nic1"');
  });

  it('info mtree and info mtree -f print the machine memory tree', async () => {
    const r = await rig();
    const result = await r.run('info mtree; info mtree -f');
    expect(result.results[0]!.output).toBe(r.machine.mtree());
    expect(result.results[0]!.output).toMatch(/^address-space: memory\n/);
    expect(result.results[1]!.output).toBe(r.machine.mtree({ flat: true }));
    expect(result.results[1]!.output).toMatch(/FlatView #0\n/);
    expect(r.out.join('')).toContain('(qemu) info mtree -f\n');
  });
});
