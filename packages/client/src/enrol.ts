/**
 * Enrolment with a join token (docs/PROTOCOL.md §15.11): the agent generates
 * its identity key on its own machine, proves possession of it over the token,
 * the registry id, its agent id and a timestamp, and receives its first
 * certificate. The private key never leaves the process that calls
 * {@link enroll}; an operator only ever handled the one-time token.
 */
import { credentials as grpcCredentials } from '@grpc/grpc-js';
import { createCrypto, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { verifyCertificate, type TrustBundle, type VerifiedCertificate } from '@parley/identity';
import { RegistryService, type AgentCertificate } from '@parley/proto';
import { enrolmentLayout, joinTokenHash, parseJoinToken } from '@parley/protocol';
import { createClient, isLoopbackAddress } from '@parley/rpc';
import type { LocalIdentity } from '@parley/session';
import { ClientError } from './errors.js';

/** Settings of {@link enroll}. */
export interface EnrolOptions {
  /** `host:port` of the registry. */
  readonly registry: string;
  /** PEM CA certificates of the registry's TLS certificate (required unless the registry is on loopback: the token is a bearer secret). */
  readonly rootCerts?: Buffer;
  /** The join token an operator created (`parley-registry join-token create`), text form `pjt1.…`. */
  readonly token: string;
  /** The agent id the token was created for. */
  readonly agentId: string;
  /** The identity key to enrol; default: a new one generated here. */
  readonly keyPair?: Ed25519KeyPair;
  /**
   * The pinned trust bundle: the certificate the registry returns must verify under it. Strongly
   * recommended; without it the certificate is only checked to name this agent and key.
   */
  readonly trustBundle?: TrustBundle;
  /** Deadline of each call, ms. Default 10 000. */
  readonly timeoutMs?: number;
  readonly crypto?: ParleyCrypto;
}

/** An enrolled agent: everything {@link connect} needs as `identity`, and the key to keep. */
export interface Enrolment {
  /** The agent's identity for `connect({ identity })`. */
  readonly identity: LocalIdentity;
  /** The key pair (keep its secret in a 0600 file or a secret store; it was never sent anywhere). */
  readonly keyPair: Ed25519KeyPair;
  readonly certificate: AgentCertificate;
  /** The registry's id. */
  readonly registryId: Uint8Array;
  /** The verified certificate, when a trust bundle was given. */
  readonly verified?: VerifiedCertificate;
}

/**
 * Enrols this agent with a join token: generates (or takes) its identity key, signs the §15.11 enrolment
 * layout with it, and registers. The token is single use: after a success (or a `join_token_used`) ask an
 * operator for a new one to enrol again.
 *
 * @returns the identity, key pair and certificate
 * @throws ClientError `malformed` (token text, options), `join_token_invalid` / `join_token_used` /
 *   `join_token_expired` (the token), `stale_timestamp` / `future_timestamp` (this machine's clock),
 *   `already_exists` (agent id or key registered), `unavailable`, or a certificate check's code
 *   (`unknown_issuer`, `bad_certificate`, `identity_mismatch`) when the registry's answer does not verify
 * @example
 * const { identity, keyPair } = await enroll({ registry: 'registry.internal:50051', rootCerts, token, agentId: 'worker-7', trustBundle });
 */
export async function enroll(options: EnrolOptions): Promise<Enrolment> {
  const crypto = options.crypto ?? (await createCrypto());
  if (options.rootCerts === undefined && !isLoopbackAddress(options.registry)) {
    throw new ClientError('malformed', `refusing to send a join token in plaintext to ${options.registry}: give rootCerts (plaintext is for loopback registries only)`);
  }
  let token: { tokenId: Uint8Array; tokenSecret: Uint8Array };
  try {
    token = parseJoinToken(options.token);
  } catch (error) {
    throw ClientError.from(error);
  }
  const keyPair = options.keyPair ?? crypto.ed25519.generateKeyPair();
  const client = createClient(RegistryService, options.registry, options.rootCerts === undefined ? grpcCredentials.createInsecure() : grpcCredentials.createSsl(options.rootCerts), {
    defaultTimeoutMs: options.timeoutMs ?? 10_000,
  });
  try {
    const { registryId } = await client.getTrustBundle({});
    const timestampMs = BigInt(Date.now());
    const proof = enrolmentLayout({
      registryId,
      tokenId: token.tokenId,
      tokenHash: joinTokenHash(crypto, token.tokenId, token.tokenSecret),
      agentId: options.agentId,
      identityPublicKey: keyPair.publicKey,
      timestampMs,
    });
    const { agent } = await client.enrollAgent({
      tokenId: token.tokenId,
      tokenSecret: token.tokenSecret,
      agentId: options.agentId,
      identityPublicKey: keyPair.publicKey,
      timestampMs,
      proofSignature: crypto.ed25519.sign(proof, keyPair.secretKey),
    });
    const certificate = agent?.certificate;
    if (certificate === undefined) throw new ClientError('internal', 'the registry returned no certificate');
    if (certificate.agentId !== options.agentId || !crypto.constantTimeEqual(certificate.identityPublicKey, keyPair.publicKey)) {
      throw new ClientError('identity_mismatch', 'the registry returned a certificate for another agent or key');
    }
    const verified = options.trustBundle === undefined ? undefined : verifyCertificate(crypto, certificate, { trustBundle: options.trustBundle, nowMs: Date.now(), expectedAgentId: options.agentId });
    return {
      identity: { agentId: options.agentId, signingKey: keyPair.secretKey, certificate },
      keyPair,
      certificate,
      registryId,
      ...(verified === undefined ? {} : { verified }),
    };
  } catch (error) {
    throw ClientError.from(error);
  } finally {
    client.close();
  }
}
