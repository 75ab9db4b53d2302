/**
 * Native backend over node:crypto (OpenSSL). Raw Ed25519 keys become
 * KeyObjects through JWK (RFC 8037), which OpenSSL imports about 10× faster
 * than DER; X25519 keys through their fixed PKCS#8 / SPKI DER prefixes
 * (RFC 8410), because a JWK private key would need the public half as well.
 */
import * as nodeCrypto from 'node:crypto';
import type { CryptoBackend } from './backend.js';

// RFC 8410 DER prefixes for raw 32-byte keys.
const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI = Buffer.from('302a300506032b656e032100', 'hex');

function der(prefix: Buffer, raw: Uint8Array): Buffer {
  return Buffer.concat([prefix, raw]);
}

function privateKey(prefix: Buffer, raw: Uint8Array): nodeCrypto.KeyObject {
  const encoded = der(prefix, raw);
  try {
    return nodeCrypto.createPrivateKey({ key: encoded, format: 'der', type: 'pkcs8' });
  } finally {
    encoded.fill(0);
  }
}

function publicKey(prefix: Buffer, raw: Uint8Array): nodeCrypto.KeyObject {
  return nodeCrypto.createPublicKey({ key: der(prefix, raw), format: 'der', type: 'spki' });
}

function rawPublic(key: nodeCrypto.KeyObject): Uint8Array {
  const spki = key.export({ format: 'der', type: 'spki' });
  return new Uint8Array(spki.subarray(spki.length - 32));
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

function u8(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * Creates the node:crypto backend. OpenSSL's BLAKE2b in node has neither a key
 * nor a variable output length, so those calls go to `fallback` (libsodium).
 * It has no Ed25519 verification: OpenSSL accepts small-order public keys and R
 * (the identity key verifies a zero signature for every message), so verification
 * is libsodium's in every backend choice (SodiumOnlyBackend).
 */
export function createNodeBackend(fallback: CryptoBackend): CryptoBackend {
  return {
    name: 'node',
    randomFill(out) {
      nodeCrypto.getRandomValues(out);
    },
    ed25519KeyPairFromSeed(seed) {
      const pk = rawPublic(nodeCrypto.createPublicKey(privateKey(ED25519_PKCS8, seed)));
      const secretKey = new Uint8Array(64);
      secretKey.set(seed, 0);
      secretKey.set(pk, 32);
      return { publicKey: pk, secretKey };
    },
    ed25519Sign(message, secretKey) {
      const jwk = { kty: 'OKP', crv: 'Ed25519', d: b64url(secretKey.subarray(0, 32)), x: b64url(secretKey.subarray(32)) };
      return u8(nodeCrypto.sign(null, message, nodeCrypto.createPrivateKey({ key: jwk, format: 'jwk' })));
    },
    x25519PublicKey(secretKey) {
      return rawPublic(nodeCrypto.createPublicKey(privateKey(X25519_PKCS8, secretKey)));
    },
    x25519(secretKey, pk) {
      try {
        const shared = u8(
          nodeCrypto.diffieHellman({
            privateKey: privateKey(X25519_PKCS8, secretKey),
            publicKey: publicKey(X25519_SPKI, pk),
          }),
        );
        let acc = 0;
        for (const b of shared) acc |= b;
        return acc === 0 ? null : shared;
      } catch {
        // OpenSSL refuses low-order points itself.
        return null;
      }
    },
    aeadSeal(key, nonce, plaintext, ad) {
      const cipher = nodeCrypto.createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      cipher.setAAD(ad, { plaintextLength: plaintext.length });
      const body = cipher.update(plaintext);
      cipher.final();
      return u8(Buffer.concat([body, cipher.getAuthTag()]));
    },
    aeadOpen(key, nonce, ciphertext, ad) {
      if (ciphertext.length < 16) return null;
      const body = ciphertext.subarray(0, ciphertext.length - 16);
      const decipher = nodeCrypto.createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
      decipher.setAAD(ad, { plaintextLength: body.length });
      const plain = decipher.update(body);
      try {
        decipher.final();
      } catch {
        plain.fill(0);
        return null;
      }
      return u8(plain);
    },
    hmacSha256(key, data) {
      const hmac = nodeCrypto.createHmac('sha256', key);
      if (data instanceof Uint8Array) hmac.update(data);
      else for (const part of data) hmac.update(part);
      return u8(hmac.digest());
    },
    blake2b(data, outLen, key) {
      if (key !== undefined || outLen !== 64) return fallback.blake2b(data, outLen, key);
      return u8(nodeCrypto.createHash('blake2b512').update(data).digest());
    },
    sha256(data) {
      return u8(nodeCrypto.createHash('sha256').update(data).digest());
    },
    wipe(bytes) {
      bytes.fill(0);
    },
  };
}
