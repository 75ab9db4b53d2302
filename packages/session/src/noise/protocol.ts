/**
 * Noise protocol names and the functions they select (Noise spec rev. 34,
 * §8 "Protocol names and modifiers", §12 "DH, cipher and hash functions").
 * Parley speaks exactly Noise_XX_25519_ChaChaPoly_BLAKE2b; the SHA256 variant
 * exists so the published SHA256 vectors can be checked too.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
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

/**
 * Parses a protocol name such as `Noise_XX_25519_ChaChaPoly_BLAKE2b`.
 * Only DH `25519` and cipher `ChaChaPoly` are supported; the pattern must be
 * one of {@link PATTERNS} (no modifiers).
 */
export function parseProtocolName(name: string, crypto: ParleyCrypto): NoiseProtocol {
  const parts = name.split('_');
  if (parts.length !== 5 || parts[0] !== 'Noise') {
    throw new SessionError('malformed', `not a Noise protocol name: ${JSON.stringify(name)}`);
  }
  const [, patternName, dh, cipher, hash] = parts as [string, string, string, string, string];
  const pattern = PATTERNS[patternName];
  if (pattern === undefined) throw new SessionError('malformed', `unsupported handshake pattern ${patternName}`);
  if (dh !== '25519') throw new SessionError('malformed', `unsupported DH function ${dh}`);
  if (cipher !== 'ChaChaPoly') throw new SessionError('malformed', `unsupported cipher ${cipher}`);
  return { name, pattern, hash: hashFunction(hash, crypto) };
}
