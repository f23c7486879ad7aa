import { createMachine, H_PARAMETER, H_SUCCESS, type Machine } from '@ddw/machine';
import { afterEach, describe, expect, it } from 'vitest';
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
    const vty = m.devices.get('hvc0') as VtyDevice;
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
    expect((m.devices.get('vty0') as VtyDevice).output).toBe('');
  });

  it('names the field when the description is wrong', async () => {
    await expect(createMachine([vtyConsole()], { ram: '512M', vty: [{ id: '', reg: -1 }] })).rejects.toThrow(
      /vty\[0\]\.id[\s\S]*vty\[0\]\.reg/,
    );
  });
});
