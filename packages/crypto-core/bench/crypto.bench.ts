// crypto-core benchmark: every primitive through our facade (auto backend and
// libsodium-only) beside node:crypto's native equivalent, sampled alternately
// in the same run; then one 1 KiB message end to end:
// sign + seal + MAC + verify + open + MAC-verify.
import * as nodeCrypto from 'node:crypto';
import { measure, printTable, type Row } from '@parley/bench-harness';
import { SecretKey, createCrypto, type ParleyCrypto } from '../src/index.js';

const KIB = new Uint8Array(1024).fill(7);
const MIB = new Uint8Array(1 << 20).fill(9);
const AD = new Uint8Array(32).fill(1);

const auto = await createCrypto({ backend: 'auto' });
const sodium = await createCrypto({ backend: 'libsodium' });
const wasm = await createCrypto({ backend: 'libsodium', libsodium: 'wasm' });

// Native peers: KeyObjects created once, as a native application would.
const seed = auto.randomBytes(32);
const edKp = auto.ed25519.keyPairFromSeed(seed);
const nEdPriv = nodeCrypto.createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
const nEdPub = nodeCrypto.createPublicKey(nEdPriv);
const xA = auto.x25519.generateKeyPair();
const xB = auto.x25519.generateKeyPair();
const nX = nodeCrypto.generateKeyPairSync('x25519');
const nY = nodeCrypto.generateKeyPairSync('x25519');
const aeadKey = auto.randomKey('aead');
const rawAeadKey = aeadKey.unsafeBytes();
const macKey = auto.randomKey('mac');
const rawMacKey = macKey.unsafeBytes();
const nonce = auto.aead.nonce(5n);

function nodeSeal(pt: Uint8Array): Buffer {
  const c = nodeCrypto.createCipheriv('chacha20-poly1305', rawAeadKey, nonce, { authTagLength: 16 });
  c.setAAD(AD, { plaintextLength: pt.length });
  const body = c.update(pt);
  c.final();
  return Buffer.concat([body, c.getAuthTag()]);
}
function nodeOpen(ct: Uint8Array): Buffer {
  const d = nodeCrypto.createDecipheriv('chacha20-poly1305', rawAeadKey, nonce, { authTagLength: 16 });
  d.setAuthTag(ct.subarray(ct.length - 16));
  d.setAAD(AD, { plaintextLength: ct.length - 16 });
  const out = d.update(ct.subarray(0, ct.length - 16));
  d.final();
  return out;
}

const sig = auto.ed25519.sign(KIB, edKp.secretKey);
const sealed1k = auto.aead.seal(aeadKey, 5n, KIB, AD);
const sealed1m = auto.aead.seal(aeadKey, 5n, MIB, AD);

function pair(label: string, unit: Row['unit'], ours: () => unknown, peer: () => unknown, bytes?: number, c: ParleyCrypto = auto): Row {
  void c;
  const [o, p] = measure([
    bytes === undefined ? { name: 'ours', fn: ours } : { name: 'ours', fn: ours, bytesPerOp: bytes },
    bytes === undefined ? { name: 'peer', fn: peer } : { name: 'peer', fn: peer, bytesPerOp: bytes },
  ]);
  return { label, unit, ours: o!, peer: p! };
}

console.log(`crypto-core backends (auto): ${Object.entries(auto.backends).map(([k, v]) => `${k}=${v}`).join(', ')}`);

const rows: Row[] = [
  pair('ed25519 sign 1 KiB', 'ops/s', () => auto.ed25519.sign(KIB, edKp.secretKey), () => nodeCrypto.sign(null, KIB, nEdPriv)),
  pair('ed25519 verify 1 KiB', 'ops/s', () => auto.ed25519.verify(sig, KIB, edKp.publicKey), () => nodeCrypto.verify(null, KIB, nEdPub, sig)),
  pair('ed25519 keygen', 'ops/s', () => auto.ed25519.generateKeyPair(), () => nodeCrypto.generateKeyPairSync('ed25519')),
  pair('x25519 dh', 'ops/s', () => auto.x25519.dh(xA.secretKey, xB.publicKey), () => nodeCrypto.diffieHellman({ privateKey: nX.privateKey, publicKey: nY.publicKey })),
  pair('x25519 keygen', 'ops/s', () => auto.x25519.generateKeyPair(), () => nodeCrypto.generateKeyPairSync('x25519')),
  pair('chacha20poly1305 seal 1 KiB', 'MB/s', () => auto.aead.seal(aeadKey, 5n, KIB, AD), () => nodeSeal(KIB), 1024),
  pair('chacha20poly1305 open 1 KiB', 'MB/s', () => auto.aead.open(aeadKey, 5n, sealed1k, AD), () => nodeOpen(sealed1k), 1024),
  pair('chacha20poly1305 seal 1 MiB', 'MB/s', () => auto.aead.seal(aeadKey, 5n, MIB, AD), () => nodeSeal(MIB), 1 << 20),
  pair('chacha20poly1305 open 1 MiB', 'MB/s', () => auto.aead.open(aeadKey, 5n, sealed1m, AD), () => nodeOpen(sealed1m), 1 << 20),
  pair('hmac-sha256 1 KiB', 'MB/s', () => auto.hmacSha256(macKey, KIB), () => nodeCrypto.createHmac('sha256', rawMacKey).update(KIB).digest(), 1024),
  pair('blake2b-512 1 KiB', 'MB/s', () => auto.blake2b(KIB), () => nodeCrypto.createHash('blake2b512').update(KIB).digest(), 1024),
  pair('blake3 1 KiB (peer: sha256)', 'MB/s', () => auto.blake3(KIB), () => nodeCrypto.createHash('sha256').update(KIB).digest(), 1024),
  pair('blake3 1 MiB (peer: sha256)', 'MB/s', () => auto.blake3(MIB), () => nodeCrypto.createHash('sha256').update(MIB).digest(), 1 << 20),
  pair('hkdf-sha256 32 B', 'ops/s', () => auto.hkdfSha256(rawMacKey, AD, AD, 32), () => nodeCrypto.hkdfSync('sha256', rawMacKey, AD, AD, 32)),
  pair('random 32 B', 'ops/s', () => auto.randomBytes(32), () => nodeCrypto.randomBytes(32)),
];
printTable('Primitives: crypto-core (auto backend) vs node:crypto (native, KeyObjects prepared once)', 'node:crypto', rows);

