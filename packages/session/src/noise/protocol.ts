/**
 * Noise protocol names and the functions they select (Noise spec rev. 34,
 * §8 "Protocol names and modifiers", §12 "DH, cipher and hash functions").
 * Parley speaks exactly Noise_XX_25519_ChaChaPoly_BLAKE2b; the SHA256 variant
 * exists so the published SHA256 vectors can be checked too.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, check, malformed } from '../assert.js';
import { SessionError } from '../errors.js';
import { PATTERNS, type HandshakePattern } from './patterns.js';

/** The protocol Parley uses on the wire. */
export const PARLEY_NOISE_PROTOCOL = 'Noise_XX_25519_ChaChaPoly_BLAKE2b';

/** A Noise hash function (§4.3): HASH, HMAC-HASH, HASHLEN, BLOCKLEN. */
export interface NoiseHash {
  readonly name: 'BLAKE2b' | 'SHA256';
  readonly hashLen: 32 | 64;
  hash(data: Uint8Array): Uint8Array;
  hmac(key: SecretKey, data: Uint8Array | SecretKey): Uint8Array;
}

export interface NoiseProtocol {
  readonly name: string;
  readonly pattern: HandshakePattern;
  readonly hash: NoiseHash;
}

function hashFunction(name: string, crypto: ParleyCrypto): NoiseHash {
  switch (name) {
    case 'BLAKE2b':
      return {
        name,
        hashLen: 64,
        hash: (data) => crypto.blake2b(data, 64),
        hmac: (key, data) => crypto.hmacBlake2b(key, data),
      };
    case 'SHA256':
      return {
        name,
        hashLen: 32,
        hash: (data) => crypto.sha256(data),
        hmac: (key, data) => crypto.hmacSha256(key, data instanceof SecretKey ? data.unsafeBytes() : data),
      };
    default:
      throw new SessionError('malformed', `unsupported Noise hash function ${JSON.stringify(name)}`);
  }
}

/** Asserts something shaped like a {@link NoiseHash} (`hashLen` 32 or 64, `hash` and `hmac` functions). */
export function assertNoiseHash(value: unknown, name = 'hash'): NoiseHash {
  const h = check.object(value, name);
  if (h['hashLen'] !== 32 && h['hashLen'] !== 64) malformed(`${name}.hashLen must be 32 or 64`);
  check.func(h['hash'], `${name}.hash`);
  check.func(h['hmac'], `${name}.hmac`);
  return value as NoiseHash;
}

/** Asserts something shaped like a {@link NoiseProtocol} (a name, a pattern with its token lists, a hash). */
export function assertNoiseProtocol(value: unknown, name = 'protocol'): NoiseProtocol {
  const p = check.object(value, name);
  check.string(p['name'], `${name}.name`);
  const pattern = check.object(p['pattern'], `${name}.pattern`);
  for (const list of ['initiatorPreMessage', 'responderPreMessage', 'messages'] as const) {
    if (!Array.isArray(pattern[list])) malformed(`${name}.pattern.${list} must be an array`);
  }
  assertNoiseHash(p['hash'], `${name}.hash`);
  return value as NoiseProtocol;
}

/**
 * Parses a protocol name such as `Noise_XX_25519_ChaChaPoly_BLAKE2b`.
 * Only DH `25519` and cipher `ChaChaPoly` are supported; the pattern must be
 * one of {@link PATTERNS} (no modifiers).
 */
export function parseProtocolName(name: string, crypto: ParleyCrypto): NoiseProtocol {
  check.string(name, 'protocol name');
  assertCrypto(crypto);
  const parts = name.split('_');
  if (parts.length !== 5 || parts[0] !== 'Noise') {
    throw new SessionError('malformed', `not a Noise protocol name: ${JSON.stringify(name)}`);
  }
  const [, patternName, dh, cipher, hash] = parts as [string, string, string, string, string];
  const pattern = Object.hasOwn(PATTERNS, patternName) ? PATTERNS[patternName] : undefined;
  if (pattern === undefined) throw new SessionError('malformed', `unsupported handshake pattern ${patternName}`);
  if (dh !== '25519') throw new SessionError('malformed', `unsupported DH function ${dh}`);
  if (cipher !== 'ChaChaPoly') throw new SessionError('malformed', `unsupported cipher ${cipher}`);
  return { name, pattern, hash: hashFunction(hash, crypto) };
}
