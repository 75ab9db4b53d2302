/**
 * A first contact with an agent the gateway has never seen (docs/PROTOCOL.md §10.3, §17.2 item 6). The gateway
 * routes by the certificates of agents it has seen, and refuses a step 1 to any other id `policy_denied`. Lazily,
 * so that the usual path costs nothing: only when a step 1 that carried no recipient certificate is refused
 * `policy_denied`, and only with `registry`, the agent looks the recipient up in its registry (`GetAgent`, signed as
 * this agent, §15.3), verifies the certificate it gets against the trust bundle (and the revocation data) it uses
 * now — the agent id must be the recipient's —, and relays the SAME step 1 again (the same frame: a responder drops
 * copies of a step 1 whose session it holds) with `recipient_certificate` attached. The gateway verifies it again,
 * applies its policy with it and stores the step 1 for the offline recipient (`QUEUED`); the handshake then waits as
 * for any offline recipient (§5.4), and its step 1 resends carry the same certificate.
 *
 * What a failure means for the sends waiting on that handshake (§17.2 item 6): refused `policy_denied` again with
 * the certificate attached — the route is denied (permanent); the registry has no such agent, or lists it revoked
 * or expired, or returns a certificate that does not verify — `policy_denied` (permanent) with a message naming
 * the cause (a certificate that does not verify is also a `security` event with stage `directory`); the registry
 * unreachable, unavailable, rate limiting, or this agent's revocation data stale — `unavailable` (or that
 * code): retried on the outbox's backoff until the sends expire.
 *
 * Bounded: one lookup in flight per peer (concurrent handshakes and resends share it), at most
 * {@link MAX_LOOKUPS_IN_FLIGHT} at once; verified certificates cached for {@link CACHE_TTL_MS} for at most
 * {@link MAX_CACHED_PEERS} peers; certificates bound to step 1 frames for at most as many handshakes. Both are
 * dropped only when the gateway refuses the certificate itself ({@link CERTIFICATE_REFUSALS}); a transient answer
 * (a reconnect, a timeout, rate limiting, the gateway's revocation data stale, …) keeps them, so the retries and
 * resends it causes read no registry. The handshake's timeout is held while its step 1 waits for the lookup
 * ({@link HoldHandshake}): the time it gives the gateway and the peer is not spent on the registry.
 */
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, isIdentityError, verifyCertificate, type IdentityErrorCode, type RevocationChecker, type TrustBundle } from '@parley/identity';
import { AgentStatus, type Accepted, type AgentCertificate, type GetAgentResponse, type HandshakeFrame } from '@parley/proto';
import { ClientError, type ClientErrorCode } from './errors.js';

/** Most peers whose verified registry certificate is kept. */
export const MAX_CACHED_PEERS = 256;
/** How long a verified registry certificate is used without asking the registry again. */
export const CACHE_TTL_MS = 5 * 60_000;
/** Most registry lookups in flight at once (under the registry's burst of 100 agent reads, §15.3). */
export const MAX_LOOKUPS_IN_FLIGHT = 64;

/** Registry answers that asking again will not change: the lookup fails for good (`policy_denied`, with the cause). */
const PERMANENT_LOOKUP_FAILURES: ReadonlySet<string> = new Set(['not_found', 'permission_denied', 'unauthenticated', 'unimplemented', 'malformed']);

/**
 * The gateway's refusals of a `recipient_certificate` that speak of the certificate itself (apps/gateway
 * routing.ts, verifyRecipientCertificate — minus `not_yet_valid` and `revocation_stale`, which time or fresher data
 * change): the certificate attached to that step 1, and the cached one, are dropped, so the next attempt asks the
 * registry again (revoked or rotated meanwhile, …). Every other answer — transient (`unavailable`,
 * `deadline_exceeded`, `cancelled`, `rate_limited`, `quota_exceeded`, `not_yet_valid`, `revocation_stale`, …) or
 * about the frame or the route — keeps both: an outbox retry, a reconnect or a step 1 resend reads no registry.
 */
const CERTIFICATE_REFUSALS: ReadonlySet<string> = new Set(['malformed', 'unsupported_version', 'unknown_issuer', 'bad_certificate', 'expired', 'identity_mismatch', 'revoked']);

/**
 * Holds the handshake's timeout while its step 1 waits for the registry lookup (SessionManager.holdHandshake).
 * @returns the release, which says whether the handshake still waits for the frame; `undefined` when it does not
 */
export type HoldHandshake = () => (() => boolean) | undefined;

