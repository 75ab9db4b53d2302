/**
 * Checks of the public API's arguments at run time (`connect`, `send`): a caller without TypeScript — or one
 * casting — gets a `malformed` ClientError naming the argument and what it got, before anything is recorded
 * or sent, rather than a TypeError deep inside, a timer that fires at once (`setTimeout` turns NaN, negative and
 * huge delays into 1 ms), or a send that goes out although its call was refused.
 */
import { SecretKey } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { MessageType } from '@parley/proto';
import { ClientError } from './errors.js';

/** The longest delay `setTimeout` keeps (larger ones fire after 1 ms). */
export const MAX_TIMER_MS = 2_147_483_647;

const SEND_ID_RE = /^[\x21-\x7e]{1,128}$/;

/** How a value looks in a message: its type, and a short rendering of primitives. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
    case 'number':
      return Number.isNaN(value) ? 'NaN' : `the number ${value}`;
    case 'bigint':
      return `the bigint ${value}n`;
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    default:
      return value instanceof Uint8Array ? `${value.length} bytes` : 'an object';
  }
}

const bad = (what: string, expected: string, got: unknown): ClientError => new ClientError('malformed', `${what} must be ${expected}, got ${describeValue(got)}`);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A whole number of milliseconds a timer can hold: 0 ≤ v ≤ 2^31−1. */
function checkTimer(value: unknown, what: string, min = 0): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMER_MS) throw bad(what, `an integer number of milliseconds from ${min} to ${MAX_TIMER_MS}`, value);
}

function checkCount(value: unknown, what: string, min: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) throw bad(what, `an integer of at least ${min}`, value);
}

function checkOptionalObject(value: unknown, what: string): void {
  if (value !== undefined && !isObject(value)) throw bad(what, 'an object', value);
}

function checkFunction(value: unknown, what: string): void {
  if (value !== undefined && typeof value !== 'function') throw bad(what, 'a function', value);
}

function checkPem(value: unknown, what: string): void {
  if (value !== undefined && !(value instanceof Uint8Array)) throw bad(what, 'a Buffer (PEM)', value);
}

/**
 * The types of `connect`'s options (what the fields' own checks do not cover: ranges and meanings are checked
 * where they are used).
 * @throws ClientError `malformed`
 */