const sodiumRows: Row[] = [
  pair('ed25519 sign 1 KiB', 'ops/s', () => sodium.ed25519.sign(KIB, edKp.secretKey), () => nodeCrypto.sign(null, KIB, nEdPriv)),
  pair('ed25519 verify 1 KiB', 'ops/s', () => sodium.ed25519.verify(sig, KIB, edKp.publicKey), () => nodeCrypto.verify(null, KIB, nEdPub, sig)),
  pair('chacha20poly1305 seal 1 KiB', 'MB/s', () => sodium.aead.seal(aeadKey, 5n, KIB, AD), () => nodeSeal(KIB), 1024),
  pair('hmac-sha256 1 KiB', 'MB/s', () => sodium.hmacSha256(macKey, KIB), () => nodeCrypto.createHmac('sha256', rawMacKey).update(KIB).digest(), 1024),
  pair('random 32 B', 'ops/s', () => sodium.randomBytes(32), () => nodeCrypto.randomBytes(32)),
  pair('ed25519 keygen: sodium keypair vs getRandomValues+seed', 'ops/s', () => sodium.ed25519.generateKeyPair(), () => sodium.ed25519.keyPairFromSeed(nodeCrypto.getRandomValues(new Uint8Array(32)))),
];
printTable('libsodium-only backend vs node:crypto (why auto picks what it picks)', 'node:crypto', sodiumRows);

// The two builds of the same library: the native addon (sodium-native, the default where it loads) vs WebAssembly.
const wasmSig = wasm.ed25519.keyPairFromSeed(seed);
const wasmSealed1k = wasm.aead.seal(aeadKey, 5n, KIB, AD);
printTable('libsodium native (sodium-native) vs libsodium WebAssembly (libsodium-wrappers-sumo)', 'libsodium wasm', [
  pair('ed25519 sign 1 KiB', 'ops/s', () => sodium.ed25519.sign(KIB, edKp.secretKey), () => wasm.ed25519.sign(KIB, wasmSig.secretKey)),
  pair('ed25519 verify 1 KiB', 'ops/s', () => sodium.ed25519.verify(sig, KIB, edKp.publicKey), () => wasm.ed25519.verify(sig, KIB, edKp.publicKey)),
  pair('x25519 dh', 'ops/s', () => sodium.x25519.dh(xA.secretKey, xB.publicKey), () => wasm.x25519.dh(xA.secretKey, xB.publicKey)),
  pair('chacha20poly1305 seal 1 KiB', 'MB/s', () => sodium.aead.seal(aeadKey, 5n, KIB, AD), () => wasm.aead.seal(aeadKey, 5n, KIB, AD), 1024),
  pair('chacha20poly1305 open 1 KiB', 'MB/s', () => sodium.aead.open(aeadKey, 5n, sealed1k, AD), () => wasm.aead.open(aeadKey, 5n, wasmSealed1k, AD), 1024),
  pair('chacha20poly1305 seal 1 MiB', 'MB/s', () => sodium.aead.seal(aeadKey, 5n, MIB, AD), () => wasm.aead.seal(aeadKey, 5n, MIB, AD), 1 << 20),
  pair('blake2b-512 1 KiB', 'MB/s', () => sodium.blake2b(KIB), () => wasm.blake2b(KIB), 1024),
]);

// One 1 KiB message, all six steps, ours vs the same steps with node:crypto.
const msgSig: { v: Uint8Array } = { v: new Uint8Array(0) };
const oursMessage = (): boolean => {
  const ct = auto.aead.seal(aeadKey, 9n, KIB, AD);
  const tag = auto.hmacSha256(macKey, ct);
  const s = auto.ed25519.sign(tag, edKp.secretKey);
  msgSig.v = s;
  const okSig = auto.ed25519.verify(s, tag, edKp.publicKey);
  const okTag = auto.hmacSha256Verify(macKey, ct, tag);
  const pt = auto.aead.open(aeadKey, 9n, ct, AD);
  return okSig && okTag && pt.length === 1024;
};
const nativeMessage = (): boolean => {
  const ct = nodeSeal(KIB);
  const tag = nodeCrypto.createHmac('sha256', rawMacKey).update(ct).digest();
  const s = nodeCrypto.sign(null, tag, nEdPriv);
  const okSig = nodeCrypto.verify(null, tag, nEdPub, s);
  const okTag = nodeCrypto.timingSafeEqual(tag, nodeCrypto.createHmac('sha256', rawMacKey).update(ct).digest());
  const pt = nodeOpen(ct);
  return okSig && okTag && pt.length === 1024;
};
if (!oursMessage() || !nativeMessage()) throw new Error('combined message check failed');
printTable('One 1 KiB message: sign + seal + MAC + verify + open + MAC-verify', 'node:crypto', [
  pair('1 KiB message, all six steps', 'µs', oursMessage, nativeMessage),
]);
void SecretKey;