/** Certificate checks that time or fresher data can change: the lookup is retried (the outbox's backoff). */
const TRANSIENT_CERTIFICATE_FAILURES: ReadonlySet<IdentityErrorCode> = new Set<IdentityErrorCode>(['not_yet_valid', 'revocation_stale']);

/** A certificate the registry returned for a recipient did not verify here (the send fails `policy_denied`). */
export interface DirectorySecurityEvent {
  readonly kind: 'security';
  readonly stage: 'directory';
  readonly code: IdentityErrorCode;
  /** The agent looked up: the recipient of the first contact. */
  readonly peerId: string;
  readonly atMs: number;
  readonly detail: string;
}

/**
 * A first contact's registry lookup failed in a way time can fix (the registry unreachable or unavailable, rate
 * limiting, the agent's revocation data stale, …): the sends to `peerId` wait, unsealed, and the lookup is tried
 * again on their backoff until they expire. One event per failed attempt, so that a program can say why its sends
 * are stuck. `code` is the lookup's (`unavailable`, `rate_limited`, `revocation_stale`, `not_yet_valid`, …).
 */
export interface FirstContactLookupEvent {
  readonly kind: 'first_contact';
  /** The agent looked up: the recipient of the first contact. */
  readonly peerId: string;
  readonly code: ClientErrorCode;
  readonly atMs: number;
  readonly detail: string;
}

/** What the first-contact lookup works with. */
export interface FirstContactDeps {
  readonly crypto: ParleyCrypto;
  /** This agent's id (only its own step 1 frames are handled). */
  readonly agentId: string;
  /**
   * `GetAgent` for one agent id, signed as this agent (§15.3); rejects with the registry's code (an RpcError or
   * ClientError). Undefined without `registry`: a step 1 refused `policy_denied` then fails at once.
   */
  readonly getAgent: ((agentId: string) => Promise<GetAgentResponse>) | undefined;
  /** The trust bundle the agent verifies peers against now. */
  readonly trustBundle: () => TrustBundle;
  /** The agent's revocation data, if any. */
  readonly revocations?: RevocationChecker | undefined;
  /** A returned certificate's issuer is not in the trust bundle: fetch the registry's newest bundle (then verified once more). */
  readonly refreshTrustBundle?: () => Promise<void>;
  readonly emit: (event: DirectorySecurityEvent | FirstContactLookupEvent) => void;
  /** Default Date.now. */
  readonly clock?: () => number;
}

export class FirstContact {
  readonly #deps: FirstContactDeps;
  /** Verified registry certificates by peer id, oldest use first. */
  readonly #cache = new Map<string, { readonly certificate: AgentCertificate; readonly untilMs: number }>();
  /** Lookups in flight by peer id. */
  readonly #lookups = new Map<string, Promise<AgentCertificate>>();
  /** The certificate attached to a step 1, by its session id (hex): its resends carry it too. Oldest first. */
  readonly #attached = new Map<string, AgentCertificate>();

  constructor(deps: FirstContactDeps) {
    this.#deps = deps;
  }

  /** Whether the agent can look recipients up (it was given `registry`). */
  get enabled(): boolean {
    return this.#deps.getAgent !== undefined;
  }

