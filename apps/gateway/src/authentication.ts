/**
 * Stream authentication (docs/PROTOCOL.md §10.2): hello → challenge → auth,
 * which yields a Link; and the re-checks of live Links' certificates
 * (revocation, expiry), which close a stream whose certificate no longer
 * verifies with GoAway.
 */
import { verifyCertificate, type VerifiedCertificate } from '@parley/identity';
import type { AgentCertificate, ConnectRequest } from '@parley/proto';
import { RpcError, type ResponseSink } from '@parley/rpc';
import { isAgentId } from '@parley/session';
import type { ConnectResponseInit, GatewayContext, Link, SecuritySubject } from './context.js';
import { CHALLENGE_NONCE_BYTES, SIGNATURE_BYTES, gatewayAuthLayout } from '@parley/protocol';

/**
 * hello → challenge → auth (§10.2); the caller makes the Link and sends welcome.
 * @returns the verified certificate, the certificate as presented (for the agent directory; the Link keeps
 *   only the verified view, so a connected agent does not hold its decoded certificate too) and whether the
 *   agent reads Deliveries frames (Hello.delivery_batches), or undefined
 *   when the stream ended first
 * @throws RpcError with the code of the failed check (already logged as a security event)
 */
export async function authenticate(
  ctx: GatewayContext,
  it: AsyncIterator<ConnectRequest>,
  out: ResponseSink<ConnectResponseInit>,
  remote: string,
): Promise<{ cert: VerifiedCertificate; certificate: AgentCertificate; deliveryBatches: boolean } | undefined> {
  const claimed: { agent?: string; identityKey?: Uint8Array; serial?: Uint8Array } = {};
  const refuse = (code: RpcError['code'], message: string): never => {
    ctx.metrics.authRefusals.inc({ code });
    ctx.security('connect', code, { remote, ...claimed }, message);
    throw new RpcError(code, message);
  };
  const first = await it.next();
  if (first.done === true || out.closed) return undefined;
  const hello = first.value.kind;
  if (hello.case !== 'hello') return refuse('unauthenticated', 'the first frame must be hello');
  if (hello.value.version !== 1) return refuse('unsupported_version', `hello version ${hello.value.version} is not supported`);
  if (hello.value.certificate === undefined) return refuse('malformed', 'hello carries no certificate');
  const presented = hello.value.certificate;
  // What the certificate claims, for the security log (checked below; logged as ids only).
  if (isAgentId(presented.agentId)) claimed.agent = presented.agentId;
  if (presented.identityPublicKey.length === 32) claimed.identityKey = presented.identityPublicKey;
  if (presented.serial.length === 16) claimed.serial = presented.serial;
  let cert: VerifiedCertificate;
  try {
    cert = verifyCertificate(ctx.crypto, hello.value.certificate, {
      trustBundle: ctx.trustBundle,
      nowMs: ctx.clock(),
      revocations: ctx.revocations,
    });
  } catch (error) {
    const e = RpcError.from(error);
    return refuse(e.code, e.details);
  }
  const nonce = ctx.crypto.randomBytes(CHALLENGE_NONCE_BYTES);
  out.push({ kind: { case: 'challenge', value: { gatewayId: ctx.gatewayId, nonce, serverTimeMs: BigInt(ctx.clock()) } } });

  const second = await it.next();
  if (second.done === true || out.closed) return undefined;
  const auth = second.value.kind;
  if (auth.case !== 'auth') return refuse('unauthenticated', 'the second frame must be auth');
  const signed = gatewayAuthLayout(ctx.gatewayId, nonce, cert.agentId, cert.serial);
  if (auth.value.signature.length !== SIGNATURE_BYTES || !ctx.crypto.ed25519.verify(auth.value.signature, signed, cert.identityPublicKey)) {
    return refuse('bad_signature', 'auth proof does not verify');
  }
  return { cert, certificate: hello.value.certificate, deliveryBatches: hello.value.deliveryBatches };
}

/**
 * Closes, with GoAway `revoked`, every live stream of a revoked agent id or
 * certificate serial.
 * @returns how many streams were closed
 */
export function closeRevokedLinks(ctx: GatewayContext, subject: { readonly agentId: string } | { readonly serial: Uint8Array }): number {
  let closed = 0;
  for (const link of [...ctx.links.values()]) {
    const hit = 'agentId' in subject ? link.cert.agentId === subject.agentId : ctx.crypto.constantTimeEqual(link.cert.serial, subject.serial);
    if (hit) {
      ctx.security('revocation', 'revoked', linkSubject(link), 'certificate revoked while connected');
      ctx.goAway(link, 'revoked', 'certificate revoked');
      closed++;
    }
  }
  return closed;
}

/**
 * What each go-away says. `revocation_stale` is about the GATEWAY's copy of the
 * revocation list (its registry feed is behind), not the agent's certificate:
 * the agent should reconnect later (§10.7).
 */
const GO_AWAY_MESSAGES: Partial<Record<RpcError['code'], string>> = {
  revoked: 'certificate revoked',
  expired: 'certificate expired',
  unknown_issuer: 'certificate issuer no longer trusted',
  revocation_stale: "the gateway's copy of the revocation list is stale (its registry is unreachable); reconnect later",
  internal: 'gateway could not re-check the certificate; reconnect later',
};

/**
 * Re-checks every live stream's certificate (expiry, its issuer still in the trust bundle and within its
 * not_after_ms — a retired issuer key past its grace period, §15.9 —, revocation) at `now`; closes those
 * no longer valid.
 */
export function recheckLinks(ctx: GatewayContext, now: number): void {
  for (const link of [...ctx.links.values()]) {
    let code: RpcError['code'] | undefined;
    try {
      const issuer = ctx.trustBundle.get(link.cert.issuerKeyId);
      if (now >= link.cert.validUntilMs) code = 'expired';
      else if (issuer === undefined) code = 'unknown_issuer';
      else if (issuer.notAfterMs !== undefined && now >= issuer.notAfterMs) code = 'expired';
      else if (ctx.revocations.check({ agentId: link.cert.agentId, serial: link.cert.serial }, now).revoked) code = 'revoked';
    } catch (error) {
      code = RpcError.from(error).code === 'revocation_stale' ? 'revocation_stale' : 'internal';
    }
    if (code !== undefined) {
      ctx.security('revocation', code, linkSubject(link), 'live stream certificate no longer valid');
      ctx.goAway(link, code, GO_AWAY_MESSAGES[code] ?? 'certificate no longer valid');
    }
  }
}

/** A live stream's agent, for the security log. */
export function linkSubject(link: Link): SecuritySubject {
  return { agent: link.cert.agentId, identityKey: link.cert.identityPublicKey, serial: link.cert.serial, remote: link.remote };
}
