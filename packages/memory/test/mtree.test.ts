import { describe, expect, it } from 'vitest';
import { AddressSpace, AliasRegion, ContainerRegion, MmioRegion, mtree, RamRegion } from '../src/index.js';

function demo() {
  const system = new ContainerRegion('system', 1n << 64n);
  const ram = new RamRegion('ppc_spapr.ram', 0x8000_0000n);
  system.addSubregion(0n, ram);
  const rom = new RamRegion('rom', 0x1000n, { readonly: true });
  system.addSubregion(0xf000_0000n, rom);
  const dev = new MmioRegion('dev', 0x100n, {});
  system.addSubregion(0x1_0000_0000n, dev, { priority: 1 });
  const hidden = new MmioRegion('hidden', 0x100n, {});
  system.addSubregion(0x1_0000_0000n, hidden);
  hidden.setEnabled(false);
  const window = new AliasRegion('ram-window', ram, 0x4000_0000n, 0x1000n);
  system.addSubregion(0x2_0000_0000n, window);
  return [new AddressSpace(system, 'memory'), new AddressSpace(system, 'cpu-memory-0')];
}

describe('mtree', () => {
  it('prints the hierarchy as `info mtree`, with aliased regions listed after', () => {
    expect(mtree(demo())).toBe(
      [
        'address-space: cpu-memory-0',
        'address-space: memory',
        '  0000000000000000-ffffffffffffffff (prio 0, i/o): system',
        '    0000000000000000-000000007fffffff (prio 0, ram): ppc_spapr.ram',
        '    00000000f0000000-00000000f0000fff (prio 0, rom): rom',
        '    0000000100000000-00000001000000ff (prio 1, i/o): dev',
        '    0000000200000000-0000000200000fff (prio 0, ram): alias ram-window @ppc_spapr.ram 0000000040000000-0000000040000fff',
        '',
        'memory-region: ppc_spapr.ram',
        '  0000000000000000-000000007fffffff (prio 0, ram): ppc_spapr.ram',
        '',
        '',
      ].join('\n'),
    );
  });

  it('shows disabled regions on request', () => {
    expect(mtree(demo(), { disabled: true })).toContain(
      '    0000000100000000-00000001000000ff (prio 0, i/o): hidden [disabled]\n',
    );
  });

  it('prints the rendered flat view as `info mtree -f`', () => {
    expect(mtree(demo(), { flat: true })).toBe(
      [
        'FlatView #0',
        ' AS "memory", root: system',
        ' AS "cpu-memory-0", root: system',
        ' Root memory region: system',
        '  0000000000000000-000000007fffffff (prio 0, ram): ppc_spapr.ram',
        '  00000000f0000000-00000000f0000fff (prio 0, rom): rom',
        '  0000000100000000-00000001000000ff (prio 1, i/o): dev',
        '  0000000200000000-0000000200000fff (prio 0, ram): ppc_spapr.ram @0000000040000000',
        '',
        '',
      ].join('\n'),
    );
    const empty = new AddressSpace(new ContainerRegion('nothing', 0x1000n), 'empty');
    expect(mtree([empty], { flat: true })).toContain('  No rendered FlatView\n');
  });
});
