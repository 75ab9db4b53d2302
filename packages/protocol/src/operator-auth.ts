/**
 * Operator request signatures (docs/PROTOCOL.md §15.3): how an operator's
 * Ed25519 key authorises a state-changing registry call. The signature covers
 * an explicit layout — the registry, the method, a BLAKE3 digest of the exact
 * request bytes, a timestamp, a random nonce and the signer's key id — and
 * travels in four ASCII metadata entries beside the request:
 *
 *   layout('parley/v1/operator-request')
 *     .fixed(registry_id, 16)
 *     .str(method_path)                  // "/parley.v1.RegistryService/RevokeAgent"
 *     .fixed(BLAKE3(request_bytes), 32)
 *     .i64(timestamp_ms)
 *     .fixed(nonce, 16)
 *     .fixed(operator_key_id, 16)        // §3.1 key id of the operator's public key
 *
 * The server checks, in order: the key id is a listed operator, the
 * signature, the timestamp within the allowed skew, and that the nonce was
 * never seen (nonces are persisted, so a replay fails after a restart too).
 */
import { fromBase64Url, fromHex, layout, toBase64Url, toHex, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { REGISTRY_ID_BYTES, keyId as computeKeyId } from '@parley/identity';
import { asMalformed, assertCrypto, assertTarget, check, verifying } from './assert.js';
import { ProtocolError } from './errors.js';

/** Domain tag of the operator request layout. */
export const OPERATOR_REQUEST_DOMAIN = 'parley/v1/operator-request';
/** Length of an operator request nonce. */
export const OPERATOR_NONCE_BYTES = 16;

/**
 * Signs one outgoing call: given the gRPC method path and the exact request
 * bytes, the metadata entries to send with it (the shape of `@parley/rpc`'s
 * `RequestSigner`, which `createClient` accepts).
 */
export type OperatorRequestSigner = (path: string, requestBytes: Uint8Array) => Readonly<Record<string, string>>;

/** Metadata keys of a signed operator request (all ASCII values). */
export const OPERATOR_METADATA_KEYS = Object.freeze({
  /** 32 lowercase hex digits: the operator's key id. */
  keyId: 'parley-operator-key-id',
  /** Decimal milliseconds since the Unix epoch. */
  timestamp: 'parley-operator-timestamp-ms',
  /** 32 lowercase hex digits: 16 random bytes. */
  nonce: 'parley-operator-nonce',
  /** Unpadded base64url of the 64-byte Ed25519 signature. */
  signature: 'parley-operator-signature',
} as const);

/** An operator's signing key. */
export interface OperatorKey {
  /** 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The Ed25519 secret key. */
  readonly secretKey: SecretKey;
}

/** The fields of one operator request signature, as parsed from metadata. */
export interface OperatorRequestAuth {
  readonly keyId: Uint8Array;
  readonly timestampMs: number;
  readonly nonce: Uint8Array;
  readonly signature: Uint8Array;
}

/** What a signature is over, besides its own fields. */
export interface OperatorRequestTarget {
  /** 16-byte registry id (GetTrustBundle returns it). */
  readonly registryId: Uint8Array;
  /** gRPC method path, `/parley.v1.RegistryService/<Method>`. */
  readonly path: string;
  /** The exact request bytes sent. */
  readonly body: Uint8Array;
}

/**
 * The signed bytes of an operator request.
 * @param crypto the ParleyCrypto instance (BLAKE3)
 * @param target registry id, method path and request bytes
 * @param auth key id, timestamp and nonce (the signature is not part of it)
 * @returns the layout bytes
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function operatorRequestLayout(
  crypto: ParleyCrypto,
  target: OperatorRequestTarget,
  auth: Omit<OperatorRequestAuth, 'signature'>,
): Uint8Array {
  assertCrypto(crypto);
  const t = assertTarget(target);
  const a = check.object(auth, 'auth') as unknown as Omit<OperatorRequestAuth, 'signature'>;
  return asMalformed('operator request', () =>
    layout(OPERATOR_REQUEST_DOMAIN)
      .fixed(t.registryId, REGISTRY_ID_BYTES, 'registryId')
      .str(t.path)
      .fixed(crypto.blake3(t.body), 32, 'bodyDigest')
      .i64(a.timestampMs)
      .fixed(a.nonce, OPERATOR_NONCE_BYTES, 'nonce')
      .fixed(a.keyId, 16, 'keyId')
      .bytes(),
  );
}

/** Asserts an operator's key: a 32-byte public key and a secret key (whose kind the signature checks). */
function assertOperatorKey(key: unknown): OperatorKey {
  const k = check.object(key, 'key');
  check.bytes(k['publicKey'], 'key.publicKey', 32);
  check.object(k['secretKey'], 'key.secretKey');
  return key as OperatorKey;
}

/**
 * Signs one request: returns the metadata entries to send with it.
 *
 * @param crypto the ParleyCrypto instance
 * @param key the operator's key
 * @param target registry id, method path and the exact request bytes
 * @param nowMs the timestamp to sign (default: now)
 * @returns metadata key → value
 * @throws ProtocolError `malformed` (any argument); CryptoError `key_wiped` for a wiped key
 * @example
 * const headers = signOperatorRequest(crypto, operator, { registryId, path, body });
 */
export function signOperatorRequest(
  crypto: ParleyCrypto,
  key: OperatorKey,
  target: OperatorRequestTarget,
  nowMs: number = Date.now(),
): Record<string, string> {
  assertCrypto(crypto, ['randomBytes']);
  assertOperatorKey(key);
  assertTarget(target);
  check.safeInt(nowMs, 'nowMs');
  const auth = { keyId: asMalformed('operator key', () => computeKeyId(crypto, key.publicKey)), timestampMs: nowMs, nonce: crypto.randomBytes(OPERATOR_NONCE_BYTES) };
  const signed = operatorRequestLayout(crypto, target, auth);
  const signature = asMalformed('operator signature', () => crypto.ed25519.sign(signed, key.secretKey));
  return {
    [OPERATOR_METADATA_KEYS.keyId]: toHex(auth.keyId),
    [OPERATOR_METADATA_KEYS.timestamp]: String(auth.timestampMs),
    [OPERATOR_METADATA_KEYS.nonce]: toHex(auth.nonce),
    [OPERATOR_METADATA_KEYS.signature]: toBase64Url(signature),
  };
}

/**
 * A request signer for `@parley/rpc`'s `createClient` that signs every call.
 * @param crypto the ParleyCrypto instance
 * @param key the operator's key
 * @param registryId the registry's 16-byte id
 * @returns the signer
 * @throws ProtocolError `malformed` at once for a wrong argument (not at the first call)
 */
export function operatorRequestSigner(crypto: ParleyCrypto, key: OperatorKey, registryId: Uint8Array): OperatorRequestSigner {
  assertCrypto(crypto, ['randomBytes']);
  assertOperatorKey(key);
  check.bytes(registryId, 'registryId', REGISTRY_ID_BYTES);
  return (path, body) => signOperatorRequest(crypto, key, { registryId, path, body });
}

const HEX32 = /^[0-9a-f]{32}$/;
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;

/**
 * Reads the operator signature from request metadata.
 *
 * @param get returns the (first) value of a metadata key, or undefined
 * @returns the parsed fields, or undefined when no operator metadata is present at all
 * @throws ProtocolError `unauthenticated` when some but not all entries are present, or one is malformed;
 *   `malformed` when `get` is not a function
 */
export function parseOperatorMetadata(get: (key: string) => string | undefined): OperatorRequestAuth | undefined {
  check.func(get, 'get');
  const raw = {
    keyId: get(OPERATOR_METADATA_KEYS.keyId),
    timestamp: get(OPERATOR_METADATA_KEYS.timestamp),
    nonce: get(OPERATOR_METADATA_KEYS.nonce),
    signature: get(OPERATOR_METADATA_KEYS.signature),
  };
  const present = Object.values(raw).filter((v) => v !== undefined).length;
  if (present === 0) return undefined;
  const bad = (what: string): never => {
    throw new ProtocolError('unauthenticated', `operator signature metadata: ${what}`);
  };
  if (present !== 4) bad(`all of ${Object.values(OPERATOR_METADATA_KEYS).join(', ')} are required`);
  if (Object.values(raw).some((v) => typeof v !== 'string')) bad('every entry must be text');
  if (!HEX32.test(raw.keyId!)) bad(`${OPERATOR_METADATA_KEYS.keyId} must be 32 lowercase hex digits`);
  if (!DECIMAL.test(raw.timestamp!)) bad(`${OPERATOR_METADATA_KEYS.timestamp} must be decimal milliseconds`);
  if (!HEX32.test(raw.nonce!)) bad(`${OPERATOR_METADATA_KEYS.nonce} must be 32 lowercase hex digits`);
  let signature: Uint8Array | undefined;
  try {
    signature = fromBase64Url(raw.signature!);
  } catch {
    bad(`${OPERATOR_METADATA_KEYS.signature} must be unpadded base64url`);
  }
  if (signature!.length !== 64) bad(`${OPERATOR_METADATA_KEYS.signature} must encode 64 bytes`);
  const timestampMs = Number(raw.timestamp);
  if (!Number.isSafeInteger(timestampMs)) bad(`${OPERATOR_METADATA_KEYS.timestamp} is out of range`);
  return { keyId: fromHex(raw.keyId!), timestampMs, nonce: fromHex(raw.nonce!), signature: signature! };
}

/**
 * Checks an operator request signature against a listed operator's key.
 * @param crypto the ParleyCrypto instance
 * @param publicKey the operator's 32-byte public key (looked up by `auth.keyId`)
 * @param auth the parsed metadata
 * @param target registry id, method path and the exact request bytes received
 * @returns true only for a valid signature; false on any malformed input
 */
export function verifyOperatorRequest(crypto: ParleyCrypto, publicKey: Uint8Array, auth: OperatorRequestAuth, target: OperatorRequestTarget): boolean {
  return verifying(() => crypto.ed25519.verify(check.object(auth, 'auth')['signature'] as Uint8Array, operatorRequestLayout(crypto, target, auth), publicKey));
}
