import { describe, expect, it } from 'vitest';
import {
  H_FUNCTION,
  H_GET_TCE,
  H_HARDWARE,
  H_PARAMETER,
  H_PRIVILEGE,
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_RTAS,
  H_STUFF_TCE,
  H_SUCCESS,
  hcallReturnName,
  RTAS_OUT_BUSY,
  RTAS_OUT_HW_ERROR,
  RTAS_OUT_NO_ERRORS_FOUND,
  RTAS_OUT_NOT_SUPPORTED,
  RTAS_OUT_PARAM_ERROR,
  RTAS_OUT_SUCCESS,
  RTAS_TOKEN_BASE,
} from '../src/papr.js';

describe('PAPR constants (reference section 1)', () => {
  it('has the hypercall return codes as bigint', () => {
    expect([H_SUCCESS, H_HARDWARE, H_FUNCTION, H_PRIVILEGE, H_PARAMETER]).toEqual([0n, -1n, -2n, -3n, -4n]);
  });

  it('has the RTAS status codes', () => {
    expect([
      RTAS_OUT_SUCCESS,
      RTAS_OUT_NO_ERRORS_FOUND,
      RTAS_OUT_HW_ERROR,
      RTAS_OUT_BUSY,
      RTAS_OUT_PARAM_ERROR,
      RTAS_OUT_NOT_SUPPORTED,
    ]).toEqual([0, 1, -1, -2, -3, -3]);
    expect(RTAS_TOKEN_BASE).toBe(0x2000);
  });

  it('has the TCE hypercall opcodes and H_RTAS', () => {
    expect([H_GET_TCE, H_PUT_TCE, H_STUFF_TCE, H_PUT_TCE_INDIRECT]).toEqual([0x1c, 0x20, 0x138, 0x13c]);
    expect(H_RTAS).toBe(0xf000);
  });

  it('names return codes, reading registers as signed 64-bit', () => {
    expect(hcallReturnName(H_PARAMETER)).toBe('H_PARAMETER');
    expect(hcallReturnName(0xfffffffffffffffcn)).toBe('H_PARAMETER');
    expect(hcallReturnName(0)).toBe('H_SUCCESS');
    expect(hcallReturnName(-2)).toBe('H_FUNCTION');
    expect(hcallReturnName(-9n)).toBe('-9');
  });
});
