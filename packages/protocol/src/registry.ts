/**
 * The registry's proofs of possession (docs/PROTOCOL.md §15.4–§15.5): what an
 * agent's identity key signs to register, and what the old and new keys sign
 * to rotate. Shared by the registry server that checks them and the clients
 * that make them (its CLI, tests, other SDKs through the conformance vectors).
 * The revocation list's layouts (§15.6) live in @parley/identity, beside the
 * revocation set they feed. Also here: the join token hash and the enrolment
 * proof of possession (§15.11).
 */
import { fromBase64Url, fromHex, layout, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { REGISTRY_ID_BYTES } from '@parley/identity';
import { asMalformed, assertCrypto, check } from './assert.js';
import { ProtocolError } from './errors.js';

/** Length of a registration or rotation challenge. */
export const CHALLENGE_BYTES = 32;

/** Domain tags of the registry's proof layouts. */
export const REGISTRY_DOMAINS = Object.freeze({
  registration: 'parley/v1/registry-registration',
  rotationAuthorisation: 'parley/v1/registry-rotate-key',
  rotationProof: 'parley/v1/registry-rotate-key-proof',
  joinToken: 'parley/v1/join-token',
  enrolment: 'parley/v1/registry-enrolment',
} as const);

/**
 * What an agent signs to register (§15.4): proof that it holds the identity
 * key, bound to this registry, this challenge and this agent id.
 *
 * @returns `layout('parley/v1/registry-registration').fixed16(registry_id).fixed32(challenge).str(agent_id).fixed32(identity_public_key)`
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function registrationProofLayout(fields: {
  readonly registryId: Uint8Array;
  readonly challenge: Uint8Array;
  readonly agentId: string;
  readonly identityPublicKey: Uint8Array;
}): Uint8Array {
  const f = check.object(fields, 'fields') as unknown as typeof fields;
  return asMalformed('registration proof', () =>
    layout(REGISTRY_DOMAINS.registration)
      .fixed(f.registryId, REGISTRY_ID_BYTES, 'registryId')
      .fixed(f.challenge, CHALLENGE_BYTES, 'challenge')
      .str(f.agentId)
      .fixed(f.identityPublicKey, 32, 'identityPublicKey')
      .bytes(),
  );
}

/** The fields both rotation signatures cover. */
export interface RotationFields {
  readonly registryId: Uint8Array;
  readonly challenge: Uint8Array;
  readonly agentId: string;
  readonly oldPublicKey: Uint8Array;
  readonly newPublicKey: Uint8Array;
}

function rotationLayout(domain: string, fields: RotationFields): Uint8Array {
  const f = check.object(fields, 'fields') as unknown as RotationFields;
  return asMalformed('rotation proof', () =>
    layout(domain)
      .fixed(f.registryId, REGISTRY_ID_BYTES, 'registryId')
      .fixed(f.challenge, CHALLENGE_BYTES, 'challenge')
      .str(f.agentId)
      .fixed(f.oldPublicKey, 32, 'oldPublicKey')
      .fixed(f.newPublicKey, 32, 'newPublicKey')
      .bytes(),
  );
}

/**
 * What the current identity key signs to authorise a rotation (§15.5).
 * @returns `layout('parley/v1/registry-rotate-key').fixed16(registry_id).fixed32(challenge).str(agent_id).fixed32(old_pk).fixed32(new_pk)`
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function rotationAuthorisationLayout(fields: RotationFields): Uint8Array {
  return rotationLayout(REGISTRY_DOMAINS.rotationAuthorisation, fields);
}

/**
 * What the new identity key signs to prove possession (§15.5): the same fields
 * under another domain tag, so neither signature can stand in for the other.
 * @returns `layout('parley/v1/registry-rotate-key-proof')…` with the fields of {@link rotationAuthorisationLayout}
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function rotationProofLayout(fields: RotationFields): Uint8Array {
  return rotationLayout(REGISTRY_DOMAINS.rotationProof, fields);
}

/** Length of a join token id. */
export const JOIN_TOKEN_ID_BYTES = 16;
/** Length of a join token secret. */
export const JOIN_TOKEN_SECRET_BYTES = 32;
/** Prefix of a join token's text form. */
export const JOIN_TOKEN_PREFIX = 'pjt1';

/**
 * The hash a registry stores for a join token (§15.11), and which the enrolment proof signs:
 * `BLAKE3(str("parley/v1/join-token") ‖ fixed16(token_id) ‖ fixed32(token_secret))`.
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function joinTokenHash(crypto: ParleyCrypto, tokenId: Uint8Array, tokenSecret: Uint8Array): Uint8Array {
  assertCrypto(crypto);
  return asMalformed('join token', () =>
    crypto.blake3(layout(REGISTRY_DOMAINS.joinToken).fixed(tokenId, JOIN_TOKEN_ID_BYTES, 'tokenId').fixed(tokenSecret, JOIN_TOKEN_SECRET_BYTES, 'tokenSecret').bytes()),
  );
}

/** The fields an enrolment proof of possession covers. */
export interface EnrolmentFields {
  readonly registryId: Uint8Array;
  readonly tokenId: Uint8Array;
  /** {@link joinTokenHash} of the token. */
  readonly tokenHash: Uint8Array;
  readonly agentId: string;
  readonly identityPublicKey: Uint8Array;
  readonly timestampMs: bigint | number;
}

/**
 * What the agent's new identity key signs to enrol with a join token (§15.11).
 * @returns `layout('parley/v1/registry-enrolment').fixed16(registry_id).fixed16(token_id).fixed32(token_hash)
 *   .str(agent_id).fixed32(identity_public_key).i64(timestamp_ms)`
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function enrolmentLayout(fields: EnrolmentFields): Uint8Array {
  const f = check.object(fields, 'fields') as unknown as EnrolmentFields;
  return asMalformed('enrolment proof', () =>
    layout(REGISTRY_DOMAINS.enrolment)
      .fixed(f.registryId, REGISTRY_ID_BYTES, 'registryId')
      .fixed(f.tokenId, JOIN_TOKEN_ID_BYTES, 'tokenId')
      .fixed(f.tokenHash, 32, 'tokenHash')
      .str(f.agentId)
      .fixed(f.identityPublicKey, 32, 'identityPublicKey')
      .i64(f.timestampMs)
      .bytes(),
  );
}

/**
 * The text form of a join token: `pjt1.` hex(token_id) `.` base64url(secret). The lengths are checked as
 * {@link parseJoinToken} checks them, so what it formats parses back.
 * @throws ProtocolError `malformed` unless the id is 16 bytes and the secret 32
 */
export function formatJoinToken(tokenId: Uint8Array, tokenSecret: Uint8Array): string {
  check.bytes(tokenId, 'tokenId', JOIN_TOKEN_ID_BYTES);
  check.bytes(tokenSecret, 'tokenSecret', JOIN_TOKEN_SECRET_BYTES);
  return `${JOIN_TOKEN_PREFIX}.${toHex(tokenId)}.${toBase64Url(tokenSecret)}`;
}

/**
 * Parses a join token's text form (surrounding whitespace ignored).
 * @throws ProtocolError `malformed`
 */
export function parseJoinToken(text: string): { tokenId: Uint8Array; tokenSecret: Uint8Array } {
  const m = /^pjt1\.([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$/.exec(check.string(text, 'join token').trim());
  if (m === null) throw new ProtocolError('malformed', 'a join token is "pjt1." followed by 32 hex digits, "." and 43 base64url characters');
  let tokenSecret: Uint8Array;
  try {
    tokenSecret = fromBase64Url(m[2]!);
  } catch {
    throw new ProtocolError('malformed', 'the join token secret is not canonical base64url');
  }
  if (tokenSecret.length !== JOIN_TOKEN_SECRET_BYTES) throw new ProtocolError('malformed', 'the join token secret must be 32 bytes');
  return { tokenId: fromHex(m[1]!), tokenSecret };
}
