// Encoding and decoding a section's fields.

import { formatHex, UINT64_MAX } from '@ddw/memory';
import { messageOf } from '../errors.js';
import type { VMStateField, VMStateScalarType } from './description.js';
import { describe, Malformed } from './errors.js';
import type { ByteReader, StreamWriter } from './streams.js';
import { getVarray } from './varray/decode.js';
import { putVarray } from './varray/encode.js';

function putScalar(w: StreamWriter, type: VMStateScalarType, value: unknown, name: string): void {
  const bad = () => new Malformed(`field ${name}: ${describe(value)} is not a ${type}`);
  switch (type) {
    case 'bool':
      if (typeof value !== 'boolean') throw bad();
      w.u8(value ? 1 : 0);
      return;
    case 'uint64':
    case 'int64': {
      const v = typeof value === 'number' && Number.isSafeInteger(value) ? BigInt(value) : value;
      if (typeof v !== 'bigint') throw bad();
      if (type === 'uint64' ? v < 0n || v > UINT64_MAX : v < -(1n << 63n) || v >= 1n << 63n) throw bad();
      w.u64(v);
      return;
    }
    default: {
      const bits = SCALAR_BITS[type];
      const signed = type.startsWith('int');
      if (typeof value !== 'number' || !Number.isInteger(value)) throw bad();
      const lo = signed ? -(2 ** (bits - 1)) : 0;
      const hi = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
      if (value < lo || value > hi) throw bad();
      const u = value < 0 ? value + 2 ** bits : value;
      if (bits === 8) w.u8(u);
      else if (bits === 16) w.u16(u);
      else w.u32(u);
    }
  }
}

const SCALAR_BITS: Record<string, number> = {
  uint8: 8,
  uint16: 16,
  uint32: 32,
  int8: 8,
  int16: 16,
  int32: 32,
};

function getScalar(r: ByteReader, type: VMStateScalarType, name: string): number | bigint | boolean {
  const what = `field ${name}`;
  switch (type) {
    case 'bool': {
      const b = r.u8(what);
      if (b > 1) throw new Malformed(`field ${name}: bool byte ${formatHex(b)} is neither 0 nor 1`);
      return b === 1;
    }
    case 'uint64':
      return r.u64(what);
    case 'int64':
      return BigInt.asIntN(64, r.u64(what));
    case 'uint8':
      return r.u8(what);
    case 'int8':
      return (r.u8(what) << 24) >> 24;
    case 'uint16':
      return r.u16(what);
    case 'int16':
      return (r.u16(what) << 16) >> 16;
    case 'uint32':
      return r.u32(what);
    case 'int32':
      return r.u32(what) | 0;
  }
}

export function putFields(
  w: StreamWriter,
  fields: readonly VMStateField[],
  opaque: object,
  version: number,
): void {
  const values = opaque as Record<string, unknown>;
  for (const field of fields) {
    if ((field.version ?? 0) > version) continue;
    const value = values[field.name];
    if (field.type === 'varray_uint32_alloc') {
      putVarray(w, field, value, values[field.count] as number);
    } else if (field.type === 'custom') {
      try {
        field.info.put(w, value);
      } catch (error) {
        throw new Malformed(`field ${field.name} (${field.info.name}): ${messageOf(error)}`);
      }
    } else {
      putScalar(w, field.type, value, field.name);
    }
  }
}

/** Reads the fields present in `version`; EQUAL fields are compared with `opaque`'s values. */
export function getFields(
  r: ByteReader,
  fields: readonly VMStateField[],
  opaque: object,
  version: number,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const live = opaque as Record<string, unknown>;
  for (const field of fields) {
    if ((field.version ?? 0) > version) continue;
    if (field.type === 'varray_uint32_alloc') {
      out[field.name] = getVarray(r, field, out[field.count] as number);
    } else if (field.type === 'custom') {
      let value: unknown;
      try {
        value = field.info.get(r, version);
      } catch (error) {
        throw new Malformed(`field ${field.name} (${field.info.name}): ${messageOf(error)}`);
      }
      out[field.name] = value;
    } else {
      const value = getScalar(r, field.type, field.name);
      if (field.equal) {
        const mine = live[field.name];
        const same =
          typeof mine === 'number' && typeof value === 'bigint' ? BigInt(mine) === value : mine === value;
        if (!same) {
          throw new Malformed(
            `field ${field.name}: ${describe(value)} != ${describe(mine)} (the snapshot's value must equal this machine's)`,
          );
        }
      }
      out[field.name] = value;
    }
  }
  return out;
}
