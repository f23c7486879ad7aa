import { describe, expect, it } from 'vitest';
import { PluginError } from '../src/errors.js';
import {
  RTAS_IBM_CREATE_PE_DMA_WINDOW,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
  RTAS_OUT_HW_ERROR,
  RTAS_OUT_PARAM_ERROR,
  RTAS_OUT_SUCCESS,
  RTAS_TOKEN_BASE,
} from '../src/papr.js';
import { RTAS_DISPATCH_MAX_RETS, type RtasCall, RtasRegistry } from '../src/rtas.js';

const cells = (...values: number[]) => Uint32Array.from(values.map((v) => v >>> 0));

describe('RtasRegistry', () => {
  it('dispatches by token with unsigned cells and signed statuses through setRet', () => {
    const rtas = new RtasRegistry();
    let seen: RtasCall | undefined;
    rtas.register(
      'ibm,query-pe-dma-window',
      (call) => {
        seen = call;
        if (call.nargs !== 3 || call.nret !== 5) return call.setRet(0, RTAS_OUT_PARAM_ERROR);
        call.setRet(0, RTAS_OUT_SUCCESS);
        call.setRet(1, 1);
        call.setRet(2, 0x80000000);
        call.setRet(3, 0x3);
        call.setRet(4, 0);
      },
      { token: RTAS_IBM_QUERY_PE_DMA_WINDOW, owner: 'rtas-ddw' },
    );
    const rets = rtas.dispatch(RTAS_IBM_QUERY_PE_DMA_WINDOW, cells(0, 0x08000000, 0x20000000), 5);
    expect([...rets]).toEqual([0, 1, 0x80000000, 3, 0]);
    expect(seen).toMatchObject({
      token: 0x2026,
      name: 'ibm,query-pe-dma-window',
      nargs: 3,
      nret: 5,
      status: 0,
    });
    expect([...seen!.args]).toEqual([0, 0x08000000, 0x20000000]);

    const bad = rtas.dispatch(RTAS_IBM_QUERY_PE_DMA_WINDOW, cells(0, 0, 0), 4);
    expect(bad.length).toBe(4);
    expect(bad[0]).toBe(0xfffffffd);
    expect(seen!.status).toBe(-3);
  });

  it('lets the guest-stated nargs differ from the cells passed', () => {
    const rtas = new RtasRegistry();
    let nargs = -1;
    rtas.register('probe', (call) => {
      nargs = call.nargs;
    });
    rtas.dispatch(rtas.tokenOf('probe')!, cells(1, 2), 1, 1000);
    expect(nargs).toBe(1000);
  });

  it('answers an unknown token with PARAM_ERROR, in the status cell even when nret is 0 (as QEMU)', () => {
    const unknown: number[] = [];
    const rtas = new RtasRegistry({ onUnknown: (token) => unknown.push(token) });
    expect([...rtas.dispatch(0x2fff, cells(), 1)]).toEqual([RTAS_OUT_PARAM_ERROR >>> 0]);
    expect([...rtas.dispatch(0x2fff, cells(), 0)]).toEqual([RTAS_OUT_PARAM_ERROR >>> 0]);
    expect(unknown).toEqual([0x2fff, 0x2fff]);
  });

  it('turns a throwing handler into HW_ERROR and reports it', () => {
    const errors: unknown[][] = [];
    const rtas = new RtasRegistry({ onHandlerError: (...e) => errors.push(e) });
    const bug = new Error('phb table corrupt');
    const token = rtas.register('ibm,broken', () => {
      throw bug;
    });
    const rets = rtas.dispatch(token, cells(), 2);
    expect(rets[0]! | 0).toBe(RTAS_OUT_HW_ERROR);
    expect(errors).toEqual([[token, 'ibm,broken', bug]]);
  });

  it('bounds the return cells a guest can ask for, and ignores writes past them', () => {
    const rtas = new RtasRegistry();
    const token = rtas.register('fill', (call) => {
      for (let i = 0; i < 100; i++) call.setRet(i, i);
      call.setRet(-1, 7);
    });
    expect(rtas.dispatch(token, cells(), 0xffffffff).length).toBe(RTAS_DISPATCH_MAX_RETS);
    expect([...rtas.dispatch(token, cells(), 2)]).toEqual([0, 1]);
    // The status cell is always there: QEMU's handlers store rets[0] whatever nret says.
    expect([...rtas.dispatch(token, cells(), 0)]).toEqual([0]);
  });

  it('hands out free tokens from RTAS_TOKEN_BASE and keeps fixed ones', () => {
    const rtas = new RtasRegistry();
    const handler = () => {};
    expect(rtas.register('display-character', handler)).toBe(RTAS_TOKEN_BASE);
    expect(rtas.register('ibm,create-pe-dma-window', handler, { token: RTAS_IBM_CREATE_PE_DMA_WINDOW })).toBe(
      0x2027,
    );
    expect(rtas.register('get-time-of-day', handler)).toBe(RTAS_TOKEN_BASE + 1);
    expect(rtas.tokenOf('ibm,create-pe-dma-window')).toBe(0x2027);
    expect(rtas.nameOf(RTAS_TOKEN_BASE + 1)).toBe('get-time-of-day');
    expect(rtas.nameOf(0x2028)).toBeUndefined();
    expect(rtas.list().map((c) => c.token)).toEqual([0x2000, 0x2001, 0x2027]);
  });

  it('refuses duplicate names and tokens and malformed registrations', () => {
    const rtas = new RtasRegistry();
    const handler = () => {};
    rtas.register('ibm,query-pe-dma-window', handler, { token: 0x2026, owner: 'rtas-ddw' });
    expect(() => rtas.register('ibm,query-pe-dma-window', handler, { owner: 'other' })).toThrow(
      /plugin "other" registers RTAS call "ibm,query-pe-dma-window", which plugin "rtas-ddw" already registered/,
    );
    expect(() => rtas.register('ibm,mine', handler, { token: 0x2026, owner: 'other' })).toThrow(
      /token 0x2026, which "ibm,query-pe-dma-window" \(plugin "rtas-ddw"\) already has/,
    );
    expect(() => rtas.register('', handler)).toThrow(PluginError);
    expect(() => rtas.register('x', handler, { token: 2 ** 32 })).toThrow(/not a 32-bit cell/);
    expect(() => rtas.register('y', undefined as unknown as () => void)).toThrow(/without a handler/);
  });
});
