/**
 * Byte encodings: hex, base64url (RFC 4648 §5, no padding), UTF-8, fixed-width
 * big-endian integers and concatenation. Pure functions: usable before the
 * async initialiser. Decoders are strict (no whitespace, no mixed padding) and
 * throw `invalid_encoding`.
 */
import { abytes, astring, au64, anumber } from './assert.js';
import { CryptoError } from './errors.js';

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;
const B64URL_RE = /^[A-Za-z0-9_-]*$/;

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  abytes(bytes, 'bytes');
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Decodes hex (either case, even length). */
export function fromHex(hex: string): Uint8Array {
  astring(hex, 'hex');
  if (!HEX_RE.test(hex)) throw new CryptoError('invalid_encoding', 'hex must be an even number of hex digits');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** base64url without padding (RFC 4648 §5). */
export function toBase64Url(bytes: Uint8Array): string {
  abytes(bytes, 'bytes');
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

/** Strict base64url decoding: URL alphabet only, no padding, canonical trailing bits. */
export function fromBase64Url(text: string): Uint8Array {
  astring(text, 'base64url');
  if (!B64URL_RE.test(text) || text.length % 4 === 1) {
    throw new CryptoError('invalid_encoding', 'not canonical unpadded base64url');
  }
  const bytes = new Uint8Array(Buffer.from(text, 'base64url'));
  // Reject non-canonical encodings (stray low bits in the last character).
  if (Buffer.from(bytes).toString('base64url') !== text) {
    throw new CryptoError('invalid_encoding', 'not canonical unpadded base64url');
  }
  return bytes;
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(astring(text, 'text'));
}

/** Strict UTF-8 decoding (throws `invalid_encoding` on malformed input). */
export function fromUtf8(bytes: Uint8Array): string {
  abytes(bytes, 'bytes');
  try {
    return utf8Decoder.decode(bytes);
  } catch (cause) {
    throw new CryptoError('invalid_encoding', 'bytes are not valid UTF-8', { cause });
  }
}

/** Concatenates byte strings. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const [i, p] of parts.entries()) length += abytes(p, `parts[${i}]`).length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** 4-byte big-endian encoding of an unsigned 32-bit integer. */
export function u32be(value: number): Uint8Array {
  anumber(value, 'value', 0, 0xffff_ffff);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, false);
  return out;
}

/** 8-byte big-endian encoding of an unsigned 64-bit integer. */
export function u64be(value: bigint | number): Uint8Array {
  const v = au64(value, 'value');
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v, false);
  return out;
}

/** 8-byte big-endian two's-complement encoding of a signed 64-bit integer. */
export function i64be(value: bigint | number): Uint8Array {
  const v = typeof value === 'number' ? BigInt(anumber(value, 'value', Number.MIN_SAFE_INTEGER)) : value;
  if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) {
    throw new CryptoError('invalid_value', 'value must be a signed 64-bit integer');
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, v, false);
  return out;
}
