/**
 * `host:port` addresses of the registry, and the loopback test that decides
 * whether plaintext may be served (DESIGN.md "Gateway": plaintext only on loopback).
 */
import { RpcError } from '@parley/rpc';

/** Whether a host is a loopback address (plaintext is allowed only there). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Splits `host:port` (IPv6 in brackets). */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(address);
  const port = m === null ? Number.NaN : Number(m[2]);
  if (m === null || port > 65535) throw new RpcError('malformed', `address '${address}' must be host:port (port 0 picks a free one)`);
  return { host: m[1]!, port };
}
