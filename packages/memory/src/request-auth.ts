/**
 * Per-request signatures of MemoryService calls (docs/PROTOCOL.md §18.8), in
 * the style of the operator signatures of §15.3: the caller signs the
 * request layout (the store's name, the method, BLAKE3 of the exact request
 * bytes, a timestamp, a single-use nonce, its agent id and certificate serial)
 * with its identity key; certificate, timestamp, nonce and signature travel in
 * four ASCII metadata entries beside the request.
 */
import { fromBase64Url, fromHex, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { decodeCertificate, encodeCertificate } from '@parley/identity';
import type { AgentCertificate } from '@parley/proto';
import type { RequestSigner } from '@parley/rpc';
import { fail } from './errors.js';
import { REQUEST_NONCE_BYTES, memoryRequestLayout } from './layouts.js';
import type { Signer } from './records.js';

/** Metadata keys of a signed memory request (all ASCII values). */
export const MEMORY_METADATA_KEYS = Object.freeze({
  /** Unpadded base64url of the caller's AgentCertificate (protobuf, at most 4096 bytes). */
  certificate: 'parley-memory-certificate',
  /** Decimal milliseconds since the Unix epoch. */
  timestamp: 'parley-memory-timestamp-ms',
  /** 32 lowercase hex digits: 16 random bytes. */
  nonce: 'parley-memory-nonce',
  /** Unpadded base64url of the 64-byte Ed25519 signature. */
  signature: 'parley-memory-signature',
} as const);

/** The fields of one request signature, as parsed from metadata. */
export interface MemoryRequestAuth {
  readonly certificate: AgentCertificate;
  readonly timestampMs: number;
  readonly nonce: Uint8Array;
  readonly signature: Uint8Array;
}

/** The identity a client signs with: a Signer with its certificate (a session `LocalIdentity` fits). */
export interface MemoryIdentity extends Signer {
  readonly certificate: AgentCertificate;
}

/**
 * Signs one request: the metadata entries to send with it.
 * @param nowMs the timestamp to sign
 */
export function signMemoryRequest(
  crypto: ParleyCrypto,
  identity: MemoryIdentity,
  target: { readonly serviceId: string; readonly path: string; readonly body: Uint8Array },
  nowMs: number,
): Record<string, string> {
  const nonce = crypto.randomBytes(REQUEST_NONCE_BYTES);
  const signed = memoryRequestLayout(crypto, target, { timestampMs: nowMs, nonce, agentId: identity.agentId, serial: identity.certificate.serial });
  return {
    [MEMORY_METADATA_KEYS.certificate]: toBase64Url(encodeCertificate(identity.certificate)),
    [MEMORY_METADATA_KEYS.timestamp]: String(nowMs),
    [MEMORY_METADATA_KEYS.nonce]: toHex(nonce),
    [MEMORY_METADATA_KEYS.signature]: toBase64Url(crypto.ed25519.sign(signed, identity.signingKey)),
  };
}

/** A {@link RequestSigner} for `createClient` that signs every call for one store. */
export function memoryRequestSigner(crypto: ParleyCrypto, identity: MemoryIdentity, serviceId: string, clock: () => number = Date.now): RequestSigner {
  return (path, body) => signMemoryRequest(crypto, identity, { serviceId, path, body }, clock());
}

const HEX32 = /^[0-9a-f]{32}$/;
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;
const B64URL = /^[A-Za-z0-9_-]+$/;
/** Longest certificate entry: base64url of 4096 bytes. */
const MAX_CERTIFICATE_CHARS = Math.ceil((4096 * 4) / 3);

/**
 * Reads the request signature from metadata; checks only the encodings.
 * @param get the first value of a metadata key, or undefined
 * @throws MemoryError `unauthenticated` when an entry is missing or malformed
 */
export function parseMemoryMetadata(get: (key: string) => string | undefined): MemoryRequestAuth {
  const bad = (what: string): never => fail('unauthenticated', `memory request signature: ${what}`);
  const certificate = get(MEMORY_METADATA_KEYS.certificate);
  const timestamp = get(MEMORY_METADATA_KEYS.timestamp);
  const nonce = get(MEMORY_METADATA_KEYS.nonce);
  const signature = get(MEMORY_METADATA_KEYS.signature);
  if (certificate === undefined || timestamp === undefined || nonce === undefined || signature === undefined) {
    bad(`all of ${Object.values(MEMORY_METADATA_KEYS).join(', ')} are required`);
  }
  if (certificate!.length > MAX_CERTIFICATE_CHARS || !B64URL.test(certificate!)) bad(`${MEMORY_METADATA_KEYS.certificate} must be base64url of at most 4096 bytes`);
  if (!DECIMAL.test(timestamp!) || !Number.isSafeInteger(Number(timestamp))) bad(`${MEMORY_METADATA_KEYS.timestamp} must be decimal milliseconds`);
  if (!HEX32.test(nonce!)) bad(`${MEMORY_METADATA_KEYS.nonce} must be 32 lowercase hex digits`);
  let cert: AgentCertificate | undefined;
  let sig: Uint8Array | undefined;
  try {
    cert = decodeCertificate(fromBase64Url(certificate!));
    sig = fromBase64Url(signature!);
  } catch {
    bad('certificate or signature does not decode');
  }
  if (sig!.length !== 64) bad(`${MEMORY_METADATA_KEYS.signature} must encode 64 bytes`);
  return { certificate: cert!, timestampMs: Number(timestamp), nonce: fromHex(nonce!), signature: sig! };
}

/**
 * Checks a request signature under a (verified) certificate's identity key.
 * @returns true only for a valid signature; false on any malformed input
 */
export function verifyMemoryRequest(
  crypto: ParleyCrypto,
  auth: MemoryRequestAuth,
  target: { readonly serviceId: string; readonly path: string; readonly body: Uint8Array },
  certified: { readonly agentId: string; readonly identityPublicKey: Uint8Array; readonly serial: Uint8Array },
): boolean {
  try {
    const signed = memoryRequestLayout(crypto, target, { timestampMs: auth.timestampMs, nonce: auth.nonce, agentId: certified.agentId, serial: certified.serial });
    return crypto.ed25519.verify(auth.signature, signed, certified.identityPublicKey);
  } catch {
    return false;
  }
}
