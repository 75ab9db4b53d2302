/**
 * Language-neutral byte layouts for everything Parley signs, MACs or hashes
 * (docs/PROTOCOL.md §2). Never "the protobuf bytes": each layout is a fixed
 * sequence of fields, each encoded one way only:
 *
 *   u8      1 byte
 *   u32     4 bytes, big-endian
 *   u64     8 bytes, big-endian
 *   i64     8 bytes, big-endian two's complement
 *   fixed   exactly N bytes, no length prefix (N is fixed by the layout)
 *   var     u32 length ‖ bytes
 *   str     var of the UTF-8 encoding
 *   list    u32 count ‖ str for each item, in order
 *
 * and every layout starts with `str(domain)`, an ASCII domain-separation tag
 * such as "parley/v1/agent-certificate", so no two layouts can collide.
 */
import { abytes, anumber, astring, au64 } from './assert.js';
import { CryptoError } from './errors.js';
import { utf8 } from './encoding.js';

const DOMAIN_RE = /^[a-z0-9][a-z0-9/._-]{0,127}$/;

export class Layout {
  // Fields are written straight into one growable buffer: layouts are built on
  // every seal and open, so no per-field allocation.
  #buf = new Uint8Array(256);
  #view = new DataView(this.#buf.buffer);
  #len = 0;

  /** Starts a layout with its domain-separation tag. */
  constructor(domain: string) {
    astring(domain, 'domain');
    if (!DOMAIN_RE.test(domain)) throw new CryptoError('invalid_value', 'domain tag must be lowercase ASCII [a-z0-9/._-]');
    this.str(domain);
  }

  #reserve(n: number): number {
    const at = this.#len;
    if (at + n > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < at + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.#buf.subarray(0, at));
      this.#buf = next;
      this.#view = new DataView(next.buffer);
    }
    this.#len = at + n;
    return at;
  }

  u8(value: number): this {
    anumber(value, 'u8', 0, 255);
    const at = this.#reserve(1); // reserve first: it may replace the buffer
    this.#buf[at] = value;
    return this;
  }

  u32(value: number): this {
    anumber(value, 'u32', 0, 0xffff_ffff);
    const at = this.#reserve(4);
    this.#view.setUint32(at, value, false);
    return this;
  }

  u64(value: bigint | number): this {
    const v = au64(value, 'u64');
    const at = this.#reserve(8);
    this.#view.setBigUint64(at, v, false);
    return this;
  }

  i64(value: bigint | number): this {
    const v = typeof value === 'number' ? BigInt(anumber(value, 'i64', Number.MIN_SAFE_INTEGER)) : value;
    if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) {
      throw new CryptoError('invalid_value', 'i64 must be a signed 64-bit integer');
    }
    const at = this.#reserve(8);
    this.#view.setBigInt64(at, v, false);
    return this;
  }

  /** Exactly `length` bytes, no prefix. */
  fixed(bytes: Uint8Array, length: number, name = 'field'): this {
    abytes(bytes, name, length);
    const at = this.#reserve(length);
    this.#buf.set(bytes, at);
    return this;
  }

  /** u32 length ‖ bytes. */
  var(bytes: Uint8Array, name = 'field'): this {
    abytes(bytes, name);
    const at = this.#reserve(4 + bytes.length);
    this.#view.setUint32(at, bytes.length, false);
    this.#buf.set(bytes, at + 4);
    return this;
  }

  /** var(UTF-8(text)). */
  str(text: string): this {
    return this.var(utf8(text));
  }

  /** u32 count ‖ str(item) for each item. */
  list(items: readonly string[]): this {
    this.u32(items.length);
    for (const item of items) this.str(item);
    return this;
  }

  /** The encoded bytes (a copy). */
  bytes(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

/** Starts a layout: `layout('parley/v1/x').u32(1).var(bytes).bytes()`. */
export function layout(domain: string): Layout {
  return new Layout(domain);
}
