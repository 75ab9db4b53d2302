/**
 * @parley/crypto-core/tls — X.509 certificates for a first TLS setup: a
 * private CA and server (or client) certificates signed by it, as PEM.
 *
 * TLS keys are not Parley identity keys: they are ECDSA P-256 (what every
 * TLS 1.3 stack — OpenSSL under grpc-js, BoringSSL under grpcio, Go — accepts
 * for server certificates), made and signed by Node's WebCrypto and encoded by
 * @peculiar/x509; no openssl binary is run. A subpath of its own, so that the
 * agent SDK and the servers never load it; only `parley-registry tls` does.
 *
 * The CA is a root with `basicConstraints cA, pathLen 0` and `keyCertSign,
 * cRLSign`; a leaf has `cA false`, `digitalSignature`, the extended key usage
 * `serverAuth` (or `clientAuth`), subject alternative names for every host
 * given (DNS names and IP addresses) and subject/authority key identifiers.
 * Serial numbers are 16 random bytes with the top bit cleared (RFC 5280 §4.1.2.2:
 * positive, at most 20 octets).
 */
import 'reflect-metadata'; // @peculiar/x509 uses tsyringe, which needs the Reflect metadata API
import { webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { CryptoError } from './errors.js';

const ALGORITHM: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const DAY_MS = 86_400_000;
/** Longest validity accepted for any certificate, days (10 years). */
export const TLS_MAX_DAYS = 3650;
const HOST_RE = /^(?=.{1,253}$)(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const NAME_RE = /^[\x20-\x7e]{1,64}$/;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/**
 * A certificate and its private key, PEM. The private key never prints: `privateKeyPem` is a non-enumerable
 * property (read it by name to write the key file; `Object.keys`, a spread `{ ...pair }` and `structuredClone`
 * leave it out), and `JSON.stringify`, `console.log` and `util.inspect` (`showHidden` too) show `[redacted]` in
 * its place.
 */
export interface TlsKeyPair {
  /** The certificate, PEM (`-----BEGIN CERTIFICATE-----`). */
  readonly certificatePem: string;
  /** The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): write it mode 0600. Non-enumerable; redacted when printed. */
  readonly privateKeyPem: string;
  /** SHA-256 of the certificate's DER, hex (for logs and pinning). */
  readonly sha256: string;
  /** The end of its validity. */
  readonly notAfter: Date;
}

/** What {@link createTlsCa} makes. */
export interface TlsCaOptions {
  /** The CA's common name (default "Parley private CA"). */
  readonly commonName?: string;
  /** Validity in days, 1..{@link TLS_MAX_DAYS} (default 1825). */
  readonly days?: number;
  /** Start of validity (default now, less 5 minutes for clock skew). */
  readonly now?: Date;
}

/** What {@link createTlsCertificate} makes. */
export interface TlsCertificateOptions {
  /** DNS names and IP addresses the certificate is for (subject alternative names); at least one. */
  readonly hosts: readonly string[];
  /** `server` (extended key usage serverAuth, default) or `client` (clientAuth, for mutual TLS). */
  readonly usage?: 'server' | 'client';
  /** Common name (default the first host). */
  readonly commonName?: string;
  /** Validity in days, 1..{@link TLS_MAX_DAYS} (default 397); never past the CA's. */
  readonly days?: number;
  readonly now?: Date;
}

function invalid(message: string): CryptoError {
  return new CryptoError('invalid_value', message);
}

function checkDays(days: number | undefined, fallback: number): number {
  const d = days ?? fallback;
  if (!Number.isSafeInteger(d) || d < 1 || d > TLS_MAX_DAYS) throw invalid(`validity must be 1..${TLS_MAX_DAYS} days`);
  return d;
}

function checkName(name: string): string {
  if (!NAME_RE.test(name) || /[,=+<>#;"\\]/.test(name)) throw invalid('common name must be 1..64 printable ASCII characters without ,=+<>#;"\\');
  return name;
}

/**
 * Checks one host for a subject alternative name: an IPv4/IPv6 address, or a
 * DNS name (letters, digits, hyphens; labels of 1..63; an optional leading `*.`).
 * @returns the SAN entry
 * @throws CryptoError `invalid_value` for anything else
 */
export function tlsHostName(host: string): { type: 'ip' | 'dns'; value: string } {
  if (typeof host !== 'string') throw new CryptoError('invalid_type', 'host must be a string');
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(bare) !== 0) return { type: 'ip', value: bare };
  if (!HOST_RE.test(host)) throw invalid(`"${host.slice(0, 80)}" is neither an IP address nor a DNS name`);
  return { type: 'dns', value: host.toLowerCase() };
}

function serialNumber(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01; // positive, and never a leading zero octet
  return Buffer.from(bytes).toString('hex');
}

const INSPECT = Symbol.for('nodejs.util.inspect.custom');
const REDACTED = '[redacted]';

async function pair(cert: x509.X509Certificate, privateKey: CryptoKey): Promise<TlsKeyPair> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', privateKey);
  const privateKeyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
  new Uint8Array(pkcs8).fill(0);
  const digest = await webcrypto.subtle.digest('SHA-256', cert.rawData);
  return redactedPair({ certificatePem: cert.toString('pem'), sha256: Buffer.from(digest).toString('hex'), notAfter: cert.notAfter }, privateKeyPem);
}

/**
 * The result object: the public fields enumerable, `privateKeyPem` readable by name but not enumerable, and a
 * `toJSON` and `util.inspect.custom` that show `[redacted]` for it (SecretKey's promise, for PEM text).
 */
function redactedPair(fields: Omit<TlsKeyPair, 'privateKeyPem'>, privateKeyPem: string): TlsKeyPair {
  const printable = (): Record<string, unknown> => ({ ...fields, privateKeyPem: REDACTED });
  const out = { ...fields };
  Object.defineProperties(out, {
    privateKeyPem: { value: privateKeyPem, enumerable: false },
    toJSON: { value: printable, enumerable: false },
    [INSPECT]: { value: printable, enumerable: false },
  });
  return Object.freeze(out) as TlsKeyPair;
}

function validity(now: Date | undefined, days: number): { notBefore: Date; notAfter: Date } {
  const start = (now ?? new Date()).getTime() - 5 * 60_000;
  return { notBefore: new Date(start), notAfter: new Date(start + days * DAY_MS) };
}

/**
 * Makes a private root CA: a fresh P-256 key and a self-signed certificate.
 * @returns the CA certificate and key, PEM
 * @throws CryptoError `invalid_value` for a bad name or validity
 */
export async function createTlsCa(options: TlsCaOptions = {}): Promise<TlsKeyPair> {
  const commonName = checkName(options.commonName ?? 'Parley private CA');
  const days = checkDays(options.days, 1825);
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${commonName}`,
    ...validity(options.now, days),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return pair(cert, keys.privateKey);
}

/**
 * Makes a server (or client) certificate signed by a CA made by {@link createTlsCa}.
 * @param ca the CA's certificate and private key, PEM
 * @param options hosts, usage, validity
 * @returns the leaf certificate and its key, PEM
 * @throws CryptoError `invalid_value` for a bad host, name or validity, or a CA that is not a CA
 *   (or whose key does not match its certificate); `invalid_encoding` for PEM that does not parse
 */
export async function createTlsCertificate(ca: { certificatePem: string; privateKeyPem: string }, options: TlsCertificateOptions): Promise<TlsKeyPair> {
  if (!Array.isArray(options.hosts) || options.hosts.length === 0 || options.hosts.length > 100) throw invalid('give 1..100 hosts');
  const names = options.hosts.map(tlsHostName);
  const commonName = checkName(options.commonName ?? names[0]!.value);
  const days = checkDays(options.days, 397);
  let caCert: x509.X509Certificate;
  let caKey: CryptoKey;
  try {
    caCert = new x509.X509Certificate(ca.certificatePem);
    caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(ca.privateKeyPem), ALGORITHM, false, ['sign']);
  } catch (cause) {
    throw new CryptoError('invalid_encoding', 'the CA certificate or key is not a P-256 PEM made by `tls init`', { cause });
  }
  const constraints = caCert.getExtension(x509.BasicConstraintsExtension);
  if (constraints?.ca !== true) throw invalid('the CA certificate is not a CA (basicConstraints cA is not set)');
  const caPublic = await caCert.publicKey.export(ALGORITHM, ['verify']);
  const probe = new Uint8Array(32);
  const signature = await webcrypto.subtle.sign(ALGORITHM, caKey, probe);
  if (!(await webcrypto.subtle.verify(ALGORITHM, caPublic, signature, probe))) throw invalid('the CA key does not match the CA certificate');
  const span = validity(options.now, days);
  if (span.notAfter > caCert.notAfter) span.notAfter = caCert.notAfter;
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const usage = options.usage ?? 'server';
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${commonName}`,
    issuer: caCert.subject,
    ...span,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth], false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return pair(cert, keys.privateKey);
}
