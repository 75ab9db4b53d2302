/**
 * Certificate serial numbers: 16 bytes, unique per issuer (AgentCertificate
 * field 8). Random serials make a collision negligible (about 2^-64 after
 * 2^32 certificates from one issuer).
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto } from './assert.js';

/** Length of a certificate serial in bytes. */
export const SERIAL_BYTES = 16;

/**
 * A fresh random serial.
 * @param crypto the ParleyCrypto instance (its OS randomness)
 * @returns 16 random bytes
 * @throws IdentityError `malformed` when `crypto` is not a ParleyCrypto
 */
export function randomSerial(crypto: ParleyCrypto): Uint8Array {
  return assertCrypto(crypto).randomBytes(SERIAL_BYTES);
}