export function checkConnectOptions(options: unknown): void {
  if (!isObject(options)) throw bad('connect options', 'an object', options);
  const o = options;
  if (typeof o['gateway'] !== 'string' || o['gateway'].length === 0) throw bad('gateway', "a non-empty 'host:port' string", o['gateway']);
  if (typeof o['expectedGatewayId'] !== 'string' || o['expectedGatewayId'].length === 0) {
    throw new ClientError('malformed', `expectedGatewayId is required: the gateway id this agent means to reach (§10.2), got ${describeValue(o['expectedGatewayId'])}`);
  }
  const identity = o['identity'];
  if (!isObject(identity)) throw bad('identity', 'an object { agentId, signingKey, certificate }', identity);
  if (typeof identity['agentId'] !== 'string') throw bad('identity.agentId', 'a string', identity['agentId']);
  if (!(identity['signingKey'] instanceof SecretKey)) throw bad('identity.signingKey', 'a SecretKey (@parley/crypto-core)', identity['signingKey']);
  const certificate = identity['certificate'];
  if (!isObject(certificate) || !(certificate['identityPublicKey'] instanceof Uint8Array)) throw bad('identity.certificate', 'an AgentCertificate', certificate);
  if (!(o['trustBundle'] instanceof TrustBundle)) throw bad('trustBundle', 'a TrustBundle (@parley/identity)', o['trustBundle']);
  const registry = o['registry'];
  if (registry !== undefined) {
    if (!isObject(registry)) throw bad('registry', 'an object { address, rootCerts?, registryId?, pollIntervalMs? }', registry);
    if (typeof registry['address'] !== 'string' || registry['address'].length === 0) throw bad('registry.address', "a non-empty 'host:port' string", registry['address']);
    checkPem(registry['rootCerts'], 'registry.rootCerts');
    if (registry['registryId'] !== undefined && !(registry['registryId'] instanceof Uint8Array)) throw bad('registry.registryId', 'a Uint8Array', registry['registryId']);
    checkTimer(registry['pollIntervalMs'], 'registry.pollIntervalMs', 1);
  }
  const revocations = o['revocations'];
  if (revocations !== undefined && (!isObject(revocations) || typeof revocations['check'] !== 'function')) throw bad('revocations', 'a RevocationChecker (an object with check())', revocations);
  const tls = o['tls'];
  if (tls !== undefined) {
    if (!isObject(tls)) throw bad('tls', 'an object { rootCerts?, privateKey?, certChain? }', tls);
    checkPem(tls['rootCerts'], 'tls.rootCerts');
    checkPem(tls['privateKey'], 'tls.privateKey');
    checkPem(tls['certChain'], 'tls.certChain');
  }
  const store = o['stateStore'];
  if (store !== undefined) {
    if (!isObject(store) || !['load', 'append', 'rewrite', 'close'].every((m) => typeof store[m] === 'function')) {
      throw bad('stateStore', 'a StateStore (load, append, rewrite, close), e.g. fileStateStore(path)', store);
    }
  }
  if (o['stateKey'] !== undefined && !(o['stateKey'] instanceof SecretKey)) throw bad('stateKey', 'a 32-byte SecretKey (e.g. from stateKeyFile)', o['stateKey']);
  checkOptionalObject(o['timeouts'], 'timeouts');
  checkOptionalObject(o['skew'], 'skew');
  const reconnect = o['reconnect'];
  if (reconnect !== undefined && reconnect !== false) {
    if (!isObject(reconnect)) throw bad('reconnect', 'false or an object { initialDelayMs?, maxDelayMs? }', reconnect);
    checkTimer(reconnect['initialDelayMs'], 'reconnect.initialDelayMs');
    checkTimer(reconnect['maxDelayMs'], 'reconnect.maxDelayMs');
  }
  checkCount(o['rekeyThreshold'], 'rekeyThreshold', 0);
  checkTimer(o['connectTimeoutMs'], 'connectTimeoutMs');
  checkTimer(o['sendTimeoutMs'], 'sendTimeoutMs');
  checkTimer(o['resendIntervalMs'], 'resendIntervalMs');
  checkTimer(o['handshakeTimeoutMs'], 'handshakeTimeoutMs', 1);
  checkTimer(o['authTimeoutMs'], 'authTimeoutMs', 1);
  checkTimer(o['keepaliveMs'], 'keepaliveMs', 1_000);
  checkCount(o['maxUnacked'], 'maxUnacked', 1);
  checkCount(o['maxPendingSends'], 'maxPendingSends', 1);
  checkFunction(o['acceptHandshake'], 'acceptHandshake');
  checkFunction(o['onEvent'], 'onEvent');
  checkOptionalObject(o['crypto'], 'crypto');
}

/** Whether `type` is a MessageType an application may send (a known value, not UNSPECIFIED). */
function isSendableType(type: unknown): type is MessageType {
  return typeof type === 'number' && Number.isInteger(type) && type !== MessageType.UNSPECIFIED && typeof MessageType[type] === 'string';
}

function checkHash(value: unknown, what: string): void {
  if (value !== undefined && !(value instanceof Uint8Array && value.length === 32)) throw bad(what, 'a 32-byte Uint8Array (a message hash)', value);
}

/**
 * The types of `send`'s arguments (the recipient's and the content's meaning are checked by the outbox).
 * @throws ClientError `malformed`
 */
export function checkSendArguments(to: unknown, type: unknown, options: unknown): void {
  if (typeof to !== 'string') throw bad('send recipient', "an agent id string (e.g. 'worker-1')", to);
  if (!isSendableType(type)) throw bad('send message type', 'a MessageType of @parley/proto (a known value, not UNSPECIFIED, e.g. MessageType.TASK_ASSIGNMENT)', type);
  if (options === undefined) return;
  if (!isObject(options)) throw bad('send options', 'an object { id?, timeoutMs?, parentMessageHash?, handoffHash? }', options);
  const id = options['id'];
  if (id !== undefined && (typeof id !== 'string' || !SEND_ID_RE.test(id))) throw bad('send id', 'a string of 1..128 printable ASCII characters', id);
  checkTimer(options['timeoutMs'], 'send timeoutMs');
  checkHash(options['parentMessageHash'], 'send parentMessageHash');
  checkHash(options['handoffHash'], 'send handoffHash');
}
