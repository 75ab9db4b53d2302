/**
 * Request signatures (docs/PROTOCOL.md §15.3): an operator's on every state change (default deny), an
 * operator's or the reading agent's own on directory reads unless they are public, an operator's on
 * revocation reads when `readsRequireAuth`; agents' proofs of possession. Every refusal is a security
 * event with stable fields (README), counted, then the error.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { toHex } from '@parley/crypto-core';
import { keyId as computeKeyId } from '@parley/identity';
import { AgentStatus } from '@parley/proto';
import { LogThrottle, RateLimiter, RpcError, type CallContext, type RateLimitOptions } from '@parley/rpc';
import { parseAgentMetadata, parseOperatorMetadata, verifyAgentRequest, verifyOperatorRequest } from '@parley/protocol';
import type { Logger } from 'pino';
import type { RegistrySettings } from '../config.js';
import type { RegistryMetrics } from '../metrics.js';
import type { RegistryStore } from '../store.js';
import { requireBytes } from './fields.js';

/** The authenticated operator of a call, when there is one. */
export interface Caller {
  readonly keyId: Uint8Array;
  readonly name: string;
}

/** What a read call needs (§15.3). */
export type ReadKind = 'directory' | 'operators' | 'revocations';

export interface AuthoriserOptions {
  readonly crypto: ParleyCrypto;
  readonly store: RegistryStore;
  readonly settings: RegistrySettings;
  readonly logger: Logger;
  readonly metrics: RegistryMetrics;
  readonly registryId: Uint8Array;
  /** Agent-signed directory reads per agent key (default {@link AGENT_READ_RATE}). */
  readonly agentReadRate?: RateLimitOptions;
}

/**
 * Directory reads signed by an agent, per agent key (§15.3): checked after the signature and before the
 * nonce is written, so one agent cannot grow the nonce table at the speed it can sign.
 */
export const AGENT_READ_RATE: RateLimitOptions = Object.freeze({ ratePerSecond: 50, burst: 100 });
/** Agent-signed reads between two sweeps of the buckets that are full again. */
const SWEEP_EVERY = 1024;

export class Authoriser {
  readonly #o: AuthoriserOptions;
  readonly #agentReads: RateLimiter;
  #sinceSweep = 0;
  /** Refusals by the read rate: one security line a second in all (counted every time). */
  readonly #rateLimitedLog = new LogThrottle(1000);

  constructor(options: AuthoriserOptions) {
    this.#o = options;
    this.#agentReads = new RateLimiter(options.agentReadRate ?? AGENT_READ_RATE);
  }

