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

const DOMAIN_RE = /^[a-z0-9][a-z0-9/._-]{0,127}$/;

/**
 * `str(domain)` of each domain tag seen, checked once: layouts are built on every
 * seal, open and receipt with a handful of constant tags. Bounded, so a caller
 * building layouts under ever new tags cannot grow it without limit.
 */
const DOMAIN_PREFIXES = new Map<string, Uint8Array>();
const MAX_CACHED_DOMAINS = 256;

function domainPrefix(domain: string): Uint8Array {
  const cached = DOMAIN_PREFIXES.get(domain);
  if (cached !== undefined) return cached;
  astring(domain, 'domain');
  if (!DOMAIN_RE.test(domain)) throw new CryptoError('invalid_value', 'domain tag must be lowercase ASCII [a-z0-9/._-]');
  const prefix = new Uint8Array(4 + domain.length); // the tag is ASCII: one byte per character
  writeU32(prefix, 0, domain.length);
  for (let i = 0; i < domain.length; i++) prefix[4 + i] = domain.charCodeAt(i);
  if (DOMAIN_PREFIXES.size < MAX_CACHED_DOMAINS) DOMAIN_PREFIXES.set(domain, prefix);
  return prefix;
}

function writeU32(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 24;
  buf[at + 1] = (value >>> 16) & 0xff;
  buf[at + 2] = (value >>> 8) & 0xff;
  buf[at + 3] = value & 0xff;
}

const utf8Encoder = new TextEncoder();

export class Layout {
  // Fields are written straight into one growable buffer: layouts are built on
  // every seal and open, so no per-field allocation.
  #buf: Uint8Array;
  #view: DataView | undefined;
  #len: number;

  /** Starts a layout with its domain-separation tag. */
  constructor(domain: string) {
    const prefix = domainPrefix(domain);
    this.#buf = new Uint8Array(256);
    this.#buf.set(prefix);
    this.#len = prefix.length;
  }

  #reserve(n: number): number {
    const at = this.#len;
    if (at + n > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < at + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.#buf.subarray(0, at));
      this.#buf.fill(0); // the outgrown buffer may hold secret fields written so far (see bytesAndWipe)
      this.#buf = next;
      this.#view = undefined;
    }
    this.#len = at + n;
    return at;
  }

  /** A DataView of the current buffer (64-bit fields only; rebuilt after the buffer grows). */
  #dataView(): DataView {
    if (this.#view === undefined) this.#view = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
    return this.#view;
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
    writeU32(this.#buf, at, value);
    return this;
  }

  u64(value: bigint | number): this {
    const v = au64(value, 'u64');
    const at = this.#reserve(8);
    this.#dataView().setBigUint64(at, v, false);
    return this;
  }

  i64(value: bigint | number): this {
    const v = typeof value === 'number' ? BigInt(anumber(value, 'i64', Number.MIN_SAFE_INTEGER)) : value;
    if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) {
      throw new CryptoError('invalid_value', 'i64 must be a signed 64-bit integer');
    }
    const at = this.#reserve(8);
    this.#dataView().setBigInt64(at, v, false);
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
    writeU32(this.#buf, at, bytes.length);
    this.#buf.set(bytes, at + 4);
    return this;
  }

  /** var(UTF-8(text)). */
  str(text: string): this {
    astring(text, 'text');
    const n = text.length;
    // ASCII (agent ids, tags): one byte per UTF-16 unit, written in place.
    let ascii = true;
    for (let i = 0; i < n; i++) {
      if (text.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      const at = this.#reserve(4 + n);
      const buf = this.#buf;
      writeU32(buf, at, n);
      for (let i = 0; i < n; i++) buf[at + 4 + i] = text.charCodeAt(i);
      return this;
    }
    // Anything else: TextEncoder's UTF-8 (lone surrogates become U+FFFD, as utf8() does), at most 3 bytes per unit.
    const at = this.#reserve(4 + 3 * n);
    const { written } = utf8Encoder.encodeInto(text, this.#buf.subarray(at + 4));
    writeU32(this.#buf, at, written);
    this.#len = at + 4 + written;
    return this;
  }

  /** u32 count ‖ str(item) for each item. */
  list(items: readonly string[]): this {
    this.u32(items.length);
    for (const item of items) this.str(item);
    return this;
  }

  /**
   * The fields of `part` (everything after its own domain tag), appended as they
   * are: for layouts that share a run of fields under different tags, encoded once.
   */
  fieldsOf(part: Layout): this {
    if (!(part instanceof Layout)) throw new CryptoError('invalid_type', 'part must be a Layout');
    const src = part.#buf.subarray(part.#fieldsStart(), part.#len);
    const at = this.#reserve(src.length);
    this.#buf.set(src, at);
    return this;
  }

  /** Where the fields start: after u32 length ‖ domain tag. */
  #fieldsStart(): number {
    const b = this.#buf;
    return 4 + ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!);
  }

  /** The encoded bytes (a copy). The layout keeps its own copy: see {@link bytesAndWipe} for secret fields. */
  bytes(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }

  /**
   * The encoded bytes (a copy, as {@link bytes} returns), after which the layout's own buffer is zeroed
   * and the layout holds its domain tag alone again (a later `bytes()` returns what `layout(domain).bytes()`
   * does). For layouts that contain secret material, such as a key in a `fixed` field: `bytes()` would
   * leave the secret in the layout's buffer until it is garbage-collected. Buffers the layout outgrew
   * were zeroed when it grew. The caller wipes the returned copy when done with it.
   */
  bytesAndWipe(): Uint8Array {
    const out = this.#buf.slice(0, this.#len);
    const fieldsStart = this.#fieldsStart();
    this.#buf.fill(0, fieldsStart);
    this.#len = fieldsStart;
    return out;
  }
}

/** Starts a layout: `layout('parley/v1/x').u32(1).var(bytes).bytes()`. */
export function layout(domain: string): Layout {
  return new Layout(domain);
}
