// Join tokens (docs/PROTOCOL.md §15.11): the text form, and that what formatJoinToken writes parseJoinToken reads.
import { createCrypto } from '@parley/crypto-core';
import { describe, expect, it } from 'vitest';
import { formatJoinToken, isProtocolError, JOIN_TOKEN_ID_BYTES, JOIN_TOKEN_SECRET_BYTES, parseJoinToken } from '../src/index.js';

const crypto = await createCrypto();

function malformed(fn: () => unknown): boolean {
  try {
    fn();
  } catch (error) {
    return isProtocolError(error, 'malformed');
  }
  return false;
}

describe('join tokens', () => {
  it('round-trips: what formatJoinToken writes, parseJoinToken reads back', () => {
    const tokenId = crypto.randomBytes(JOIN_TOKEN_ID_BYTES);
    const tokenSecret = crypto.randomBytes(JOIN_TOKEN_SECRET_BYTES);
    const text = formatJoinToken(tokenId, tokenSecret);
    expect(text).toMatch(/^pjt1\.[0-9a-f]{32}\.[A-Za-z0-9_-]{43}$/);
    expect(parseJoinToken(`  ${text}\n`)).toEqual({ tokenId, tokenSecret });
  });

  it('formatJoinToken checks the lengths parseJoinToken checks, so it never writes a token it cannot read', () => {
    const id = new Uint8Array(JOIN_TOKEN_ID_BYTES);
    const secret = new Uint8Array(JOIN_TOKEN_SECRET_BYTES);
    for (const [tokenId, tokenSecret] of [
      [new Uint8Array(3), secret],
      [new Uint8Array(15), secret],
      [new Uint8Array(17), secret],
      [id, new Uint8Array(31)],
      [id, new Uint8Array(33)],
      [id, new Uint8Array(0)],
    ] as const) {
      expect(malformed(() => formatJoinToken(tokenId, tokenSecret)), `${tokenId.length}/${tokenSecret.length}`).toBe(true);
    }
    expect(malformed(() => formatJoinToken('ab' as never, secret))).toBe(true);
  });

  it('parseJoinToken refuses anything else, a non-string included, as malformed', () => {
    for (const text of ['', 'pjt1.nope', `pjt2.${'0'.repeat(32)}.${'A'.repeat(43)}`, `pjt1.${'0'.repeat(32)}.${'A'.repeat(42)}`, 42, null, undefined, {}]) {
      expect(malformed(() => parseJoinToken(text as string)), String(text)).toBe(true);
    }
  });
});
