/**
 * PAPR numbers the guest and the machine agree on (reference section 1). Hypercall return codes
 * are bigint because they travel in 64-bit registers; RTAS status codes are numbers because they
 * travel in 32-bit cells.
 */

export const H_SUCCESS = 0n;
export const H_HARDWARE = -1n;
export const H_FUNCTION = -2n;
export const H_PRIVILEGE = -3n;
export const H_PARAMETER = -4n;
/**
 * Not a code QEMU returns, but a host (KVM, PowerVM) may give it; Linux undoes a mapping then.
 * Kept out of the names below, which list what the machine answers.
 */
export const H_NOT_ENOUGH_RESOURCES = -44n;

const HCALL_RETURN_NAMES = new Map<bigint, string>([
  [H_SUCCESS, 'H_SUCCESS'],
  [H_HARDWARE, 'H_HARDWARE'],
  [H_FUNCTION, 'H_FUNCTION'],
  [H_PRIVILEGE, 'H_PRIVILEGE'],
  [H_PARAMETER, 'H_PARAMETER'],
]);

/**
 * The symbolic name of a hypercall return code, read as a signed 64-bit value so a register
 * holding 0xfffffffffffffffc is H_PARAMETER. Unknown codes come back as their decimal value.
 */
export function hcallReturnName(code: bigint | number): string {
  const signed = BigInt.asIntN(64, BigInt(code));
  return HCALL_RETURN_NAMES.get(signed) ?? signed.toString();
}

export const RTAS_OUT_SUCCESS = 0;
export const RTAS_OUT_NO_ERRORS_FOUND = 1;
export const RTAS_OUT_HW_ERROR = -1;
export const RTAS_OUT_BUSY = -2;
export const RTAS_OUT_PARAM_ERROR = -3;
/** Same value as PARAM_ERROR in QEMU: a guest cannot tell the two apart. */
export const RTAS_OUT_NOT_SUPPORTED = -3;

/** First token of the range QEMU hands out to RTAS calls. */
export const RTAS_TOKEN_BASE = 0x2000;

export const RTAS_IBM_QUERY_PE_DMA_WINDOW = 0x2026;
export const RTAS_IBM_CREATE_PE_DMA_WINDOW = 0x2027;
export const RTAS_IBM_REMOVE_PE_DMA_WINDOW = 0x2028;
export const RTAS_IBM_RESET_PE_DMA_WINDOW = 0x2029;

// Hypercall opcodes go in r3; PAPR ones are multiples of 4.
export const H_GET_TCE = 0x1c;
export const H_PUT_TCE = 0x20;
export const H_STUFF_TCE = 0x138;
export const H_PUT_TCE_INDIRECT = 0x13c;

/** Start of the hypercall range private to KVM/QEMU, outside PAPR's numbering. */
export const KVMPPC_HCALL_BASE = 0xf000;
/** How SLOF and the guest enter RTAS under QEMU: r4 holds the argument buffer's address. */
export const H_RTAS = KVMPPC_HCALL_BASE;
