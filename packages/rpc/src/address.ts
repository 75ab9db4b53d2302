/**
 * `host:port` addresses of Parley's gRPC servers and clients, and the one rule
 * for plaintext (DESIGN.md "Gateway"; PROTOCOL §10.1): a channel without TLS is
 * served or dialled only on loopback — 127.0.0.0/8, ::1 or `localhost` — and
 * anything else needs TLS. The registry, the gateway, their CLIs and the agent
 * SDK all decide with {@link isLoopbackHost} / {@link isLoopbackAddress}.
 */
import { RpcError } from './errors.js';

/** A parsed address: the host without IPv6 brackets, and the port (0: any free one, when binding). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

const HOST_PORT = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/;

/**
 * Parses `host:port`, `[v6]:port`.
 * @param text the address
 * @param what how to name it in the error (a setting or option name)
 * @throws RpcError `malformed` unless it is HOST:PORT with a port in 0..65535
 */
export function parseHostPort(text: string, what = 'address'): HostPort {
  const m = HOST_PORT.exec(text);
  const port = m === null ? Number.NaN : Number(m[3]);
  if (m === null || port > 65_535) throw new RpcError('malformed', `${what} must be HOST:PORT (port 0..65535), got '${text}'`);
  return { host: (m[1] ?? m[2])!, port };
}

/** `host:port`, with an IPv6 host in brackets (what grpc-js binds and dials). */
export function formatHostPort(address: HostPort): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Whether a host (brackets allowed) is a loopback address: 127.0.0.0/8, ::1 or localhost. Plaintext is allowed only there. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Whether an address to dial names a loopback host: `host:port`, `[v6]:port`,
 * a bare host, or the gRPC target forms `dns:host:port` and
 * `dns://authority/host:port`. Anything else is not known to be loopback (false).
 */
export function isLoopbackAddress(address: string): boolean {
  let target = address.trim();
  if (target.startsWith('dns:')) target = target.slice(4).replace(/^\/\/[^/]*\//, '');
  const m = HOST_PORT.exec(target);
  return isLoopbackHost(m === null ? target : (m[1] ?? m[2])!);
}
