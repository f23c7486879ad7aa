// The block layout of an encoded VARRAY (VMSTATE_VARRAY_UINT32_ALLOC): the module comment of
// vmstate/index.ts describes it.

/** Elements per block of an encoded VARRAY (see the module comment of vmstate/index.ts). */
export const VARRAY_BLOCK_ELEMENTS = 1 << 14;
/** The bound (exclusive) of a run's or an affine record's stride: 2^36. */
export const VARRAY_STRIDE_LIMIT = 2 ** 36;

/** log2 of VARRAY_BLOCK_ELEMENTS: an element's block is its index shifted right by this. */
export const BLOCK_SHIFT = 14;
/** An element's offset in its block is its index masked with this. */
export const BLOCK_MASK = VARRAY_BLOCK_ELEMENTS - 1;
/** Block tags: a run of all-zero blocks, one literal block, a run of affine blocks. */
export const VARRAY_ZERO_RUN = 0x00;
export const VARRAY_LITERAL = 0x01;
export const VARRAY_AFFINE = 0x02;
/** A stride's high half is below this (stride < 2^36). */
export const STRIDE_HIGH_LIMIT = 16;
