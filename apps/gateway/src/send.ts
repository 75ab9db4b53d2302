/**
 * Unary Send (docs/PROTOCOL.md §10.6): one item from an agent without a
 * stream, authenticated by its certificate and a signature over the send
 * layout (gateway id, timestamp, nonce, item digest), with a timestamp window
 * and single-use nonces kept in the database (`gateway_send_nonces`), so a
 * captured request does not replay after a restart or on another instance
 * sharing the database; then routed like a stream's item (./routing.ts), with
 * its `recipient_certificate` for a first contact.
 */
import { toHex } from '@parley/crypto-core';
import { verifyCertificate, type VerifiedCertificate } from '@parley/identity';
import type { SendRequest, SendResponseSchema, MessageInitShape } from '@parley/proto';
import { RpcError, requestBytesOf, type CallContext } from '@parley/rpc';
import { isAgentId } from '@parley/session';
import type { GatewayContext, SecuritySubject, Sender } from './context.js';
import { SEND_NONCE_BYTES, SIGNATURE_BYTES, gatewaySendLayout, itemDigest, type RelayItem } from '@parley/protocol';
import { assertItemShape, type Router } from './routing.js';

type SendResponseInit = MessageInitShape<typeof SendResponseSchema>;

/** The unary Send handler. */
export class UnarySend {
  readonly #ctx: GatewayContext;
  readonly #router: Router;
  /** Allowed clock skew of a Send timestamp, ms. */
  readonly #maxClockSkewMs: number;

  constructor(ctx: GatewayContext, router: Router, maxClockSkewMs: number) {
    this.#ctx = ctx;
    this.#router = router;
    this.#maxClockSkewMs = maxClockSkewMs;
  }

  /** Unary Send (§10.6): one item, authenticated by a signature over the send layout. */
  async send(request: SendRequest, call: CallContext): Promise<SendResponseInit> {
    const ctx = this.#ctx;
    if (ctx.closing) throw new RpcError('unavailable', 'gateway is shutting down');
    const remote = call.peer;
    const claimed: SecuritySubject = { remote };
    const refuse = (code: RpcError['code'], message: string): never => {
      ctx.security('send', code, claimed, message);
      ctx.metrics.rejected.inc({ code });
      throw new RpcError(code, message);
    };
    if (request.certificate === undefined) return refuse('malformed', 'send carries no certificate');
    // What the certificate claims, for the security log (ids only; checked below).
    if (isAgentId(request.certificate.agentId)) claimed.agent = request.certificate.agentId;
    if (request.certificate.identityPublicKey.length === 32) claimed.identityKey = request.certificate.identityPublicKey;
    if (request.certificate.serial.length === 16) claimed.serial = request.certificate.serial;
    if (request.nonce.length !== SEND_NONCE_BYTES) return refuse('malformed', `nonce must be ${SEND_NONCE_BYTES} bytes`);
    if (request.signature.length !== SIGNATURE_BYTES) return refuse('malformed', `signature must be ${SIGNATURE_BYTES} bytes`);
    const now = ctx.clock();
    let cert: VerifiedCertificate;
    try {
      cert = verifyCertificate(ctx.crypto, request.certificate, { trustBundle: ctx.trustBundle, nowMs: now, revocations: ctx.revocations });
    } catch (error) {
      const e = RpcError.from(error);
      return refuse(e.code, e.details);
    }
    const agent = cert.agentId;
    const skew = this.#maxClockSkewMs;
    const ts = request.timestampMs;
    if (ts < BigInt(now - skew)) return refuse('stale_timestamp', 'send timestamp too old');
    if (ts > BigInt(now + skew)) return refuse('future_timestamp', 'send timestamp in the future');
    let item: RelayItem;
    try {
      item = assertItemShape(request.item);
    } catch (error) {
      const e = RpcError.from(error);
      return refuse(e.code, e.details);
    }
    const signed = gatewaySendLayout(ctx.gatewayId, ts, request.nonce, itemDigest(ctx.crypto, item));
    if (!ctx.crypto.ed25519.verify(request.signature, signed, cert.identityPublicKey)) return refuse('bad_signature', 'send signature does not verify');
    // Recorded only after the signature verifies and within the agent's Send rate (a row each, kept until the
    // timestamp is outside the window; then the timestamp check refuses a replay). The sweep deletes expired nonces.
    if (!this.#router.takeUnarySend(agent)) return refuse('rate_limited', 'too many unary sends');
    let fresh: boolean;
    try {
      // Kept a skew longer than this instance would accept its timestamp: another instance sharing the database (and
      // sweeping it by its own clock) whose clock is behind by up to the skew still finds it.
      fresh = await ctx.track(ctx.mailbox.useSendNonce(agent, request.nonce, Number(ts) + 2 * skew + 1000));
    } catch (error) {
      ctx.log.error({ err: error, agent }, 'send nonce write failed');
      return refuse('unavailable', 'gateway storage unavailable');
    }
    if (!fresh) return refuse('replay', `send nonce ${toHex(request.nonce)} already used`);
    const size = requestBytesOf(request)?.length ?? call.requestBytes.length;
    const sender: Sender = { cert, remote };
    // `recipient_certificate` is not covered by the signature: a certificate is verified against its issuer,
    // whoever attaches it, and only when the gateway holds no certificate of the recipient (./routing.ts).
    return ctx.track(this.#router.route(sender, request.item, size, { stage: 'send' }, request.recipientCertificate));
  }
}
