import { H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import { LinuxGuest } from '../src/index.js';
import { PHB, stubPort } from './stub-port.js';

const GiB = 1n << 30n;
const MiB = 1n << 20n;
const W = 0x800000000000000n;
/** nret 6 answer: 1 window, 2^37 TCEs, 4K|64K|16M. */
const QUERY6 = [1, 0x20, 0, 0x7, 0];

/** What follows the boot's clear of the 1 GiB default window (512 stuffs of 512). */
function afterBoot<T extends { opcode: number }>(calls: T[]): T[] {
  expect(calls.slice(0, 512).every((c) => c.opcode === H_STUFF_TCE)).toBe(true);
  return calls.slice(512);
}

describe('populating a direct window over several RAM ranges', () => {
  it('rounds each range start down to the TCE size and its count down (a short tail stays unmapped)', () => {
    const stub = stubPort({
      memory: [
        [0n, 2n * GiB],
        [4n * GiB + 0x10000n, 40n * MiB],
      ],
      query: QUERY6,
    });
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    expect(guest.probeAll()[0]!.mode).toBe('direct');
    // RAM ends at 4 GiB + 64K + 40M: a 2^33 window of 16M pages.
    expect(stub.rtas[1]!.args).toEqual([0, 0x08000000, 0x20000000, 24, 33]);
    const populate = afterBoot(stub.calls);
    expect(populate.map((c) => [c.opcode, c.args[0], c.args[1], c.args[3]])).toEqual([
      [H_PUT_TCE_INDIRECT, 0x80000001n, W, 128n],
      // [4G + 64K, +40M) in 16M TCEs: from 4G, floor((40M + 64K) / 16M) = 2.
      [H_PUT_TCE_INDIRECT, 0x80000001n, W + 4n * GiB, 2n],
    ]);
    expect(populate[0]!.list!.at(-1)).toBe(0x7f000003n);
    expect(populate[1]!.list).toEqual([0x100000003n, 0x101000003n]);
  });

  it('makes a call of 0 entries for a range shorter than one TCE, as the kernel loop does', () => {
    const stub = stubPort({
      memory: [
        [0n, 2n * GiB],
        [4n * GiB, 8n * MiB],
      ],
      query: QUERY6,
    });
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    guest.probeAll();
    expect(afterBoot(stub.calls).map((c) => [c.args[1], c.args[3]])).toEqual([
      [W, 128n],
      [W + 4n * GiB, 0n],
    ]);
  });

  it('works in the guest PAGE_SIZE: 4K pages round less', () => {
    const stub = stubPort({
      memory: [
        [0n, 2n * GiB],
        [4n * GiB + 0x1000n, 40n * MiB],
      ],
      query: QUERY6,
    });
    const guest = new LinuxGuest(stub.port, { pageSize: 0x1000n, tceListAddress: 0x3000000n });
    guest.boot();
    guest.probeAll();
    const populate = afterBoot(stub.calls);
    expect(populate.map((c) => [c.args[1], c.args[2], c.args[3]])).toEqual([
      [W, 0x3000000n, 128n],
      [W + 4n * GiB, 0x3000000n, 2n],
    ]);
  });

  it('sizes the window from the hotplug maximum but maps only the RAM that exists', () => {
    const stub = stubPort({ memory: [[0n, 2n * GiB]], hotplugMax: 36n * GiB, query: QUERY6 });
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    guest.probeAll();
    expect(stub.rtas[1]!.args.slice(3)).toEqual([24, 36]);
    expect(afterBoot(stub.calls).map((c) => c.args[3])).toEqual([128n]);
  });

  it('without multi-TCE, one H_PUT_TCE per TCE at window + phys', () => {
    const stub = stubPort({ memory: [[0n, 256n * MiB]], query: QUERY6, multiTce: false });
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    guest.probeAll();
    const puts = stub.calls.slice(262144);
    expect(puts.map((c) => [c.opcode, c.args[1], c.args[2]])).toEqual(
      Array.from({ length: 16 }, (_, i) => [
        H_PUT_TCE,
        W + BigInt(i) * 16n * MiB,
        BigInt(i) * 16n * MiB + 3n,
      ]),
    );
  });
});

describe('query and extensions', () => {
  it('asks for 5 outputs when ibm,ddw-extensions does not offer 6 (and reads the 32-bit block)', () => {
    const stub = stubPort({ memory: [[0n, 2n * GiB]], query: [1, 0x80000000, 0x3, 0] });
    stub.dt.setPropU32Cells(PHB, 'ibm,ddw-extensions', [1, 0x2029]);
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    expect(guest.probeAll()[0]!.window.pageShift).toBe(16);
    expect(stub.rtas[0]).toEqual({ token: 0x2026, args: [0, 0x08000000, 0x20000000], nret: 5 });
    expect(guest.log).toContain(
      'e1000e 0000:00:00.0: ibm,query-pe-dma-windows(2026) 0 8000000 20000000 returned 0, lb=80000000 ps=3 wn=1',
    );
  });

  it('gives up without any RTAS call when ibm,ddw-applicable has fewer than 3 tokens', () => {
    const stub = stubPort({ memory: [[0n, 2n * GiB]], query: QUERY6 });
    stub.dt.setPropU32Cells(PHB, 'ibm,ddw-applicable', [0x2026, 0x2027]);
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    expect(guest.probeAll()[0]!.mode).toBe('default');
    expect(stub.rtas).toEqual([]);
    expect(guest.decisions()[0]!.outcome).toBe('failed');
  });

  it('does not remove the default window without the reset extension', () => {
    const stub = stubPort({ memory: [[0n, 2n * GiB]], query: [0, 0x20, 0, 0x7, 0] });
    stub.dt.setPropU32Cells(PHB, 'ibm,ddw-extensions', [0]);
    const guest = new LinuxGuest(stub.port);
    guest.boot();
    guest.probeAll();
    expect(stub.rtas.map((r) => r.token)).toEqual([0x2026]);
    expect(guest.decisions()[0]!.reasons.at(-1)).toBe(
      'no window available and no reset extension to restore the default window',
    );
  });
});

describe('API misuse', () => {
  it('needs boot() first, and rejects odd page sizes and unaligned list pages', () => {
    const stub = stubPort({ memory: [[0n, 2n * GiB]], query: QUERY6 });
    expect(() => new LinuxGuest(stub.port).probeAll()).toThrow(/boot\(\) first/);
    expect(() => new LinuxGuest(stub.port, { pageSize: 0x3000n })).toThrow(RangeError);
    expect(() => new LinuxGuest(stub.port, { tceListAddress: 0x2070008n })).toThrow(RangeError);
  });
});
