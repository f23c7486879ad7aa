import { describe, expect, it } from 'vitest';
import { PluginError } from '../src/errors.js';
import { HypercallRegistry, type HypercallResult } from '../src/hcall.js';
import { H_FUNCTION, H_HARDWARE, H_PARAMETER, H_PUT_TCE, H_RTAS, H_SUCCESS } from '../src/papr.js';

describe('HypercallRegistry', () => {
  it('dispatches by opcode and returns the handler result', () => {
    const hcalls = new HypercallRegistry();
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', ([liobn, ioba, tce]) => ({
      ret: liobn === 0x80000000n ? H_SUCCESS : H_PARAMETER,
      outputs: [ioba! + tce!],
    }));
    expect(hcalls.dispatch(H_PUT_TCE, [0x80000000n, 0x1000n, 3n])).toEqual({ ret: 0n, outputs: [0x1003n] });
    expect(hcalls.dispatch(H_PUT_TCE, [1n, 0n, 0n]).ret).toBe(H_PARAMETER);
  });

  it('answers an unknown opcode with H_FUNCTION and reports it', () => {
    const unknown: [number, readonly bigint[]][] = [];
    const hcalls = new HypercallRegistry({ onUnknown: (opcode, args) => unknown.push([opcode, args]) });
    expect(hcalls.dispatch(0x1234, [1n])).toEqual({ ret: H_FUNCTION, outputs: [] });
    expect(unknown).toEqual([[0x1234, [1n]]]);
  });

  it('hands the handler unsigned 64-bit arguments', () => {
    const hcalls = new HypercallRegistry();
    let seen: readonly bigint[] = [];
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', (args) => {
      seen = args;
      return { ret: H_SUCCESS };
    });
    hcalls.dispatch(H_PUT_TCE, [-1n, 1n << 64n, 5n]);
    expect(seen).toEqual([0xffffffffffffffffn, 0n, 5n]);
  });

  it('passes in-range arguments through without copying', () => {
    const hcalls = new HypercallRegistry();
    const args = [1n, 2n];
    let seen: readonly bigint[] | undefined;
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', (a) => {
      seen = a;
      return { ret: H_SUCCESS };
    });
    hcalls.dispatch(H_PUT_TCE, args);
    expect(seen).toBe(args);
  });

  it('normalises the return code to signed and outputs to unsigned 64-bit', () => {
    const hcalls = new HypercallRegistry();
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', () => ({ ret: 0xfffffffffffffffcn, outputs: [-1n, 7n] }));
    expect(hcalls.dispatch(H_PUT_TCE, [])).toEqual({ ret: -4n, outputs: [0xffffffffffffffffn, 7n] });
  });

  it('turns a throwing handler into H_HARDWARE and reports it as a model bug', () => {
    const errors: [number, string, unknown][] = [];
    const hcalls = new HypercallRegistry({ onHandlerError: (...e) => errors.push(e) });
    const bug = new Error('table missing');
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', () => {
      throw bug;
    });
    hcalls.register(0x24, 'H_BROKEN', () => ({ ret: 0 }) as unknown as HypercallResult);
    expect(hcalls.dispatch(H_PUT_TCE, [1n])).toEqual({ ret: H_HARDWARE, outputs: [] });
    expect(hcalls.dispatch(0x24, []).ret).toBe(H_HARDWARE);
    expect(errors[0]).toEqual([H_PUT_TCE, 'H_PUT_TCE', bug]);
    expect(String(errors[1]![2])).toMatch(/H_BROKEN returned ret=0, not a bigint/);
  });

  it('refuses a second handler for an opcode, naming both owners', () => {
    const hcalls = new HypercallRegistry();
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', () => ({ ret: H_SUCCESS }), 'spapr-iommu');
    const attempt = () => hcalls.register(H_PUT_TCE, 'MY_PUT', () => ({ ret: H_SUCCESS }), 'my-plugin');
    expect(attempt).toThrow(PluginError);
    expect(attempt).toThrow(
      /plugin "my-plugin" registers hypercall MY_PUT \(0x20\), which plugin "spapr-iommu" already registered as H_PUT_TCE/,
    );
  });

  it('refuses opcodes that are not PAPR opcodes', () => {
    const hcalls = new HypercallRegistry();
    const handler = () => ({ ret: H_SUCCESS });
    expect(() => hcalls.register(0x21, 'ODD', handler)).toThrow(/multiples of 4/);
    expect(() => hcalls.register(-4, 'NEG', handler)).toThrow(PluginError);
    expect(() => hcalls.register(H_RTAS + 1, 'KVMPPC_H_LOGICAL_MEMOP', handler)).not.toThrow();
  });

  it('lists registrations by opcode', () => {
    const hcalls = new HypercallRegistry();
    hcalls.register(H_RTAS, 'H_RTAS', () => ({ ret: H_SUCCESS }));
    hcalls.register(H_PUT_TCE, 'H_PUT_TCE', () => ({ ret: H_SUCCESS }), 'spapr-iommu');
    expect(hcalls.list()).toEqual([
      { opcode: H_PUT_TCE, name: 'H_PUT_TCE', owner: 'spapr-iommu' },
      { opcode: H_RTAS, name: 'H_RTAS', owner: 'machine' },
    ]);
    expect(hcalls.has(H_RTAS)).toBe(true);
    expect(hcalls.nameOf(H_PUT_TCE)).toBe('H_PUT_TCE');
    expect(hcalls.nameOf(0x1c)).toBeUndefined();
  });
});
