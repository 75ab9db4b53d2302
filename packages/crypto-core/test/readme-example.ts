import assert from 'node:assert/strict';
import { createCrypto, isCryptoError, utf8 } from '../src/index.js';

const crypto = await createCrypto(); // once, at start-up
const { publicKey, secretKey } = crypto.ed25519.generateKeyPair();
const signature = crypto.ed25519.sign(utf8('handoff #42'), secretKey);
assert.equal(crypto.ed25519.verify(signature, utf8('handoff #42'), publicKey), true);

const key = crypto.randomKey('aead');
const sealed = crypto.aead.seal(key, 7n, utf8('payload'), utf8('header')); // counter 7, Noise nonce layout
assert.deepEqual(crypto.aead.open(key, 7n, sealed, utf8('header')), utf8('payload'));
assert.throws(() => crypto.aead.open(key, 8n, sealed, utf8('header')), (e) => isCryptoError(e, 'decrypt_failed'));
assert.equal(String(secretKey), 'SecretKey(ed25519, 64 bytes)'); // never the bytes
