/**
 * PEM text as the registry writes and reads it. Files end in a newline, so
 * that `cat new/ca.pem old/ca.pem > both.pem` (the CA rollover of
 * docs/OPERATIONS.md) makes a bundle of two certificates. A bundle built from
 * files written before that (`-----END CERTIFICATE----------BEGIN
 * CERTIFICATE-----` on one line) is read too: grpc-js (OpenSSL) would take
 * only the first certificate of it, and every connection signed by the second
 * would fail as "unreachable".
 */
import { RpcError } from '@parley/rpc';

/** One PEM block: `-----BEGIN X-----`, base64 lines, `-----END X-----`. */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** `text` ending in exactly one newline (what every PEM file the registry writes ends with). */
export function pemFileText(text: string): string {
  return `${text.replace(/\s+$/, '')}\n`;
}

/**
 * The PEM blocks of `text`, each on lines of its own and ending in a newline, whatever separated them
 * (nothing, spaces, CRLF). Text outside the blocks (comments, `openssl x509 -text` output) is dropped.
 * @returns the normalised text and the number of blocks (0: no PEM block at all)
 */
export function normalisePem(text: string): { pem: string; blocks: number } {
  const blocks: string[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const raw = (m[2] ?? '').trim();
    // Base64 re-wrapped at 64 columns; a block with RFC 1421 headers (`Proc-Type: …`) keeps its lines.
    const lines = raw.includes(':') ? raw.split(/\s*\n\s*/) : (raw.replace(/\s+/g, '').match(/.{1,64}/g) ?? []);
    blocks.push([`-----BEGIN ${m[1]}-----`, ...lines, `-----END ${m[1]}-----`].join('\n'));
  }
  return { pem: blocks.map((b) => `${b}\n`).join(''), blocks: blocks.length };
}

/**
 * A certificate bundle file's PEM text (a CA bundle, or a certificate chain), normalised for grpc-js.
 * @param path where it was read from (for the message)
 * @param bytes its contents
 * @param what what it is ("TLS CA certificate")
 * @throws RpcError `malformed` when it holds no PEM certificate
 */
export function certificateBundle(path: string, bytes: Uint8Array, what: string): Buffer {
  const { pem } = normalisePem(Buffer.from(bytes).toString('utf8'));
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new RpcError('malformed', `${what} ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  return Buffer.from(pem, 'utf8');
}
