/**
 * An agent's own identity — its id, its Ed25519 identity secret key and the certificate naming that key —
 * checked for coherence before anything is signed with it. A signing key that is not the certificate's
 * signs handshake bindings, envelopes and memory requests that no peer or store accepts, and the refusal
 * reaches only the other side (`bad_binding`, `bad_signature`): the owner would never learn. Sessions
 * (`@parley/session`'s SessionManager and handshakes) and shared memory (`@parley/memory`'s MemoryClient)
 * run this one check when they are built.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import type { AgentCertificate } from '@parley/proto';
import { assertBytes, assertCrypto, assertObject, describe, malformed } from './assert.js';
import { IdentityError } from './errors.js';
import { PUBLIC_KEY_BYTES } from './key-id.js';
import { assertAgentId } from './names.js';

/** The identity an agent signs with (a session `LocalIdentity`, a memory `MemoryIdentity`). */
export interface SigningIdentity {
  readonly agentId: string;
  /** Ed25519 identity secret key (crypto-core's 64-byte seed ‖ public key form). */
  readonly signingKey: SecretKey;
  /** The certificate of this agent, naming the public key of `signingKey`. */
  readonly certificate: AgentCertificate;
}

/**
 * Public keys derived from signing keys already checked, so that a check repeated per handshake costs a
 * lookup and a 32-byte comparison (a SecretKey's bytes never change: it can only be wiped, checked first).
 */
const derived = new WeakMap<SecretKey, Uint8Array>();

/**
 * Asserts that `identity` holds together: `agentId` is a valid agent id and the certificate's, and
 * `signingKey` is an Ed25519 SecretKey whose public key — derived from the key with crypto-core and
 * compared in constant time — is the certificate's `identityPublicKey`. Not a certificate verification
 * (issuer, validity, revocation: `verifyCertificate` does those, and peers do them).
 *
 * @param crypto the ParleyCrypto instance
 * @param identity the agent's id, signing key and certificate
 * @param name how to name `identity` in messages
 * @returns `identity`
 * @throws IdentityError `malformed` (crypto, identity, key or certificate of the wrong type or length, a
 *   wiped key); `identity_mismatch` (the certificate is for another agent id, or for another key)
 * @example
 * assertLocalIdentity(crypto, { agentId, signingKey: keyPair.secretKey, certificate });
 */
export function assertLocalIdentity<T extends SigningIdentity>(crypto: ParleyCrypto, identity: T, name = 'identity'): T {
  assertCrypto(crypto);
  const id = assertObject(identity, name);
  const agentId = assertAgentId(id['agentId'], `${name}.agentId`);
  const certificate = assertObject(id['certificate'], `${name}.certificate`);
  const publicKey = assertBytes(certificate['identityPublicKey'], `${name}.certificate.identityPublicKey`, PUBLIC_KEY_BYTES);
  const signingKey = id['signingKey'];
  if (!(signingKey instanceof SecretKey)) malformed(`${name}.signingKey must be a SecretKey (an Ed25519 secret key from crypto-core), got ${describe(signingKey)}`);
  if (signingKey.kind !== 'ed25519') malformed(`${name}.signingKey must be an Ed25519 key, got a ${signingKey.kind} key`);
  if (signingKey.isWiped) malformed(`${name}.signingKey was wiped`);
  if (certificate['agentId'] !== agentId) {
    throw new IdentityError('identity_mismatch', `${name}.certificate is for ${describeId(certificate['agentId'])}, not ${agentId}`);
  }
  if (!crypto.constantTimeEqual(publicKeyOf(crypto, signingKey, name), publicKey)) {
    throw new IdentityError('identity_mismatch', `${name}.signingKey does not belong to the certificate of ${agentId}: its public key is not the certificate's identityPublicKey`);
  }
  return identity;
}

/** The Ed25519 public key of `key`, derived from its seed (once per key object). */
function publicKeyOf(crypto: ParleyCrypto, key: SecretKey, name: string): Uint8Array {
  const known = derived.get(key);
  if (known !== undefined) return known;
  let seed: Uint8Array;
  try {
    seed = crypto.ed25519.exportSeed(key);
  } catch (cause) {
    return malformed(`${name}.signingKey is not an Ed25519 secret key`, cause);
  }
  try {
    const pair = crypto.ed25519.keyPairFromSeed(seed);
    pair.secretKey.wipe();
    derived.set(key, pair.publicKey);
    return pair.publicKey;
  } finally {
    crypto.wipe(seed);
  }
}

function describeId(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value.slice(0, 128)) : describe(value);
}
