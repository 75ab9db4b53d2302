/**
 * Enrolment with join tokens (docs/PROTOCOL.md §15.11): operators create, list and revoke single-use
 * tokens; EnrollAgent spends one for a certificate on a key generated where the agent runs (the key
 * proves possession over the enrolment layout). Refused enrolments are security events.
 */
import { toHex } from '@parley/crypto-core';
import { assertAgentId, assertAgentType, normaliseCapabilities } from '@parley/identity';
import type { RegistryService } from '@parley/proto';
import { RpcError, type ServiceImplementation } from '@parley/rpc';
import { JOIN_TOKEN_ID_BYTES, JOIN_TOKEN_SECRET_BYTES, enrolmentLayout, formatJoinToken, joinTokenHash } from '@parley/protocol';
import type { AgentRow } from '../store.js';
import type { ServiceContext } from './context.js';
import { agentRecord, field, joinTokenMessage, requireBytes } from './fields.js';

/** Join token lifetimes: 1 s .. 7 days. */
const MIN_JOIN_TOKEN_TTL_MS = 1000;
const MAX_JOIN_TOKEN_TTL_MS = 7 * 86_400_000;

/** CreateJoinToken, ListJoinTokens, RevokeJoinToken, EnrollAgent. */
export function joinTokenHandlers(c: ServiceContext): Pick<ServiceImplementation<typeof RegistryService>, 'createJoinToken' | 'listJoinTokens' | 'revokeJoinToken' | 'enrollAgent'> {
  const { store, crypto, settings } = c;
  return {
    createJoinToken: async (req, ctx) => {
      const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
      const agentType = field(() => assertAgentType(req.agentType, 'agent_type'));
      const capabilities = field(() => normaliseCapabilities(req.capabilities));
      if (req.ttlMs < BigInt(MIN_JOIN_TOKEN_TTL_MS) || req.ttlMs > BigInt(MAX_JOIN_TOKEN_TTL_MS)) throw new RpcError('malformed', `ttl_ms must be ${MIN_JOIN_TOKEN_TTL_MS}..${MAX_JOIN_TOKEN_TTL_MS} (1 s .. 7 days)`);
      const validityMs = req.validityMs === 0n ? settings.defaultValidityMs : Number(req.validityMs);
      if (req.validityMs < 0n || validityMs > settings.maxValidityMs || validityMs < 1000) throw new RpcError('malformed', `validity_ms must be 1000..${settings.maxValidityMs} (0: the default)`);
      const caller = await c.auth.authorise(ctx, 'write');
      const nowMs = Date.now();
      const tokenId = crypto.randomBytes(JOIN_TOKEN_ID_BYTES);
      const tokenSecret = crypto.randomBytes(JOIN_TOKEN_SECRET_BYTES);
      const row = await store.createJoinToken({
        tokenId,
        tokenHash: joinTokenHash(crypto, tokenId, tokenSecret),
        agentId,
        agentType,
        capabilities,
        validityMs,
        createdAtMs: nowMs,
        expiresAtMs: nowMs + Number(req.ttlMs),
        createdByKeyId: caller!.keyId,
      });
      c.logger.info({ event: 'join_token_created', token_id: toHex(tokenId), agent_id: agentId, expires_at_ms: row.expiresAtMs, operator: caller?.name }, 'join token created');
      return { tokenId, tokenSecret, expiresAtMs: BigInt(row.expiresAtMs), token: formatJoinToken(tokenId, tokenSecret) };
    },

    listJoinTokens: async (req, ctx) => {
      await c.auth.authorise(ctx, 'write');
      return { tokens: (await store.joinTokens(req.all, Date.now())).map(joinTokenMessage) };
    },

    revokeJoinToken: async (req, ctx) => {
      const tokenId = requireBytes(req.tokenId, JOIN_TOKEN_ID_BYTES, 'token_id');
      const caller = await c.auth.authorise(ctx, 'write');
      const row = await store.revokeJoinToken(tokenId, Date.now());
      c.logger.info({ event: 'join_token_revoked', token_id: toHex(tokenId), operator: caller?.name }, 'join token revoked');
      return { token: joinTokenMessage(row) };
    },

    enrollAgent: async (req, ctx) => {
      const nowMs = Date.now();
      const tokenId = requireBytes(req.tokenId, JOIN_TOKEN_ID_BYTES, 'token_id');
      const tokenSecret = requireBytes(req.tokenSecret, JOIN_TOKEN_SECRET_BYTES, 'token_secret');
      const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
      const identityPublicKey = requireBytes(req.identityPublicKey, 32, 'identity_public_key');
      if (req.timestampMs < 0n || req.timestampMs > BigInt(Number.MAX_SAFE_INTEGER)) throw new RpcError('malformed', 'timestamp_ms must be milliseconds since the epoch');
      const tokenHash = joinTokenHash(crypto, tokenId, tokenSecret);
      c.auth.verifyAgentSignature(
        ctx,
        req.proofSignature,
        enrolmentLayout({ registryId: c.registryId, tokenId, tokenHash, agentId, identityPublicKey, timestampMs: req.timestampMs }),
        identityPublicKey,
        'proof_signature (the agent key over the enrolment layout)',
        agentId,
      );
      const skew = Number(req.timestampMs) - nowMs;
      if (skew < -settings.maxClockSkewMs) throw new RpcError('stale_timestamp', `enrolment timestamp is ${Math.round(-skew / 1000)} s old (allowed ${settings.maxClockSkewMs / 1000} s)`);
      if (skew > settings.maxClockSkewMs) throw new RpcError('future_timestamp', `enrolment timestamp is ${Math.round(skew / 1000)} s ahead (allowed ${settings.maxClockSkewMs / 1000} s)`);
      let agent: AgentRow;
      try {
        agent = await store.enrollAgent(c.issuers.active(), { tokenId, tokenHash, agentId, identityPublicKey, nowMs });
      } catch (error) {
        const e = RpcError.from(error);
        if (e.code.startsWith('join_token_')) {
          c.logger.warn({ event: 'security', stage: 'enrolment', code: e.code, token_id: toHex(tokenId), agent_id: agentId, peer: ctx.peer }, 'enrolment refused');
        }
        throw error;
      }
      c.metrics.issued.inc({ reason: 'enrol' });
      c.logger.info({ event: 'agent_enrolled', agent_id: agentId, token_id: toHex(tokenId), serial: toHex(agent.certificate.serial) }, 'agent enrolled with a join token');
      return { agent: agentRecord(agent) };
    },
  };
}
