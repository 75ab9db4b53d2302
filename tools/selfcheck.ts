// `npm run selfcheck`: a short self-check of the primitives
// and of a Noise XX handshake, printed as a table. Exits non-zero on failure.
import { SecretKey, createCrypto, fromHex, toHex, utf8, type ParleyCrypto } from '@parley/crypto-core';
import { HandshakeState, PARLEY_NOISE_PROTOCOL, parseProtocolName } from '@parley/session';

interface Check {
  name: string;
  run: (c: ParleyCrypto) => boolean;
}

const checks: Check[] = [
  {
    name: 'Ed25519 (RFC 8032 §7.1 TEST 1)',
    run: (c) => {
      const kp = c.ed25519.keyPairFromSeed(fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'));
      const sig = c.ed25519.sign(new Uint8Array(0), kp.secretKey);
      return (
        toHex(sig) ===
          'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b' &&
        c.ed25519.verify(sig, new Uint8Array(0), kp.publicKey)
      );
    },
  },
  {
    name: 'X25519 (RFC 7748 §6.1)',
    run: (c) => {
      const alice = c.x25519.keyPairFromSecret(fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'));
      const bobPublic = fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
      return toHex(c.x25519.dh(alice.secretKey, bobPublic).unsafeBytes()) === '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
    },
  },
  {
    name: 'ChaCha20-Poly1305 seal/open, tamper rejected',
    run: (c) => {
      const key = c.randomKey('aead');
      const sealed = c.aead.seal(key, 1n, utf8('status: green'), utf8('ad'));
      sealed[0]! ^= 1;
      try {
        c.aead.open(key, 1n, sealed, utf8('ad'));
        return false;
      } catch {
        sealed[0]! ^= 1;
        return new TextDecoder().decode(c.aead.open(key, 1n, sealed, utf8('ad'))) === 'status: green';
      }
    },
  },
  {
    name: 'HMAC-SHA256 (RFC 4231 case 2)',
    run: (c) => {
      const jefe = SecretKey.from(fromHex('4a656665'), 'mac');
      const tag = c.hmacSha256(jefe, fromHex('7768617420646f2079612077616e7420666f72206e6f7468696e673f'));
      return toHex(tag) === '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843';
    },
  },
  {
    name: 'BLAKE2b-512 (RFC 7693 "abc")',
    run: (c) =>
      toHex(c.blake2b(utf8('abc'))) ===
      'ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923',
  },
  {
    name: 'BLAKE3 (empty input)',
    run: (c) => toHex(c.blake3(new Uint8Array(0))) === 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
  },
  {
    name: `Noise handshake ${PARLEY_NOISE_PROTOCOL}`,
    run: (c) => {
      const protocol = parseProtocolName(PARLEY_NOISE_PROTOCOL, c);
      const prologue = utf8('parley selfcheck');
      const i = new HandshakeState(c, { protocol, initiator: true, prologue, staticKeyPair: c.x25519.generateKeyPair() });
      const r = new HandshakeState(c, { protocol, initiator: false, prologue, staticKeyPair: c.x25519.generateKeyPair() });
      r.readMessage(i.writeMessage(new Uint8Array(0)).message);
      i.readMessage(r.writeMessage(new Uint8Array(0)).message);
      const m3 = i.writeMessage(new Uint8Array(0));
      const done = r.readMessage(m3.message);
      const iSide = m3.result!;
      const rSide = done.result!;
      const ct = iSide.send.encryptWithAd(new Uint8Array(0), utf8('hello'));
      return toHex(iSide.handshakeHash) === toHex(rSide.handshakeHash) && new TextDecoder().decode(rSide.receive.decryptWithAd(new Uint8Array(0), ct)) === 'hello';
    },
  },
];

const started = performance.now();
const crypto = await createCrypto();
console.log(`Parley self-check — crypto-core ready in ${(performance.now() - started).toFixed(0)} ms`);
console.log(`backends: ${Object.entries(crypto.backends).map(([k, v]) => `${k}=${v}`).join(', ')}\n`);
let failed = 0;
for (const check of checks) {
  const t0 = performance.now();
  let ok = false;
  try {
    ok = check.run(crypto);
  } catch {
    ok = false;
  }
  if (!ok) failed++;
  console.log(`  ${ok ? 'ok  ' : 'FAIL'}  ${check.name.padEnd(52)} ${(performance.now() - t0).toFixed(2).padStart(7)} ms`);
}
console.log(`\n${checks.length - failed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
