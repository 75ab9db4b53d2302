/**
 * Agent request signatures (docs/PROTOCOL.md §15.3): how a registered agent
 * authenticates a registry directory read (GetAgent, ListAgents) with its
 * identity key, where an operator would use an operator signature. The
 * signature covers the same fields as an operator request under another
 * domain tag, and names the agent and its current certificate's serial
 * instead of an operator key id:
 *
 *   layout('parley/v1/agent-request')
 *     .fixed(registry_id, 16)
 *     .str(method_path)
 *     .fixed(BLAKE3(request_bytes), 32)
 *     .i64(timestamp_ms)
 *     .fixed(nonce, 16)
 *     .str(agent_id)
 *     .fixed(serial, 16)                 // the agent's current certificate
 *
 * It travels in five ASCII metadata entries. The registry checks, in order:
 * the agent exists and its current certificate has this serial, is not
 * revoked and is valid now; the signature with that certificate's key; the
 * timestamp within the skew; the nonce never seen.
 */
import { fromBase64Url, fromHex, layout, toBase64Url, toHex, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { REGISTRY_ID_BYTES } from '@parley/identity';
import { asMalformed, assertCrypto, assertTarget, check, verifying } from './assert.js';
import { ProtocolError } from './errors.js';
import { OPERATOR_NONCE_BYTES, type OperatorRequestSigner, type OperatorRequestTarget } from './operator-auth.js';

/** Domain tag of the agent request layout. */
export const AGENT_REQUEST_DOMAIN = 'parley/v1/agent-request';

/** Metadata keys of a signed agent request (all ASCII values). */
export const AGENT_METADATA_KEYS = Object.freeze({
  /** The agent id. */
  agentId: 'parley-agent-id',
  /** 32 lowercase hex digits: the serial of the agent's current certificate. */
  serial: 'parley-agent-serial',
  /** Decimal milliseconds since the Unix epoch. */
  timestamp: 'parley-agent-timestamp-ms',
  /** 32 lowercase hex digits: 16 random bytes. */
  nonce: 'parley-agent-nonce',
  /** Unpadded base64url of the 64-byte Ed25519 signature. */
  signature: 'parley-agent-signature',
} as const);

/** The fields of one agent request signature, as parsed from metadata. */
export interface AgentRequestAuth {
  readonly agentId: string;
  readonly serial: Uint8Array;
  readonly timestampMs: number;
  readonly nonce: Uint8Array;
  readonly signature: Uint8Array;
}

/** An agent's identity, as it signs requests. */
export interface AgentRequestKey {
  readonly agentId: string;
  /** The serial of its current certificate. */
  readonly serial: Uint8Array;
  /** Its Ed25519 identity secret key. */
  readonly secretKey: SecretKey;
}

/**
 * The signed bytes of an agent request.
 * @throws ProtocolError `malformed` on a wrong type or length
 */
export function agentRequestLayout(crypto: ParleyCrypto, target: OperatorRequestTarget, auth: Omit<AgentRequestAuth, 'signature'>): Uint8Array {
  assertCrypto(crypto);
  const t = assertTarget(target);
  const a = check.object(auth, 'auth') as unknown as Omit<AgentRequestAuth, 'signature'>;
  return asMalformed('agent request', () =>
    layout(AGENT_REQUEST_DOMAIN)
      .fixed(t.registryId, REGISTRY_ID_BYTES, 'registryId')
      .str(t.path)
      .fixed(crypto.blake3(t.body), 32, 'bodyDigest')
      .i64(a.timestampMs)
      .fixed(a.nonce, OPERATOR_NONCE_BYTES, 'nonce')
      .str(a.agentId)
      .fixed(a.serial, 16, 'serial')
      .bytes(),
  );
}

/** Asserts an agent's request key: its agent id, its certificate's 16-byte serial and a secret key. */
function assertAgentKey(key: unknown): AgentRequestKey {
  const k = check.object(key, 'key');
  check.string(k['agentId'], 'key.agentId');
  check.bytes(k['serial'], 'key.serial', 16);
  check.object(k['secretKey'], 'key.secretKey');
  return key as AgentRequestKey;
}

/**
 * Signs one request as an agent: returns the metadata entries to send with it.
 * @param nowMs the timestamp to sign (default: now)
 * @throws ProtocolError `malformed` (any argument); CryptoError `key_wiped` for a wiped key
 */
export function signAgentRequest(crypto: ParleyCrypto, key: AgentRequestKey, target: OperatorRequestTarget, nowMs: number = Date.now()): Record<string, string> {
  assertCrypto(crypto, ['randomBytes']);
  assertAgentKey(key);
  check.safeInt(nowMs, 'nowMs');
  const auth = { agentId: key.agentId, serial: key.serial, timestampMs: nowMs, nonce: crypto.randomBytes(OPERATOR_NONCE_BYTES) };
  const signed = agentRequestLayout(crypto, target, auth);
  const signature = asMalformed('agent signature', () => crypto.ed25519.sign(signed, key.secretKey));
  return {
    [AGENT_METADATA_KEYS.agentId]: auth.agentId,
    [AGENT_METADATA_KEYS.serial]: toHex(auth.serial),
    [AGENT_METADATA_KEYS.timestamp]: String(auth.timestampMs),
    [AGENT_METADATA_KEYS.nonce]: toHex(auth.nonce),
    [AGENT_METADATA_KEYS.signature]: toBase64Url(signature),
  };
}

/**
 * A request signer (`@parley/rpc`'s `RequestSigner` shape) that signs every call as this agent.
 * @throws ProtocolError `malformed` at once for a wrong argument (not at the first call)
 */
export function agentRequestSigner(crypto: ParleyCrypto, key: AgentRequestKey, registryId: Uint8Array): OperatorRequestSigner {
  assertCrypto(crypto, ['randomBytes']);
  assertAgentKey(key);
  check.bytes(registryId, 'registryId', REGISTRY_ID_BYTES);
  return (path, body) => signAgentRequest(crypto, key, { registryId, path, body });
}

const HEX32 = /^[0-9a-f]{32}$/;
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;
const AGENT_ID = /^[a-z0-9][a-z0-9._:-]{0,127}$/;

/**
 * Reads an agent signature from request metadata.
 * @returns the parsed fields, or undefined when no agent metadata is present at all
 * @throws ProtocolError `unauthenticated` when some but not all entries are present, or one is malformed;
 *   `malformed` when `get` is not a function
 */
export function parseAgentMetadata(get: (key: string) => string | undefined): AgentRequestAuth | undefined {
  check.func(get, 'get');
  const raw = {
    agentId: get(AGENT_METADATA_KEYS.agentId),
    serial: get(AGENT_METADATA_KEYS.serial),
    timestamp: get(AGENT_METADATA_KEYS.timestamp),
    nonce: get(AGENT_METADATA_KEYS.nonce),
    signature: get(AGENT_METADATA_KEYS.signature),
  };
  const present = Object.values(raw).filter((v) => v !== undefined).length;
  if (present === 0) return undefined;
  const bad = (what: string): never => {
    throw new ProtocolError('unauthenticated', `agent signature metadata: ${what}`);
  };
  if (present !== 5) bad(`all of ${Object.values(AGENT_METADATA_KEYS).join(', ')} are required`);
  if (Object.values(raw).some((v) => typeof v !== 'string')) bad('every entry must be text');
  if (!AGENT_ID.test(raw.agentId!)) bad(`${AGENT_METADATA_KEYS.agentId} is not an agent id`);
  if (!HEX32.test(raw.serial!)) bad(`${AGENT_METADATA_KEYS.serial} must be 32 lowercase hex digits`);
  if (!DECIMAL.test(raw.timestamp!)) bad(`${AGENT_METADATA_KEYS.timestamp} must be decimal milliseconds`);
  if (!HEX32.test(raw.nonce!)) bad(`${AGENT_METADATA_KEYS.nonce} must be 32 lowercase hex digits`);
  let signature: Uint8Array | undefined;
  try {
    signature = fromBase64Url(raw.signature!);
  } catch {
    bad(`${AGENT_METADATA_KEYS.signature} must be unpadded base64url`);
  }
  if (signature!.length !== 64) bad(`${AGENT_METADATA_KEYS.signature} must encode 64 bytes`);
  const timestampMs = Number(raw.timestamp);
  if (!Number.isSafeInteger(timestampMs)) bad(`${AGENT_METADATA_KEYS.timestamp} is out of range`);
  return { agentId: raw.agentId!, serial: fromHex(raw.serial!), timestampMs, nonce: fromHex(raw.nonce!), signature: signature! };
}

/**
 * Checks an agent request signature with the identity key of the agent's current certificate.
 * @returns true only for a valid signature; false on any malformed input
 */
export function verifyAgentRequest(crypto: ParleyCrypto, publicKey: Uint8Array, auth: AgentRequestAuth, target: OperatorRequestTarget): boolean {
  return verifying(() => crypto.ed25519.verify(check.object(auth, 'auth')['signature'] as Uint8Array, agentRequestLayout(crypto, target, auth), publicKey));
}
