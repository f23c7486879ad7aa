import { describe, expect, it } from 'vitest';
import { DeviceTree } from '../src/devicetree.js';
import { ConfigError, DdwError } from '../src/errors.js';

const PHB = '/pci@800000020000000';

describe('DeviceTree', () => {
  it('starts with the root and adds nodes under existing parents', () => {
    const dt = new DeviceTree();
    expect(dt.nodes()).toEqual(['/']);
    dt.addNode('/rtas');
    dt.addNode(PHB);
    dt.addNode(`${PHB}/ethernet@0`);
    expect(dt.nodes()).toEqual(['/', '/rtas', PHB, `${PHB}/ethernet@0`]);
    expect(dt.hasNode(PHB)).toBe(true);
    expect(() => dt.addNode('/rtas')).toThrow(/the node already exists/);
    expect(() => dt.addNode('/cpus/PowerPC,POWER9@0')).toThrow(
      'device tree: /cpus/PowerPC,POWER9@0: the parent node /cpus does not exist',
    );
  });

  it('ensureNode adds missing ancestors and is idempotent', () => {
    const dt = new DeviceTree();
    dt.ensureNode('/cpus/PowerPC,POWER9@0');
    dt.ensureNode('/cpus/PowerPC,POWER9@0');
    dt.ensureNode('/');
    expect(dt.nodes()).toEqual(['/', '/cpus', '/cpus/PowerPC,POWER9@0']);
  });

  it.each([
    ['rtas', /is not an absolute path/],
    ['/rtas/', /empty component/],
    ['//rtas', /empty component/],
    ['/bad name', /invalid node name "bad name"/],
    ['/a@', /invalid node name "a@"/],
  ])('refuses the path %s', (path, message) => {
    const dt = new DeviceTree();
    expect(() => dt.addNode(path)).toThrow(ConfigError);
    expect(() => dt.addNode(path)).toThrow(message);
  });

  it("round-trips 32-bit cells big-endian, negative cells as two's complement", () => {
    const dt = new DeviceTree();
    dt.addNode(PHB);
    dt.setPropU32Cells(PHB, 'ibm,dma-window', [0x80000000, 0, 0, 0, 0x40000000]);
    dt.setPropU32Cells(PHB, 'neg', [-1]);
    expect([...dt.getProp(PHB, 'ibm,dma-window')!.subarray(0, 8)]).toEqual([0x80, 0, 0, 0, 0, 0, 0, 0]);
    expect(dt.getPropU32Cells(PHB, 'ibm,dma-window')).toEqual([0x80000000, 0, 0, 0, 0x40000000]);
    expect(dt.getPropU32Cells(PHB, 'neg')).toEqual([0xffffffff]);
    expect(() => dt.setPropU32Cells(PHB, 'big', [2 ** 32])).toThrow(/does not fit in 32 bits/);
    expect(() => dt.setPropU32Cells(PHB, 'frac', [1.5])).toThrow(ConfigError);
  });

  it('stores 64-bit values as two cells', () => {
    const dt = new DeviceTree();
    dt.setPropU64('/', 'addr', 0x800000000000000n);
    expect(dt.getPropU32Cells('/', 'addr')).toEqual([0x08000000, 0]);
    expect(() => dt.setPropU64('/', 'addr', -1n)).toThrow(ConfigError);
  });

  it('round-trips strings and NUL-separated string lists', () => {
    const dt = new DeviceTree();
    dt.addNode('/rtas');
    dt.setPropStrings('/rtas', 'ibm,hypertas-functions', ['hcall-tce', 'hcall-multi-tce']);
    dt.setPropString('/', 'compatible', 'qemu,pseries');
    expect(new TextDecoder().decode(dt.getProp('/rtas', 'ibm,hypertas-functions'))).toBe(
      'hcall-tce\0hcall-multi-tce\0',
    );
    expect(dt.getPropStrings('/rtas', 'ibm,hypertas-functions')).toEqual(['hcall-tce', 'hcall-multi-tce']);
    expect(dt.getPropStrings('/', 'compatible')).toEqual(['qemu,pseries']);
    expect(() => dt.setPropString('/', 'bad', 'a\0b')).toThrow(/contains a NUL/);
  });

  it('reads empty properties and refuses to misread others', () => {
    const dt = new DeviceTree();
    dt.setPropEmpty('/', 'interrupt-controller');
    expect(dt.getProp('/', 'interrupt-controller')).toEqual(new Uint8Array(0));
    expect(dt.getPropStrings('/', 'interrupt-controller')).toEqual([]);
    dt.setProp('/', 'odd', new Uint8Array([1, 2, 3]));
    expect(() => dt.getPropU32Cells('/', 'odd')).toThrow(DdwError);
    expect(() => dt.getPropStrings('/', 'odd')).toThrow(/not a list of NUL-terminated strings/);
    expect(dt.getProp('/', 'missing')).toBeUndefined();
    expect(dt.getPropU32Cells('/nowhere', 'x')).toBeUndefined();
    expect(dt.getPropStrings('/', 'missing')).toBeUndefined();
  });

  it('copies values in and out', () => {
    const dt = new DeviceTree();
    const value = new Uint8Array([1, 2]);
    dt.setProp('/', 'v', value);
    value[0] = 9;
    const read = dt.getProp('/', 'v')!;
    read[1] = 9;
    expect([...dt.getProp('/', 'v')!]).toEqual([1, 2]);
  });

  it('lists, replaces and removes properties', () => {
    const dt = new DeviceTree();
    dt.setPropU32Cells('/', '#address-cells', [2]);
    dt.setPropU32Cells('/', 'ibm,#dma-size-cells', [2]);
    dt.setPropU32Cells('/', '#address-cells', [1]);
    expect(dt.props('/')).toEqual(['#address-cells', 'ibm,#dma-size-cells']);
    expect(dt.getPropU32Cells('/', '#address-cells')).toEqual([1]);
    expect(dt.removeProp('/', '#address-cells')).toBe(true);
    expect(dt.removeProp('/', '#address-cells')).toBe(false);
    expect(() => dt.setProp('/', 'bad name', new Uint8Array())).toThrow(/not a valid property name/);
    expect(() => dt.setProp('/nowhere', 'x', new Uint8Array())).toThrow(
      'device tree: /nowhere: no such node; add it with addNode() first',
    );
  });

  it('removes a node with its subtree but never the root', () => {
    const dt = new DeviceTree();
    dt.ensureNode(`${PHB}/ethernet@0`);
    dt.addNode('/rtas');
    dt.addNode('/pci@800000020000001');
    expect(dt.removeNode(PHB)).toBe(true);
    expect(dt.nodes()).toEqual(['/', '/rtas', '/pci@800000020000001']);
    expect(dt.removeNode(PHB)).toBe(false);
    expect(() => dt.removeNode('/')).toThrow(/root node cannot be removed/);
  });
});
