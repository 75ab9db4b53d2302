/**
 * The registry's proofs of possession (docs/PROTOCOL.md §15.4–§15.5): what an
 * agent's identity key signs to register, and what the old and new keys sign
 * to rotate. Shared by the registry server that checks them and the clients
 * that make them (its CLI, tests, other SDKs through the conformance vectors).
 * The revocation list's layouts (§15.6) live in @parley/identity, beside the
 * revocation set they feed.
 */
import { layout } from '@parley/crypto-core';
import { REGISTRY_ID_BYTES } from '@parley/identity';

/** Length of a registration or rotation challenge. */
export const CHALLENGE_BYTES = 32;

/** Domain tags of the registry's proof layouts. */
export const REGISTRY_DOMAINS = Object.freeze({
  registration: 'parley/v1/registry-registration',
  rotationAuthorisation: 'parley/v1/registry-rotate-key',
  rotationProof: 'parley/v1/registry-rotate-key-proof',
} as const);

/**
 * What an agent signs to register (§15.4): proof that it holds the identity
 * key, bound to this registry, this challenge and this agent id.
 *
 * @returns `layout('parley/v1/registry-registration').fixed16(registry_id).fixed32(challenge).str(agent_id).fixed32(identity_public_key)`
 * @throws CryptoError on a wrong length
 */
export function registrationProofLayout(fields: {
  readonly registryId: Uint8Array;
  readonly challenge: Uint8Array;
  readonly agentId: string;
  readonly identityPublicKey: Uint8Array;
}): Uint8Array {
  return layout(REGISTRY_DOMAINS.registration)
    .fixed(fields.registryId, REGISTRY_ID_BYTES, 'registryId')
    .fixed(fields.challenge, CHALLENGE_BYTES, 'challenge')
    .str(fields.agentId)
    .fixed(fields.identityPublicKey, 32, 'identityPublicKey')
    .bytes();
}

/** The fields both rotation signatures cover. */
export interface RotationFields {
  readonly registryId: Uint8Array;
  readonly challenge: Uint8Array;
  readonly agentId: string;
  readonly oldPublicKey: Uint8Array;
  readonly newPublicKey: Uint8Array;
}

function rotationLayout(domain: string, f: RotationFields): Uint8Array {
  return layout(domain)
    .fixed(f.registryId, REGISTRY_ID_BYTES, 'registryId')
    .fixed(f.challenge, CHALLENGE_BYTES, 'challenge')
    .str(f.agentId)
    .fixed(f.oldPublicKey, 32, 'oldPublicKey')
    .fixed(f.newPublicKey, 32, 'newPublicKey')
    .bytes();
}

/**
 * What the current identity key signs to authorise a rotation (§15.5).
 * @returns `layout('parley/v1/registry-rotate-key').fixed16(registry_id).fixed32(challenge).str(agent_id).fixed32(old_pk).fixed32(new_pk)`
 */
export function rotationAuthorisationLayout(fields: RotationFields): Uint8Array {
  return rotationLayout(REGISTRY_DOMAINS.rotationAuthorisation, fields);
}

/**
 * What the new identity key signs to prove possession (§15.5): the same fields
 * under another domain tag, so neither signature can stand in for the other.
 * @returns `layout('parley/v1/registry-rotate-key-proof')…` with the fields of {@link rotationAuthorisationLayout}
 */
export function rotationProofLayout(fields: RotationFields): Uint8Array {
  return rotationLayout(REGISTRY_DOMAINS.rotationProof, fields);
}