  /**
   * Relays a handshake frame with `send`. A step 1 of this agent refused `policy_denied` without a recipient
   * certificate is relayed once more, the same frame, with the recipient's registry certificate attached; a
   * step 1 that had one attached before (a resend) carries it again.
   * @param send relays the frame once (with the certificate, if any) and waits for the gateway's answer — bounded
   *   by the caller; the registry lookup between two sends is bounded on its own (the registry call's timeout)
   * @param hold holds the handshake's timeout for the lookup's duration (the handshake's time is for the gateway
   *   and the peer, not the registry); its release says whether the handshake still waits for the frame (checked
   *   before relaying it again). Default: nothing held, the handshake always waits.
   * @throws ClientError the gateway's refusal, or the lookup's failure (see the module comment)
   */
  async relay(frame: HandshakeFrame, send: (recipientCertificate: AgentCertificate | undefined) => Promise<Accepted>, hold: HoldHandshake = () => () => true): Promise<Accepted> {
    if (frame.step !== 1 || frame.senderId !== this.#deps.agentId) return send(undefined);
    const sessionIdHex = toHex(frame.sessionId);
    const attached = this.#attached.get(sessionIdHex);
    try {
      return await send(attached);
    } catch (error) {
      const refusal = ClientError.from(error);
      if (refusal.code !== 'policy_denied') {
        if (attached !== undefined) this.#refusedWith(refusal, frame.recipientId, sessionIdHex);
        throw refusal;
      }
      if (attached !== undefined) throw new ClientError('policy_denied', `${detail(refusal)} (refused with '${frame.recipientId}'s registry certificate attached: the gateway's policy denies this route)`, { cause: refusal });
      if (this.#deps.getAgent === undefined) {
        throw new ClientError(
          'policy_denied',
          `${detail(refusal)} (a first contact with an agent this gateway never saw needs this agent's \`registry\` option, so that the recipient's certificate can be looked up and attached; or the recipient must connect to the gateway once)`,
          { cause: refusal },
        );
      }
      // Transient, never the refusal itself: a handshake that ended meanwhile ignores it, and one that did not
      // must not settle its sends `policy_denied` for it.
      const over = (): ClientError => new ClientError('cancelled', `the handshake with '${frame.recipientId}' ended while its certificate was looked up: its step 1 is not relayed again`, { cause: refusal });
      const release = hold();
      if (release === undefined) throw over(); // the handshake gave up already: nothing to look up for
      let certificate: AgentCertificate;
      try {
        certificate = await this.#certificateOf(frame.recipientId, refusal);
      } catch (failure) {
        release();
        throw failure;
      }
      if (!release()) throw over(); // the handshake gave up meanwhile (closed): nothing to relay again
      this.#bind(sessionIdHex, certificate);
      try {
        return await send(certificate);
      } catch (again) {
        const e = ClientError.from(again);
        if (e.code === 'policy_denied') throw new ClientError('policy_denied', `${detail(e)} (refused with '${frame.recipientId}'s registry certificate attached: the gateway's policy denies this route)`, { cause: e });
        this.#refusedWith(e, frame.recipientId, sessionIdHex);
        throw e;
      }
    }
  }

  /**
   * A step 1 that carried the recipient's certificate was refused `code` (not `policy_denied`): the certificate is
   * dropped (attached and cached) only when the gateway refused the certificate itself; on any other answer — a
   * reconnect, a timeout, rate limiting, stale revocation data at the gateway — the next attempt carries it again.
   */
  #refusedWith(refusal: ClientError, peerId: string, sessionIdHex: string): void {
    if (CERTIFICATE_REFUSALS.has(refusal.code)) this.#forget(peerId, sessionIdHex);
  }

  /** A handshake ended (its session established): its step 1 is never resent. */
  handshakeOver(sessionIdHex: string): void {
    this.#attached.delete(sessionIdHex);
  }

