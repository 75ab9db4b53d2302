import { inspect } from 'node:util';
import { SecretKey, fromHex, toHex } from '@parley/crypto-core';
import { AgentCertificateSchema, create, toBinary, type AgentCertificate } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { DAY, NOT_MS, T0, WRONG_TYPES, createWorld, expectCode, type World } from '../test/fixtures.js';
import {
  CERTIFICATE_VERSION,
  MAX_CERTIFICATE_BYTES,
  certificateTbs,
  createIssuerKey,
  decodeCertificate,
  encodeCertificate,
  issueCertificate,
  verifyCertificate,
  type VerifyCertificateOptions,
} from './certificate.js';
import { toDidKey } from './did-key.js';
import { keyId } from './key-id.js';
import { randomSerial } from './serial.js';
import { IdentityError } from './errors.js';
import { MemoryRevocationSet, type RevocationChecker } from './revocation.js';
import { TrustBundle } from './trust-bundle.js';

const NOW = T0 + 1000;

describe('certificates', () => {
  let w: World;
  let cert: AgentCertificate;
  let opts: VerifyCertificateOptions;
  beforeAll(async () => {
    w = await createWorld();
    cert = w.issue();
    opts = { trustBundle: w.bundle, nowMs: NOW };
  });

  const tamper = (patch: Partial<AgentCertificate>): AgentCertificate => ({ ...cert, ...patch });

  describe('issue and verify', () => {
    it('issues a version-1 certificate with canonical capabilities and verifies it', () => {
      const c = w.issue({ capabilities: ['task:run', 'msg:send', 'task:run', 'a/b'] });
      expect(c.version).toBe(CERTIFICATE_VERSION);
      expect(c.capabilities).toEqual(['a/b', 'msg:send', 'task:run']);
      expect(c.signature).toHaveLength(64);
      expect(c.issuerKeyId).toEqual(w.issuer.keyId);
      expect(c.validFromMs).toBe(BigInt(T0));
      const v = verifyCertificate(w.crypto, c, opts);
      expect(v).toEqual({
        agentId: 'worker-7',
        identityPublicKey: w.agent.publicKey,
        agentType: 'worker',
        capabilities: ['a/b', 'msg:send', 'task:run'],
        validFromMs: T0,
        validUntilMs: T0 + DAY,
        serial: fromHex('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf'),
        issuerKeyId: w.issuer.keyId,
        didKey: toDidKey(w.agent.publicKey),
      });
      expect(Object.isFrozen(v)).toBe(true);
      expect(Object.isFrozen(v.capabilities)).toBe(true);
      v.identityPublicKey.fill(0);
      v.serial.fill(0);
      expect(c.identityPublicKey).toEqual(w.agent.publicKey);
      expect(c.serial).toEqual(fromHex('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf'));
    });

    it('accepts bigint times, draws a random 16-byte serial when none is given, and copies inputs', () => {
      const pk = w.agent.publicKey.slice();
      const { serial: _omit, ...fields } = w.fields;
      const a = issueCertificate(w.crypto, w.issuer, { ...fields, identityPublicKey: pk, validFromMs: BigInt(T0), validUntilMs: BigInt(T0 + DAY) });
      const b = issueCertificate(w.crypto, w.issuer, fields);
      expect(a.serial).toHaveLength(16);
      expect(toHex(a.serial)).not.toBe(toHex(b.serial));
      pk.fill(0);
      expect(a.identityPublicKey).toEqual(w.agent.publicKey);
      verifyCertificate(w.crypto, a, opts);
    });

    it('survives encode → decode', () => {
      const bytes = encodeCertificate(cert);
      const back = decodeCertificate(bytes);
      expect(verifyCertificate(w.crypto, back, opts).agentId).toBe('worker-7');
      expect(encodeCertificate(back)).toEqual(bytes);
    });

    it('validity is [validFrom, validUntil)', () => {
      expect(verifyCertificate(w.crypto, cert, { ...opts, nowMs: T0 }).agentId).toBe('worker-7');
      expect(verifyCertificate(w.crypto, cert, { ...opts, nowMs: T0 + DAY - 1 }).agentId).toBe('worker-7');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, nowMs: T0 - 1 }), 'not_yet_valid');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, nowMs: T0 + DAY }), 'expired');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, nowMs: 0 }), 'not_yet_valid');
    });
  });

  describe('rejections, each with its own code', () => {
    it('unknown issuer', () => {
      const other = createIssuerKey(w.crypto, w.crypto.ed25519.generateKeyPair());
      const bundle = TrustBundle.from(w.crypto, [{ publicKey: other.publicKey }]);
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, trustBundle: bundle }), 'unknown_issuer');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, trustBundle: TrustBundle.from(w.crypto, []) }), 'unknown_issuer');
      // Signed by another key but naming our issuer's key id: the bundle's key does not verify it.
      const forged = issueCertificate(w.crypto, other, w.fields);
      expectCode(() => verifyCertificate(w.crypto, { ...forged, issuerKeyId: w.issuer.keyId }, opts), 'bad_certificate');
    });

    it('bad signature: every byte of the signature', () => {
      for (let i = 0; i < 64; i++) {
        for (const mask of [0x01, 0x80]) {
          const signature = cert.signature.slice();
          signature[i]! ^= mask;
          expectCode(() => verifyCertificate(w.crypto, tamper({ signature }), opts), 'bad_certificate');
        }
      }
      expectCode(() => verifyCertificate(w.crypto, tamper({ signature: new Uint8Array(64) }), opts), 'bad_certificate');
    });

    it('bad signature: a changed byte in each signed field', () => {
      const flipped = (b: Uint8Array, i: number) => {
        const c = b.slice();
        c[i]! ^= 1;
        return c;
      };
      const variants: Partial<AgentCertificate>[] = [
        { agentId: 'worker-8' },
        { identityPublicKey: flipped(cert.identityPublicKey, 0) },
        { identityPublicKey: flipped(cert.identityPublicKey, 31) },
        { agentType: 'workes' },
        { capabilities: ['msg:send', 'task:rum'] },
        { capabilities: ['msg:send'] },
        { capabilities: [] },
        { validFromMs: cert.validFromMs - 1n },
        { validUntilMs: cert.validUntilMs + 1n },
        { serial: flipped(cert.serial, 0) },
        { serial: flipped(cert.serial, 15) },
      ];
      for (const patch of variants) expectCode(() => verifyCertificate(w.crypto, tamper(patch), opts), 'bad_certificate');
      // The two fields checked before the signature report their own codes.
      expectCode(() => verifyCertificate(w.crypto, tamper({ version: 2 }), opts), 'unsupported_version');
      expectCode(() => verifyCertificate(w.crypto, tamper({ version: 0 }), opts), 'unsupported_version');
      expectCode(() => verifyCertificate(w.crypto, tamper({ issuerKeyId: flipped(cert.issuerKeyId, 3) }), opts), 'unknown_issuer');
    });

    it('identity mismatch', () => {
      expect(verifyCertificate(w.crypto, cert, { ...opts, expectedAgentId: 'worker-7' }).agentId).toBe('worker-7');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, expectedAgentId: 'worker-70' }), 'identity_mismatch');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, expectedAgentId: 'NOT an id' }), 'malformed');
    });

    it('revoked by agent id (all its certificates) and by serial (just that one)', () => {
      const set = new MemoryRevocationSet();
      set.apply([], 0, NOW);
      const other = w.issue({ serial: fromHex('b0'.repeat(16)) });
      const check = (c: AgentCertificate) => verifyCertificate(w.crypto, c, { ...opts, revocations: set });
      expect(check(cert).agentId).toBe('worker-7');

      set.apply([{ kind: 'serial', serial: cert.serial, reason: 'superseded', revokedAtMs: NOW }], 1, NOW);
      expect(expectCode(() => check(cert), 'revoked').message).toContain('serial');
      expect(check(other).agentId).toBe('worker-7');

      set.apply([{ kind: 'agent', agentId: 'worker-7', reason: 'compromised', revokedAtMs: NOW }], 2, NOW);
      expect(expectCode(() => check(other), 'revoked').message).toContain('agent');
      expect(check(w.issue({ agentId: 'worker-8', serial: fromHex('c0'.repeat(16)) })).agentId).toBe('worker-8');
    });

    it('stale revocation data fails closed; failOpen accepts', () => {
      const closed = new MemoryRevocationSet({ maxAgeMs: 1000 });
      const open = new MemoryRevocationSet({ maxAgeMs: 1000, failOpen: true });
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, revocations: closed }), 'revocation_stale'); // never loaded
      for (const set of [closed, open]) set.apply([], 0, NOW - 5000);
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, revocations: closed }), 'revocation_stale');
      expect(verifyCertificate(w.crypto, cert, { ...opts, revocations: open }).agentId).toBe('worker-7');
    });

    it('a revocation checker that fails or answers nonsense fails closed', () => {
      const cause = new Error('database down');
      const throwing: RevocationChecker = {
        check() {
          throw cause;
        },
      };
      const e = expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, revocations: throwing }), 'revocation_stale');
      expect(e.cause).toBe(cause);
      for (const answer of [undefined, null, {}, { revoked: 'no' }, { revoked: 0 }, 'false']) {
        const odd = { check: () => answer } as unknown as RevocationChecker;
        expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, revocations: odd }), 'revocation_stale');
      }
      const yes = { check: () => ({ revoked: true, by: 'serial', reason: 'r', revokedAtMs: 0 }) } as RevocationChecker;
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, revocations: yes }), 'revoked');
    });

    it('runs the checks in the normative order', () => {
      const revokedAll = new MemoryRevocationSet();
      revokedAll.apply([{ kind: 'agent', agentId: 'worker-7', reason: 'r', revokedAtMs: 0 }], 1, NOW);
      const everything = { ...opts, nowMs: T0 + DAY, expectedAgentId: 'someone-else', revocations: revokedAll };
      const stranger = TrustBundle.from(w.crypto, [{ publicKey: w.agent.publicKey }]);
      expectCode(() => verifyCertificate(w.crypto, tamper({ version: 9, serial: new Uint8Array(3) }), everything), 'unsupported_version');
      expectCode(() => verifyCertificate(w.crypto, tamper({ serial: new Uint8Array(3) }), everything), 'malformed');
      expectCode(() => verifyCertificate(w.crypto, tamper({ agentType: 'x' }), { ...everything, trustBundle: stranger }), 'unknown_issuer');
      expectCode(() => verifyCertificate(w.crypto, tamper({ agentType: 'x' }), everything), 'bad_certificate');
      expectCode(() => verifyCertificate(w.crypto, cert, everything), 'expired');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...everything, nowMs: NOW }), 'identity_mismatch');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...everything, nowMs: NOW, expectedAgentId: 'worker-7' }), 'revoked');
    });
  });

  describe('issuer rotation', () => {
    it('certificates of the old issuer verify beside the new one until they (or the old key) expire', () => {
      const oldIssuer = w.issuer;
      const newIssuer = createIssuerKey(w.crypto, w.crypto.ed25519.keyPairFromSeed(fromHex('33'.repeat(32))));
      const oldCert = cert;
      const newCert = issueCertificate(w.crypto, newIssuer, { ...w.fields, validFromMs: T0 + 500, validUntilMs: T0 + 2 * DAY });
      const bundle = TrustBundle.from(w.crypto, [
        { keyId: oldIssuer.keyId, publicKey: oldIssuer.publicKey, notAfterMs: T0 + DAY / 2 },
        { keyId: newIssuer.keyId, publicKey: newIssuer.publicKey },
      ]);
      const o = { trustBundle: bundle, nowMs: NOW };
      expect(verifyCertificate(w.crypto, oldCert, o).issuerKeyId).toEqual(oldIssuer.keyId);
      expect(verifyCertificate(w.crypto, newCert, o).issuerKeyId).toEqual(newIssuer.keyId);
      // The old issuer key's own bound: its certificates stop at notAfterMs, the new ones go on.
      expectCode(() => verifyCertificate(w.crypto, oldCert, { ...o, nowMs: T0 + DAY / 2 }), 'expired');
      expect(verifyCertificate(w.crypto, newCert, { ...o, nowMs: T0 + DAY }).agentId).toBe('worker-7');
      // Without the old issuer in the bundle its certificates are unknown.
      const onlyNew = TrustBundle.from(w.crypto, [{ publicKey: newIssuer.publicKey }]);
      expectCode(() => verifyCertificate(w.crypto, oldCert, { ...o, trustBundle: onlyNew }), 'unknown_issuer');
    });
  });

  describe('malformed input is `malformed` (never a raw TypeError)', () => {
    it('certificate fields of the wrong type or length', () => {
      const fields: (keyof AgentCertificate)[] = [
        'version', 'agentId', 'identityPublicKey', 'agentType', 'capabilities', 'validFromMs', 'validUntilMs', 'serial', 'issuerKeyId', 'signature',
      ];
      for (const field of fields) {
        for (const v of WRONG_TYPES) {
          if (field === 'version' && v === 0) continue; // a valid uint32, just not 1
          if (field === 'validFromMs' && v === 1n) continue; // a valid time (the signature then fails)
          if (field === 'capabilities' && Array.isArray(v) && v.length === 0) continue;
          expectCode(() => verifyCertificate(w.crypto, tamper({ [field]: v } as Partial<AgentCertificate>), opts), 'malformed');
          if (field !== 'signature') expectCode(() => certificateTbs(tamper({ [field]: v } as Partial<AgentCertificate>)), 'malformed');
          expectCode(() => encodeCertificate(tamper({ [field]: v } as Partial<AgentCertificate>)), 'malformed');
        }
      }
      const lengths: Partial<AgentCertificate>[] = [
        { identityPublicKey: new Uint8Array(31) },
        { identityPublicKey: new Uint8Array(33) },
        { serial: new Uint8Array(15) },
        { serial: new Uint8Array(17) },
        { issuerKeyId: new Uint8Array(15) },
        { issuerKeyId: new Uint8Array(32) },
        { signature: new Uint8Array(63) },
        { signature: new Uint8Array(65) },
        { signature: new Uint8Array(0) },
        { agentId: '' },
        { agentId: 'a'.repeat(129) },
        { agentType: 'a'.repeat(65) },
        { capabilities: ['b', 'a'] },
        { capabilities: ['a', 'a'] },
        { validFromMs: -1n },
        { validFromMs: BigInt(Number.MAX_SAFE_INTEGER) + 1n },
        { validUntilMs: BigInt(Number.MAX_SAFE_INTEGER) + 1n },
        { validUntilMs: cert.validFromMs },
        { validUntilMs: cert.validFromMs - 1n },
        { version: -1 },
        { version: 2 ** 32 },
      ];
      for (const patch of lengths) expectCode(() => verifyCertificate(w.crypto, tamper(patch), opts), 'malformed');
      for (const v of WRONG_TYPES) expectCode(() => verifyCertificate(w.crypto, v as AgentCertificate, opts), 'malformed');
      for (const v of WRONG_TYPES) expectCode(() => certificateTbs(v as AgentCertificate), 'malformed');
    });

    it('verify options of the wrong type', () => {
      for (const v of WRONG_TYPES) {
        if (v !== undefined) expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, revocations: v as RevocationChecker }), 'malformed');
        if (v !== undefined) expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, expectedAgentId: v as string }), 'malformed');
        expectCode(() => verifyCertificate(w.crypto, cert, v as VerifyCertificateOptions), 'malformed');
        expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, trustBundle: v as TrustBundle }), 'malformed');
      }
      for (const v of NOT_MS) expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, nowMs: v as number }), 'malformed');
      expectCode(() => verifyCertificate(w.crypto, cert, { ...opts, trustBundle: w.bundle.toJSON() as never }), 'malformed');
    });

    it('issueCertificate inputs of the wrong type', () => {
      const fieldNames = ['agentId', 'identityPublicKey', 'agentType', 'capabilities', 'validFromMs', 'validUntilMs', 'serial'] as const;
      for (const field of fieldNames) {
        for (const v of WRONG_TYPES) {
          if (field === 'serial' && v === undefined) continue; // optional
          if ((field === 'validFromMs' || field === 'validUntilMs') && v === 0) continue;
          if (field === 'validFromMs' && v === 1n) continue;
          if (field === 'capabilities' && Array.isArray(v)) continue; // arrays are iterables; [1, 2] checked below
          expectCode(() => w.issue({ [field]: v }), 'malformed');
        }
      }
      expectCode(() => w.issue({ capabilities: [1, 2] as never }), 'malformed');
      expectCode(() => w.issue({ validUntilMs: T0 }), 'malformed');
      expectCode(() => w.issue({ validFromMs: -1 }), 'malformed');
      expectCode(() => w.issue({ validFromMs: 2 ** 53 }), 'malformed');
      expectCode(() => w.issue({ serial: new Uint8Array(8) }), 'malformed');
      for (const v of WRONG_TYPES) {
        expectCode(() => issueCertificate(w.crypto, w.issuer, v as never), 'malformed');
        expectCode(() => issueCertificate(w.crypto, v as never, w.fields), 'malformed');
        expectCode(() => issueCertificate(w.crypto, { ...w.issuer, secretKey: v as SecretKey }, w.fields), 'malformed');
        expectCode(() => issueCertificate(w.crypto, { ...w.issuer, publicKey: v as Uint8Array }, w.fields), 'malformed');
        expectCode(() => issueCertificate(w.crypto, { ...w.issuer, keyId: v as Uint8Array }, w.fields), 'malformed');
      }
      // An issuer whose key id is not its key's, or whose secret key is wiped.
      expectCode(() => issueCertificate(w.crypto, { ...w.issuer, keyId: new Uint8Array(16) }, w.fields), 'malformed');
      const wiped = createIssuerKey(w.crypto, w.crypto.ed25519.generateKeyPair());
      wiped.secretKey.wipe();
      expectCode(() => issueCertificate(w.crypto, wiped, w.fields), 'malformed');
      const x = w.crypto.x25519.generateKeyPair();
      expectCode(() => issueCertificate(w.crypto, { ...w.issuer, secretKey: x.secretKey }, w.fields), 'malformed');
    });

    it('createIssuerKey checks types and that the halves belong together', () => {
      const a = w.crypto.ed25519.generateKeyPair();
      const b = w.crypto.ed25519.generateKeyPair();
      expectCode(() => createIssuerKey(w.crypto, { publicKey: a.publicKey, secretKey: b.secretKey }), 'malformed');
      for (const v of WRONG_TYPES) {
        expectCode(() => createIssuerKey(w.crypto, v as never), 'malformed');
        expectCode(() => createIssuerKey(w.crypto, { publicKey: v as Uint8Array, secretKey: a.secretKey }), 'malformed');
        expectCode(() => createIssuerKey(w.crypto, { publicKey: a.publicKey, secretKey: v as SecretKey }), 'malformed');
      }
      expectCode(() => createIssuerKey(w.crypto, { publicKey: a.publicKey, secretKey: SecretKey.from(new Uint8Array(64), 'generic') }), 'malformed');
    });

    it('decodeCertificate: size cap, bad protobuf, unknown fields', () => {
      for (const v of WRONG_TYPES) expectCode(() => decodeCertificate(v as Uint8Array), 'malformed');
      expectCode(() => decodeCertificate(new Uint8Array(MAX_CERTIFICATE_BYTES + 1)), 'malformed');
      expectCode(() => decodeCertificate(Uint8Array.of(0x0a)), 'malformed'); // truncated
      expectCode(() => decodeCertificate(Uint8Array.of(0x12, 0x05, 0x61)), 'malformed'); // length past the end
      expectCode(() => decodeCertificate(Uint8Array.of(0x0f)), 'malformed'); // wire type 7
      expectCode(() => decodeCertificate(Uint8Array.of(0x12, 0x02, 0xc3, 0x28)), 'malformed'); // invalid UTF-8 string
      const bytes = encodeCertificate(cert);
      const withUnknown = new Uint8Array([...bytes, 0xa0, 0x06, 0x01]); // field 100, varint 1
      expectCode(() => decodeCertificate(withUnknown), 'malformed');
      const truncated = bytes.slice(0, bytes.length - 1);
      expectCode(() => decodeCertificate(truncated), 'malformed');
      // The empty message parses (all defaults) but does not verify.
      expectCode(() => verifyCertificate(w.crypto, decodeCertificate(new Uint8Array(0)), opts), 'unsupported_version');
      // Exactly at the cap is accepted by the parser.
      const padded = new Uint8Array(MAX_CERTIFICATE_BYTES);
      padded.set(bytes);
      padded.set([0x12, 0x00], bytes.length); // then zero-length agent_id fields fill the rest
      for (let i = bytes.length; i + 1 < MAX_CERTIFICATE_BYTES; i += 2) padded.set([0x12, 0x00], i);
      expect(decodeCertificate(padded).agentId).toBe('');
    });

    it('unknown fields on an in-memory certificate are rejected by verify too', () => {
      const withUnknown = new Uint8Array([...toBinary(AgentCertificateSchema, cert), 0xa0, 0x06, 0x01]);
      const sneaky = { ...cert, $unknown: [{ no: 100, wireType: 0, data: Uint8Array.of(1) }] } as AgentCertificate;
      expectCode(() => verifyCertificate(w.crypto, sneaky, opts), 'malformed');
      expectCode(() => encodeCertificate(sneaky), 'malformed');
      expect(withUnknown.length).toBeGreaterThan(0);
    });

    it('never issues a certificate too large to decode', () => {
      const caps = Array.from({ length: 64 }, (_, i) => `cap-${String(i).padStart(2, '0')}-${'x'.repeat(120)}`);
      expectCode(() => w.issue({ capabilities: caps }), 'malformed');
      expect(encodeCertificate(w.issue({ capabilities: caps.slice(0, 20) })).length).toBeLessThanOrEqual(MAX_CERTIFICATE_BYTES);
    });
  });

  it('inspect() and JSON of an IssuerKey do not show the secret key', () => {
    const seed = w.crypto.ed25519.exportSeed(w.issuer.secretKey);
    const shown = inspect(w.issuer, { depth: 10, showHidden: true });
    expect(shown).toContain('SecretKey(ed25519, 64 bytes)');
    const decimal = [...seed.slice(0, 8)].join(', ');
    expect(shown).not.toContain(decimal);
    expect(shown).not.toContain(toHex(seed));
    expect(JSON.stringify(w.issuer)).toContain('"secretKey":"[redacted]"');
    expect(`${w.issuer.secretKey}`).toBe('SecretKey(ed25519, 64 bytes)');
    seed.fill(0);
  });

  it('errors are IdentityError instances (not CryptoError) with a kept cause where one exists', () => {
    const wiped = createIssuerKey(w.crypto, w.crypto.ed25519.generateKeyPair());
    wiped.secretKey.wipe();
    const e = expectCode(() => issueCertificate(w.crypto, wiped, w.fields), 'malformed');
    expect(e).toBeInstanceOf(IdentityError);
    expect(e.cause).toBeDefined();
    expect(create(AgentCertificateSchema).version).toBe(0);
  });
});

describe('the crypto parameter', () => {
  it('anything but a ParleyCrypto is malformed, in every function that takes one', async () => {
    const w = await createWorld();
    const cert = w.issue();
    const bad = [...WRONG_TYPES, { blake3: () => 1 }, { blake3: () => 1, ed25519: null }, { blake3: () => 1, ed25519: { sign: 1 } }];
    for (const c of bad) {
      const crypto = c as typeof w.crypto;
      expectCode(() => keyId(crypto, w.issuer.publicKey), 'malformed');
      expectCode(() => randomSerial(crypto), 'malformed');
      expectCode(() => TrustBundle.from(crypto, []), 'malformed');
      expectCode(() => TrustBundle.fromJSON(crypto, { version: 1, issuers: [] }), 'malformed');
      expectCode(() => createIssuerKey(crypto, w.crypto.ed25519.generateKeyPair()), 'malformed');
      expectCode(() => issueCertificate(crypto, w.issuer, w.fields), 'malformed');
      expectCode(() => verifyCertificate(crypto, cert, { trustBundle: w.bundle, nowMs: NOW }), 'malformed');
    }
  });
});
