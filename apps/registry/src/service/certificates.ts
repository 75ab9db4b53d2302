/**
 * Certificate issuance (docs/PROTOCOL.md §15.4–§15.6): registration challenges, RegisterAgent (an operator
 * registers an agent whose key proves possession of the challenge) and RotateKey (the current key
 * authorises, the new key proves possession; the old certificate is revoked in the same transaction).
 */
import { toHex } from '@parley/crypto-core';
import { assertAgentId, assertAgentType, keyId as computeKeyId, normaliseCapabilities } from '@parley/identity';
import { ChallengePurpose, type RegistryService } from '@parley/proto';
import { RpcError, type ServiceImplementation } from '@parley/rpc';
import { CHALLENGE_BYTES, registrationProofLayout, rotationAuthorisationLayout, rotationProofLayout } from '@parley/protocol';
import type { ServiceContext } from './context.js';
import { agentRecord, checkValidity, field, requireBytes, revocationEntry } from './fields.js';

/** CreateChallenge, RegisterAgent, RotateKey. */
export function certificateHandlers(c: ServiceContext): Pick<ServiceImplementation<typeof RegistryService>, 'createChallenge' | 'registerAgent' | 'rotateKey'> {
  const { store, settings } = c;
  return {
    createChallenge: async (req) => {
      if (req.purpose !== ChallengePurpose.REGISTER && req.purpose !== ChallengePurpose.ROTATE_KEY) {
        throw new RpcError('malformed', `challenge purpose must be REGISTER (1) or ROTATE_KEY (2), got ${req.purpose}`);
      }
      const expiresAtMs = Date.now() + settings.challengeTtlMs;
      const challenge = await store.createChallenge(req.purpose, expiresAtMs);
      return { challenge, expiresAtMs: BigInt(expiresAtMs) };
    },

    registerAgent: async (req, ctx) => {
      const nowMs = Date.now();
      // Everything is checked before the operator's nonce is spent or anything is written.
      const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
      const agentType = field(() => assertAgentType(req.agentType, 'agent_type'));
      const capabilities = field(() => normaliseCapabilities(req.capabilities));
      const identityPublicKey = requireBytes(req.identityPublicKey, 32, 'identity_public_key');
      const challenge = requireBytes(req.challenge, CHALLENGE_BYTES, 'challenge');
      const validity = checkValidity(settings, req.validFromMs, req.validUntilMs, nowMs);
      const caller = await c.auth.authorise(ctx, 'write');
      c.auth.verifyAgentSignature(
        ctx,
        req.proofSignature,
        registrationProofLayout({ registryId: c.registryId, challenge, agentId, identityPublicKey }),
        identityPublicKey,
        'proof_signature (the agent key over the registration challenge)',
        agentId,
      );
      const agent = await store.registerAgent(c.issuers.active(), { agentId, identityPublicKey, agentType, capabilities, ...validity, challenge, nowMs });
      c.metrics.issued.inc({ reason: 'register' });
      c.logger.info({ agent_id: agentId, serial: toHex(agent.certificate.serial), operator: caller?.name }, 'agent registered');
      return { agent: agentRecord(agent) };
    },

    rotateKey: async (req, ctx) => {
      const nowMs = Date.now();
      const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
      const newPublicKey = requireBytes(req.newIdentityPublicKey, 32, 'new_identity_public_key');
      const challenge = requireBytes(req.challenge, CHALLENGE_BYTES, 'challenge');
      // 0: the old certificate's end. Anything else is capped at it in the store (rotation never extends a grant).
      const validUntilMs = req.validUntilMs === 0n ? undefined : checkValidity(settings, 0n, req.validUntilMs, nowMs).validUntilMs;
      const agent = await store.agent(agentId, nowMs);
      if (agent === undefined) throw new RpcError('not_found', `unknown agent '${agentId}'`);
      const oldPublicKey = agent.certificate.identityPublicKey;
      const fields = { registryId: c.registryId, challenge, agentId, oldPublicKey, newPublicKey };
      // Authorised by the current key; the new key proves possession. Both before anything is written.
      c.auth.verifyAgentSignature(ctx, req.oldKeySignature, rotationAuthorisationLayout(fields), oldPublicKey, 'old_key_signature (the current identity key)', agentId);
      c.auth.verifyAgentSignature(ctx, req.newKeySignature, rotationProofLayout(fields), newPublicKey, 'new_key_signature (the new identity key)', agentId);
      let result: Awaited<ReturnType<typeof store.rotateKey>>;
      try {
        result = await store.rotateKey(c.issuers.active(), { agentId, expectedSerial: agent.certificate.serial, newPublicKey, validUntilMs, challenge, nowMs });
      } catch (error) {
        // At most one rotation a minute per agent (§15.5): each one grows the revocation list for ever.
        if (error instanceof RpcError && error.code === 'rate_limited') c.auth.securityEvent(ctx, 'rate_limited', error.message, { agent: agentId, keyId: computeKeyId(c.crypto, oldPublicKey) });
        throw error;
      }
      c.metrics.issued.inc({ reason: 'rotate' });
      c.metrics.revoked.inc({ subject: 'serial', via: 'rotate' });
      c.notifier.notify();
      c.logger.info({ agent_id: agentId, serial: toHex(result.agent.certificate.serial), superseded_version: result.superseded.version }, 'agent key rotated');
      return { agent: agentRecord(result.agent), superseded: revocationEntry(result.superseded) };
    },
  };
}