  /** The peer's verified registry certificate: cached (and still verifying now), or looked up (one lookup per peer). */
  #certificateOf(peerId: string, refusal: ClientError): Promise<AgentCertificate> {
    const now = this.#now();
    const cached = this.#cache.get(peerId);
    if (cached !== undefined) {
      this.#cache.delete(peerId);
      if (cached.untilMs > now && this.#verifies(cached.certificate, peerId, now)) {
        this.#cache.set(peerId, cached); // most recently used
        return Promise.resolve(cached.certificate);
      }
    }
    const inFlight = this.#lookups.get(peerId);
    if (inFlight !== undefined) return inFlight;
    if (this.#lookups.size >= MAX_LOOKUPS_IN_FLIGHT) {
      return Promise.reject(new ClientError('rate_limited', `${MAX_LOOKUPS_IN_FLIGHT} registry lookups of recipients are in flight: '${peerId}' is looked up later`, { cause: refusal }));
    }
    const lookup = this.#lookUp(peerId, refusal).finally(() => this.#lookups.delete(peerId));
    this.#lookups.set(peerId, lookup);
    return lookup;
  }

  async #lookUp(peerId: string, refusal: ClientError): Promise<AgentCertificate> {
    let response: GetAgentResponse;
    try {
      response = await this.#deps.getAgent!(peerId);
    } catch (error) {
      const e = ClientError.from(error);
      // The gateway's refusal of the step 1 does not say which it was (an id it never saw, or a denied route: the
      // same answer, so that senders cannot probe which ids exist); the registry's answer does.
      if (e.code === 'not_found') {
        throw new ClientError('policy_denied', `no agent '${peerId}': the registry has no agent with that id (the gateway had refused the first contact as it refuses any id it never saw: "${detail(refusal)}")`, { cause: e });
      }
      if (PERMANENT_LOOKUP_FAILURES.has(e.code)) {
        throw new ClientError('policy_denied', `the gateway refused a first contact with '${peerId}' ("${detail(refusal)}"), and the registry refused to look '${peerId}' up: [${e.code}] ${detail(e)}`, { cause: e });
      }
      // Unreachable, unavailable, rate limiting, …: the send's backoff tries again until it expires.
      const code: ClientErrorCode = e.code === 'rate_limited' ? 'rate_limited' : 'unavailable';
      const message = `the gateway refused a first contact with '${peerId}' (an agent it never saw, or a denied route), and the registry lookup of its certificate failed: [${e.code}] ${detail(e)}; tried again while the sends to it wait`;
      this.#deps.emit({ kind: 'first_contact', peerId, code: e.code, atMs: this.#now(), detail: message });
      throw new ClientError(code, message, { cause: e });
    }
    const record = response.agent;
    if (record?.status === AgentStatus.REVOKED) throw new ClientError('policy_denied', `the gateway refused a first contact with '${peerId}', and the registry lists '${peerId}' revoked`, { cause: refusal });
    if (record?.status === AgentStatus.EXPIRED) throw new ClientError('policy_denied', `the gateway refused a first contact with '${peerId}', and the registry lists the certificate of '${peerId}' expired`, { cause: refusal });
    const certificate = record?.certificate;
    if (certificate === undefined) return this.#untrusted(peerId, new IdentityError('malformed', 'the registry returned no certificate'));
    try {
      this.#verify(certificate, peerId, this.#now());
    } catch (error) {
      if (isIdentityError(error, 'unknown_issuer') && this.#deps.refreshTrustBundle !== undefined) {
        // Issued under a key this agent does not trust yet (an issuer rotation it has not polled): fetch, then once more.
        await this.#deps.refreshTrustBundle().catch(() => undefined);
        try {
          this.#verify(certificate, peerId, this.#now());
        } catch (again) {
          return this.#untrusted(peerId, again);
        }
      } else return this.#untrusted(peerId, error);
    }
    this.#remember(peerId, certificate);
    return certificate;
  }

  /** A returned certificate that does not verify: transient for time and stale revocation data, else `policy_denied` and a security event. */
  #untrusted(peerId: string, error: unknown): never {
    const code: IdentityErrorCode = isIdentityError(error) ? error.code : 'malformed';
    const why = error instanceof Error ? detail(error) : String(error);
    if (TRANSIENT_CERTIFICATE_FAILURES.has(code)) {
      const message = `the registry's certificate of '${peerId}' cannot be checked now: ${why}; tried again while the sends to it wait`;
      this.#deps.emit({ kind: 'first_contact', peerId, code: code as ClientErrorCode, atMs: this.#now(), detail: message });
      throw new ClientError(code as ClientErrorCode, message, { cause: error });
    }
    const message = `the certificate the registry returned for '${peerId}' does not verify against this agent's trust bundle: [${code}] ${why}`;
    this.#deps.emit({ kind: 'security', stage: 'directory', code, peerId, atMs: this.#now(), detail: message });
    throw new ClientError('policy_denied', message, { cause: error });
  }

  #verify(certificate: AgentCertificate, peerId: string, nowMs: number): void {
    const revocations = this.#deps.revocations;
    verifyCertificate(this.#deps.crypto, certificate, { trustBundle: this.#deps.trustBundle(), nowMs, expectedAgentId: peerId, ...(revocations === undefined ? {} : { revocations }) });
  }

  #verifies(certificate: AgentCertificate, peerId: string, nowMs: number): boolean {
    try {
      this.#verify(certificate, peerId, nowMs);
      return true;
    } catch {
      return false;
    }
  }

  #remember(peerId: string, certificate: AgentCertificate): void {
    this.#cache.delete(peerId);
    this.#cache.set(peerId, { certificate, untilMs: Math.min(this.#now() + CACHE_TTL_MS, Number(certificate.validUntilMs)) });
    evictOldest(this.#cache, MAX_CACHED_PEERS);
  }

  #bind(sessionIdHex: string, certificate: AgentCertificate): void {
    this.#attached.delete(sessionIdHex);
    this.#attached.set(sessionIdHex, certificate);
    evictOldest(this.#attached, MAX_CACHED_PEERS);
  }

  #forget(peerId: string, sessionIdHex: string): void {
    this.#cache.delete(peerId);
    this.#attached.delete(sessionIdHex);
  }

  #now(): number {
    return (this.#deps.clock ?? Date.now)();
  }
}

/** Drops the oldest entries of `map` beyond `max`. */
function evictOldest(map: Map<string, unknown>, max: number): void {
  while (map.size > max) {
    const oldest = map.keys().next().value;
    if (oldest === undefined) return;
    map.delete(oldest);
  }
}

/** An error's message without its `[code] ` prefix. */
function detail(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && error.message.startsWith(`[${code}] `) ? error.message.slice(code.length + 3) : error.message;
}
