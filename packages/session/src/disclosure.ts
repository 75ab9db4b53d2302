/**
 * Non-repudiation (docs/PROTOCOL.md §6.4): a recipient proves to a third party
 * who trusts the issuer that the sender sent a given payload, by disclosing
 * the payload bytes and the commitment salt — no session key is involved or
 * revealed.
 *
 * The verifier checks: envelope shape → sender certificate (trusted issuer,
 * valid at the envelope's timestamp, for the envelope's sender_id) → the
 * sender's Ed25519 signature over the envelope signing layout → the salted
 * BLAKE3 commitment over the disclosed bytes → the payload decodes and its
 * timestamp equals the envelope's.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, verifyCertificate, type RevocationChecker } from '@parley/identity';
import { ValueSchema, toJson, type AgentCertificate, type JsonValue, type MessagePayload, type SecureMessage } from '@parley/proto';
import { asSessionError, assertCrypto, check, describe, malformed } from './assert.js';
import { SALT_BYTES, assertEnvelopeShape, envelopeSignedBytes, payloadCommitment } from './envelope.js';
import { SessionError } from './errors.js';
import { decodePayload, type Disclosure } from './session.js';

export interface DisclosureProof {
  readonly envelope: SecureMessage;
  readonly senderCertificate: AgentCertificate;
  readonly disclosure: Disclosure;
}

export interface ProvenMessage {
  readonly senderId: string;
  readonly recipientId: string;
  readonly messageHash: Uint8Array;
  readonly payload: MessagePayload;
  readonly content: JsonValue;
}

/**
 * Proves that the envelope's sender sent the disclosed payload.
 * @param options.trustBundle issuer keys the verifier trusts
 * @param options.revocations optional: also require the certificate not to be revoked now
 * @returns the proven message
 * @throws SessionError: `malformed`, `unknown_issuer`, `bad_certificate`, `expired`, `not_yet_valid`,
 *   `identity_mismatch`, `revoked`, `bad_signature`, `bad_commitment`
 */
export function verifyDisclosure(
  crypto: ParleyCrypto,
  proof: DisclosureProof,
  options: { trustBundle: TrustBundle; revocations?: RevocationChecker },
): ProvenMessage {
  assertCrypto(crypto);
  const { envelope, senderCertificate, disclosure } = check.object(proof, 'proof') as Partial<DisclosureProof>;
  const { trustBundle, revocations } = check.object(options, 'options') as Partial<typeof options>;
  if (!(trustBundle instanceof TrustBundle)) malformed(`options.trustBundle must be a TrustBundle, got ${describe(trustBundle)}`);
  assertEnvelopeShape(envelope);
  if (!(disclosure?.salt instanceof Uint8Array) || disclosure.salt.length !== SALT_BYTES || !(disclosure.payload instanceof Uint8Array)) {
    throw new SessionError('malformed', 'disclosure must hold a 32-byte salt and the payload bytes');
  }
  // The certificate must have been valid when the sender signed.
  const cert = asSessionError('sender certificate', () =>
    verifyCertificate(crypto, senderCertificate!, {
      trustBundle,
      nowMs: Number(envelope.timestampMs),
      expectedAgentId: envelope.senderId,
      ...(revocations === undefined ? {} : { revocations }),
    }),
  );
  const signed = envelopeSignedBytes(crypto, envelope, envelope.encryptedPayload, envelope.authTag);
  if (!crypto.ed25519.verify(envelope.signature, signed, cert.identityPublicKey)) {
    throw new SessionError('bad_signature', 'envelope signature does not verify under the sender certificate');
  }
  const commitment = payloadCommitment(crypto, disclosure.salt, disclosure.payload);
  if (!crypto.constantTimeEqual(commitment, envelope.payloadCommitment)) {
    throw new SessionError('bad_commitment', 'disclosed payload does not match the signed commitment');
  }
  const payload = decodePayload(disclosure.payload, envelope.timestampMs);
  return {
    senderId: envelope.senderId,
    recipientId: envelope.recipientId,
    messageHash: crypto.blake3(signed),
    payload,
    content: payload.content === undefined ? null : toJson(ValueSchema, payload.content),
  };
}
