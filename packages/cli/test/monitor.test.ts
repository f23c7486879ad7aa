import { ConfigError } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import { HMP_COMMANDS, parseHmpScript } from '../src/monitor.js';

function refusal(text: string, options?: Parameters<typeof parseHmpScript>[1]): ConfigError {
  try {
    parseHmpScript(text, options);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`"${text}" parsed`);
}

describe('parseHmpScript', () => {
  it('splits on ; and new lines, skips blanks and # comments', () => {
    const commands = parseHmpScript(
      [
        '# hot-add 1G, then look',
        'object_add memory-backend-ram,id=m1,size=1G   # the backend',
        '',
        'device_add pc-dimm,id=d1,memdev=m1; info   mtree -f',
        ' ; system_reset;',
      ].join('\n'),
    );
    expect(commands.map((c) => c.kind)).toEqual(['object_add', 'device_add', 'info-mtree', 'system_reset']);
    expect(commands[2]).toEqual({ kind: 'info-mtree', text: 'info mtree -f', flat: true, disabled: false });
  });

  it('reads object_add with or without qom-type=, with QEMU sizes', () => {
    const plain = parseHmpScript('object_add memory-backend-ram,id=m1,size=1G')[0];
    const keyed = parseHmpScript('object_add qom-type=memory-backend-ram,id=m1,size=1024M')[0];
    expect(plain).toMatchObject({
      kind: 'object_add',
      qomType: 'memory-backend-ram',
      id: 'm1',
      size: 1n << 30n,
    });
    expect(keyed).toMatchObject({
      kind: 'object_add',
      qomType: 'memory-backend-ram',
      id: 'm1',
      size: 1n << 30n,
    });
    expect(parseHmpScript('object_add memory-backend-ram,id=m2,size=0x10000000,share=on')[0]).toMatchObject({
      size: 0x10000000n,
    });
  });

  it('reads device_add pc-dimm properties', () => {
    expect(parseHmpScript('device_add pc-dimm,id=d1,memdev=m1,slot=1,addr=0xc0000000')[0]).toEqual({
      kind: 'device_add',
      text: 'device_add pc-dimm,id=d1,memdev=m1,slot=1,addr=0xc0000000',
      driver: 'pc-dimm',
      id: 'd1',
      memdev: 'm1',
      slot: 1,
      addr: 0xc0000000n,
    });
    expect(parseHmpScript('device_add driver=pc-dimm,memdev=m1')[0]).toMatchObject({ driver: 'pc-dimm' });
  });

  it('reads device_del, object_del and the info commands', () => {
    expect(
      parseHmpScript('device_del d1; object_del m1; info pci; info memory-devices; info mtree -D'),
    ).toEqual([
      { kind: 'device_del', text: 'device_del d1', id: 'd1' },
      { kind: 'object_del', text: 'object_del m1', id: 'm1' },
      { kind: 'info-pci', text: 'info pci' },
      { kind: 'info-memory-devices', text: 'info memory-devices' },
      { kind: 'info-mtree', text: 'info mtree -D', flat: false, disabled: true },
    ]);
  });

  it('refuses an unknown command, listing the supported ones', () => {
    const e = refusal('info pci; migrate tcp:0:4444');
    expect(e.message).toBe(
      `--hmp "migrate tcp:0:4444": command: unknown command: 'migrate'; ddw's monitor supports: ${HMP_COMMANDS.join(', ')}`,
    );
    expect(refusal('info tlb').message).toContain("unknown command: 'info tlb'");
  });

  it('names the command and the property at fault', () => {
    expect(refusal('device_add pc-dimm,id=d1,memdev=m1,size=1G').message).toBe(
      `--hmp "device_add pc-dimm,id=d1,memdev=m1,size=1G": size: Property 'pc-dimm.size' not found; pc-dimm properties: id, memdev, slot, addr, node`,
    );
    expect(refusal('device_add pc-dimm,slot=x').message).toMatch(
      /^--hmp "device_add pc-dimm,slot=x": slot: Parameter 'slot' expects int32/,
    );
    expect(refusal('device_add e1000e,id=nic9').message).toMatch(
      /^--hmp "device_add e1000e,id=nic9": driver: ddw's monitor hot-adds only pc-dimm, not 'e1000e'/,
    );
    expect(refusal('device_add').field).toBe('driver');
    expect(refusal('device_del').message).toMatch(/^--hmp "device_del": id: Parameter 'id' is missing/);
    expect(refusal('system_reset now').field).toBe('arguments');
    expect(refusal('info mtree -d').message).toContain('info mtree -d is not modelled');
  });

  it('refuses what object_add cannot create', () => {
    expect(refusal('object_add memory-backend-ram,size=1G').message).toMatch(/id: Parameter 'id' is missing/);
    expect(refusal('object_add memory-backend-ram,id=m1').message).toMatch(
      /size: can't create backend with size 0/,
    );
    expect(refusal('object_add memory-backend-ram,id=m1,size=0').field).toBe('size');
    expect(refusal('object_add memory-backend-ram,id=m1,size=lots').message).toMatch(
      /size: "lots" is not a size/,
    );
    expect(refusal('object_add memory-backend-file,id=m1,size=1G,mem-path=/dev/shm').message).toMatch(
      /qom-type: ddw models only memory-backend-ram, not memory-backend-file/,
    );
    expect(refusal('object_add iothread,id=io0').message).toMatch(/qom-type: invalid object type: iothread/);
    expect(refusal('object_add memory-backend-ram,id=m1,size=1G,bogus=1').message).toMatch(
      /bogus: Property 'memory-backend-ram.bogus' not found/,
    );
    expect(refusal('object_add memory-backend-ram,id=1m,size=1G').field).toBe('id');
  });

  it('gives the file and line for a script file', () => {
    const e = refusal('# comment\nsystem_reset\nfrobnicate\n', { source: 'hotplug.hmp', file: true });
    expect(e.message).toMatch(/^hotplug\.hmp:3 "frobnicate": command: unknown command: 'frobnicate'/);
  });
});
