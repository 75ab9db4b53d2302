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
import { abytes, anumber, astring } from './assert.js';
import { CryptoError } from './errors.js';
import { i64be, u32be, u64be, utf8 } from './encoding.js';

const DOMAIN_RE = /^[a-z0-9][a-z0-9/._-]{0,127}$/;

export class Layout {
  readonly #parts: Uint8Array[] = [];

  /** Starts a layout with its domain-separation tag. */
  constructor(domain: string) {
    astring(domain, 'domain');
    if (!DOMAIN_RE.test(domain)) throw new CryptoError('invalid_value', 'domain tag must be lowercase ASCII [a-z0-9/._-]');
    this.str(domain);
  }

  u8(value: number): this {
    this.#parts.push(Uint8Array.of(anumber(value, 'u8', 0, 255)));
    return this;
  }

  u32(value: number): this {
    this.#parts.push(u32be(value));
    return this;
  }

  u64(value: bigint | number): this {
    this.#parts.push(u64be(value));
    return this;
  }

  i64(value: bigint | number): this {
    this.#parts.push(i64be(value));
    return this;
  }

  /** Exactly `length` bytes, no prefix. */
  fixed(bytes: Uint8Array, length: number, name = 'field'): this {
    this.#parts.push(abytes(bytes, name, length));
    return this;
  }

  /** u32 length ‖ bytes. */
  var(bytes: Uint8Array, name = 'field'): this {
    abytes(bytes, name);
    this.#parts.push(u32be(bytes.length), bytes);
    return this;
  }

  /** var(UTF-8(text)). */
  str(text: string): this {
    return this.var(utf8(text));
  }

  /** u32 count ‖ str(item) for each item. */
  list(items: readonly string[]): this {
    this.#parts.push(u32be(items.length));
    for (const item of items) this.str(item);
    return this;
  }

  /** The encoded bytes. */
  bytes(): Uint8Array {
    let n = 0;
    for (const p of this.#parts) n += p.length;
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of this.#parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

/** Starts a layout: `layout('parley/v1/x').u32(1).var(bytes).bytes()`. */
export function layout(domain: string): Layout {
  return new Layout(domain);
}
