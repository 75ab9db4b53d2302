import { describe, expect, it } from 'vitest';
import { CryptoError, layout, toHex, type Layout } from './index.js';

describe('layout', () => {
  it('encodes each field type exactly as docs/PROTOCOL.md §2 says', () => {
    const bytes = layout('parley/v1/test')
      .u8(7)
      .u32(0x01020304)
      .u64(0x0102030405060708n)
      .i64(-2)
      .fixed(Uint8Array.of(0xaa, 0xbb), 2)
      .var(Uint8Array.of(0xcc))
      .str('é')
      .list(['a', 'bc'])
      .bytes();
    expect(toHex(bytes)).toBe(
      [
        '0000000e', Buffer.from('parley/v1/test').toString('hex'),
        '07',
        '01020304',
        '0102030405060708',
        'fffffffffffffffe',
        'aabb',
        '00000001cc',
        '00000002c3a9',
        '00000002', '0000000161', '000000026263',
      ].join(''),
    );
  });

  it('grows past its initial buffer without losing bytes', () => {
    const big = Uint8Array.from({ length: 5000 }, (_, i) => i % 251);
    const l = layout('parley/v1/test').u32(1);
    for (let i = 0; i < 3; i++) l.var(big).fixed(big.subarray(0, 300), 300).u64(i).i64(-i).u8(i).str('x'.repeat(700));
    const parts: Uint8Array[] = [Buffer.from('0000000e', 'hex'), Buffer.from('parley/v1/test'), Buffer.from('00000001', 'hex')];
    for (let i = 0; i < 3; i++) {
      const n = Buffer.alloc(8);
      n.writeBigUInt64BE(BigInt(i));
      const m = Buffer.alloc(8);
      m.writeBigInt64BE(BigInt(-i));
      parts.push(Buffer.from('00001388', 'hex'), big, big.subarray(0, 300), n, m, Uint8Array.of(i), Buffer.from('000002bc', 'hex'), Buffer.from('x'.repeat(700)));
    }
    expect(toHex(l.bytes())).toBe(toHex(Buffer.concat(parts)));
  });

  it('rejects a wrong fixed length, a bad domain and out-of-range integers', () => {
    expect(() => layout('parley/v1/t').fixed(new Uint8Array(3), 2)).toThrow(CryptoError);
    expect(() => layout('Parley V1')).toThrow(CryptoError);
    expect(() => layout('parley/v1/t').u8(256)).toThrow(CryptoError);
    expect(() => layout('parley/v1/t').u32(-1)).toThrow(CryptoError);
    expect(() => layout('parley/v1/t').u64(-1n)).toThrow(CryptoError);
    expect(() => layout('parley/v1/t').i64(1n << 63n)).toThrow(CryptoError);
  });

  it('encodes str() as TextEncoder does, ASCII or not (lone surrogates become U+FFFD)', () => {
    for (const text of ['', 'agent-1.example', 'é', 'ü日本\u{1f600}', 'a\ud800b', '\udc00', 'x'.repeat(300) + 'é'.repeat(200)]) {
      const utf8 = new TextEncoder().encode(text);
      const expected = Buffer.concat([Buffer.from('0000000e', 'hex'), Buffer.from('parley/v1/test'), Buffer.from(utf8.length.toString(16).padStart(8, '0'), 'hex'), utf8]);
      expect(toHex(layout('parley/v1/test').str(text).bytes())).toBe(toHex(expected));
    }
  });

  it('fieldsOf appends the fields of another layout, without its domain tag', () => {
    const shared = layout('parley/v1/shared').u32(7).str('abc').var(Uint8Array.of(1, 2));
    const direct = layout('parley/v1/other').u8(9).u32(7).str('abc').var(Uint8Array.of(1, 2)).u64(5n);
    expect(toHex(layout('parley/v1/other').u8(9).fieldsOf(shared).u64(5n).bytes())).toBe(toHex(direct.bytes()));
    expect(toHex(layout('parley/v1/other').fieldsOf(layout('parley/v1/shared')).bytes())).toBe(toHex(layout('parley/v1/other').bytes()));
    expect(() => layout('parley/v1/t').fieldsOf({} as never)).toThrow(CryptoError);
  });

  it('bytesAndWipe returns the bytes and zeroes every buffer the layout wrote a secret into, outgrown ones too', () => {
    const secret = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
    const holds = (buf: Uint8Array): boolean => Buffer.from(buf).includes(Buffer.from(secret));
    // Records the buffers Layout copies into (its own growable buffer, before and after growing); restored in finally.
    const proto = Uint8Array.prototype;
    const originalSet = proto.set;
    const targets = new Set<Uint8Array>();
    proto.set = function (this: Uint8Array, ...args: Parameters<Uint8Array['set']>): void {
      targets.add(this);
      originalSet.apply(this, args);
    };
    let l1: Layout;
    let l2: Layout;
    let small: Uint8Array;
    let grown: Uint8Array;
    try {
      l1 = layout('parley/v1/test').str('memory-1').fixed(secret, 32, 'key');
      l2 = layout('parley/v1/test').fixed(secret, 32, 'key').var(new Uint8Array(1000)); // the secret is written before the buffer grows
      small = l1.bytesAndWipe();
      grown = l2.bytesAndWipe();
    } finally {
      proto.set = originalSet;
    }
    expect(toHex(small)).toBe(toHex(layout('parley/v1/test').str('memory-1').fixed(secret, 32).bytes()));
    expect(toHex(grown)).toBe(toHex(layout('parley/v1/test').fixed(secret, 32).var(new Uint8Array(1000)).bytes()));
    expect(targets.size).toBeGreaterThanOrEqual(3); // l1's buffer, l2's first buffer and the one it grew into
    for (const buf of targets) expect(holds(buf)).toBe(false);
    // What is left is the domain tag alone, and the layout can be used again.
    expect(toHex(l1.bytes())).toBe(toHex(layout('parley/v1/test').bytes()));
    expect(toHex(l2.bytesAndWipe())).toBe(toHex(layout('parley/v1/test').bytes()));
    expect(toHex(l1.u8(1).bytes())).toBe(toHex(layout('parley/v1/test').u8(1).bytes()));
    // bytes() keeps the layout's own copy.
    const kept = layout('parley/v1/test').fixed(secret, 32);
    kept.bytes();
    expect(toHex(kept.bytes())).toContain(toHex(secret));
  });

  it('checks a domain tag every time it is used, cached or not', () => {
    expect(toHex(layout('parley/v1/test').bytes())).toBe(toHex(layout('parley/v1/test').bytes()));
    for (let i = 0; i < 300; i++) expect(() => layout(`parley/v1/t${i}`)).not.toThrow();
    expect(() => layout('Parley V1')).toThrow(CryptoError);
    expect(() => layout('Parley V1')).toThrow(CryptoError);
    expect(() => layout(7 as unknown as string)).toThrow(CryptoError);
  });
});