  /**
   * Checks a request's signature (§15.3): an operator's, or for a directory read an agent's own.
   * Returns the operator, or undefined for an agent or an unsigned read that is allowed.
   */
  async authorise(ctx: CallContext, kind: 'write' | ReadKind): Promise<Caller | undefined> {
    const get = (key: string): string | undefined => {
      const value = ctx.metadata.get(key)[0];
      return typeof value === 'string' ? value : undefined;
    };
    const auth = parseOperatorMetadata(get);
    if (auth === undefined) {
      const { settings } = this.#o;
      if (kind === 'directory') {
        const agent = parseAgentMetadata(get);
        if (agent !== undefined) {
          await this.#authoriseAgent(ctx, agent);
          return undefined;
        }
      }
      const open =
        kind === 'revocations' ? !settings.readsRequireAuth : kind === 'directory' || kind === 'operators' ? settings.directoryReads === 'public' && !settings.readsRequireAuth : false;
      if (open) return undefined;
      return this.#refuse(
        ctx,
        'unauthenticated',
        kind === 'directory' ? `${ctx.method.name} requires an operator or agent request signature (directory_reads is "authenticated")` : `${ctx.method.name} requires an operator request signature`,
      );
    }
    const who = { keyId: auth.keyId };
    const operator = await this.#o.store.operator(auth.keyId);
    if (operator === undefined) return this.#refuse(ctx, 'permission_denied', `key ${toHex(auth.keyId)} is not a listed operator of this registry`, who);
    const target = { registryId: this.#o.registryId, path: ctx.path, body: ctx.requestBytes };
    if (!verifyOperatorRequest(this.#o.crypto, operator.publicKey, auth, target)) {
      return this.#refuse(ctx, 'permission_denied', 'operator request signature does not verify', who);
    }
    const skew = auth.timestampMs - Date.now();
    if (Math.abs(skew) > this.#o.settings.maxClockSkewMs) {
      return this.#refuse(ctx, 'permission_denied', `operator request timestamp is ${Math.round(skew / 1000)} s off the registry clock (allowed ±${this.#o.settings.maxClockSkewMs / 1000} s)`, who);
    }
    const fresh = await this.#o.store.useNonce(auth.keyId, auth.nonce, auth.timestampMs + this.#o.settings.maxClockSkewMs + 1000);
    if (!fresh) return this.#refuse(ctx, 'permission_denied', 'operator request replayed (nonce already used)', who);
    return { keyId: auth.keyId, name: operator.name };
  }

  /** An agent's own signature on a directory read (§15.3): its current, valid, unrevoked certificate's key. */
  async #authoriseAgent(ctx: CallContext, auth: NonNullable<ReturnType<typeof parseAgentMetadata>>): Promise<void> {
    const { store, crypto, settings } = this.#o;
    const nowMs = Date.now();
    const who = { agent: auth.agentId };
    const agent = await store.agent(auth.agentId, nowMs);
    if (agent === undefined || !crypto.constantTimeEqual(agent.certificate.serial, auth.serial)) {
      return this.#refuse(ctx, 'permission_denied', 'the signing agent is unknown, or the serial is not its current certificate', who);
    }
    if (agent.status !== AgentStatus.ACTIVE || nowMs < Number(agent.certificate.validFromMs)) {
      return this.#refuse(ctx, 'permission_denied', `the signing agent's certificate is ${agent.status === AgentStatus.REVOKED ? 'revoked' : 'not valid now'}`, who);
    }
    const target = { registryId: this.#o.registryId, path: ctx.path, body: ctx.requestBytes };
    if (!verifyAgentRequest(crypto, agent.certificate.identityPublicKey, auth, target)) return this.#refuse(ctx, 'permission_denied', 'agent request signature does not verify', who);
    const skew = auth.timestampMs - nowMs;
    if (Math.abs(skew) > settings.maxClockSkewMs) {
      return this.#refuse(ctx, 'permission_denied', `agent request timestamp is ${Math.round(skew / 1000)} s off the registry clock (allowed ±${settings.maxClockSkewMs / 1000} s)`, who);
    }
    const keyId = computeKeyId(crypto, agent.certificate.identityPublicKey);
    if (++this.#sinceSweep >= SWEEP_EVERY) {
      this.#sinceSweep = 0;
      this.#agentReads.sweep();
    }
    if (!this.#agentReads.take(toHex(keyId))) {
      const message = `more than ${this.#agentReads.burst} directory reads at once or ${this.#agentReads.ratePerSecond}/s sustained signed by this agent: retry later`;
      // Counted every time, logged at most once a second in all with the number held back: a flood of
      // refusals must not become a flood of log lines.
      const admitted = this.#rateLimitedLog.admit(Date.now());
      if (admitted !== undefined) this.securityEvent(ctx, 'rate_limited', `${message} (${admitted.suppressed} more refused since the last line)`, who);
      else this.#o.metrics.authRefusals.inc({ code: 'rate_limited' });
      throw new RpcError('rate_limited', message);
    }
    const fresh = await store.useNonce(keyId, auth.nonce, auth.timestampMs + settings.maxClockSkewMs + 1000);
    if (!fresh) return this.#refuse(ctx, 'permission_denied', 'agent request replayed (nonce already used)', who);
  }

  /**
   * Refuses a call for a failed security check: a security event with the
   * stable fields (README), counted, then the error.
   */
  #refuse(ctx: CallContext, code: 'unauthenticated' | 'permission_denied' | 'bad_signature', message: string, who: { keyId?: Uint8Array; agent?: string } = {}): never {
    this.securityEvent(ctx, code, message, who);
    throw new RpcError(code, message);
  }

  /**
   * Logs a refused security check as a security event with the stable fields (README) and counts it in
   * `parley_registry_auth_refusals_total{code}`; the caller refuses the call. Also used outside
   * authorisation: a rate-limited key rotation, a revocation watch over its bound.
   */
  securityEvent(ctx: Pick<CallContext, 'method' | 'peer'>, code: string, message: string, who: { keyId?: Uint8Array; agent?: string } = {}): void {
    this.#o.metrics.authRefusals.inc({ code });
    this.#o.logger.warn(
      {
        event: 'security',
        stage: `registry.${ctx.method.name}`,
        code,
        agent: who.agent,
        key_id: who.keyId === undefined ? undefined : toHex(who.keyId),
        remote: ctx.peer,
        detail: message,
      },
      'security event',
    );
  }

  /** Checks an agent's signature over `message` (a proof of possession, a rotation authorisation). @throws RpcError `malformed`, `bad_signature` (a security event) */
  verifyAgentSignature(ctx: CallContext, signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array, what: string, agent: string): void {
    requireBytes(signature, 64, what);
    if (!this.#o.crypto.ed25519.verify(signature, message, publicKey)) this.#refuse(ctx, 'bad_signature', `${what} does not verify`, { agent, keyId: computeKeyId(this.#o.crypto, publicKey) });
  }
}
