// The typed client over TLS to an IP address: no server name (SNI) is sent for an IP, so Node's
// "[DEP0123] Setting the TLS ServerName to an IP address" warning (a non-JSON line on stderr) never
// appears, while the certificate is still checked against the IP (its IP SANs) and a
// `grpc.ssl_target_name_override` (a server's DNS name) still is the server name and the name checked.
// Its own file: Node emits DEP0123 once per process.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { Server, ServerCredentials, credentials, type ChannelOptions } from '@grpc/grpc-js';
import { Health } from '@parley/proto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ServingStatus, addHealthService, createClient, isRpcError } from '../src/index.js';

const fixture = (name: string): Buffer => readFileSync(new URL(`./fixtures/tls/${name}`, import.meta.url));
const ca = fixture('ca.pem');

const warnings: Error[] = [];
const onWarning = (warning: Error): void => void warnings.push(warning);
/** The server names grpc-js asked `tls.connect` for (undefined: none). */
const serverNames: (string | undefined)[] = [];

async function serve(name: 'server' | 'server-dns-only'): Promise<{ server: Server; port: number }> {
  const server = new Server();
  addHealthService(server, { '': ServingStatus.SERVING });
  const creds = ServerCredentials.createSsl(null, [{ cert_chain: fixture(`${name}.pem`), private_key: fixture(`${name}.key`) }]);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (error, p) => (error ? reject(error) : resolve(p))));
  return { server, port };
}

/** One health check over TLS to 127.0.0.1:port; the error's message when it fails. */
async function check(port: number, channelOptions: ChannelOptions = {}): Promise<string> {
  const client = createClient(Health, `127.0.0.1:${port}`, credentials.createSsl(ca), { channelOptions, defaultTimeoutMs: 10_000 });
  try {
    const response = await client.check({ service: '' });
    return response.status === ServingStatus.SERVING ? 'serving' : `status ${response.status}`;
  } catch (error) {
    if (!isRpcError(error)) throw error;
    return error.message;
  } finally {
    client.close();
  }
}

let withIp: { server: Server; port: number };
let dnsOnly: { server: Server; port: number };
beforeAll(async () => {
  process.on('warning', onWarning);
  const connect = tls.connect.bind(tls);
  vi.spyOn(tls, 'connect').mockImplementation(((options: tls.ConnectionOptions, ...rest: unknown[]) => {
    serverNames.push(options.servername);
    return (connect as (...a: unknown[]) => tls.TLSSocket)(options, ...rest);
  }) as typeof tls.connect);
  withIp = await serve('server');
  dnsOnly = await serve('server-dns-only');
});
afterAll(() => {
  process.off('warning', onWarning);
  vi.restoreAllMocks();
  withIp?.server.forceShutdown();
  dnsOnly?.server.forceShutdown();
});
afterEach(() => void (serverNames.length = 0));

describe('TLS to an IP address', () => {
  it('connects to 127.0.0.1 without sending it as the server name: no DEP0123 warning', async () => {
    expect(await check(withIp.port)).toBe('serving');
    expect(serverNames).toContain(undefined);
    expect(serverNames.filter((n) => n !== undefined)).toEqual([]);
    // Also when the override is an IP address.
    expect(await check(withIp.port, { 'grpc.ssl_target_name_override': '127.0.0.1' })).toBe('serving');
    await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on the next tick
    expect(warnings.filter((w) => (w as { code?: unknown }).code === 'DEP0123' || /TLS ServerName/.test(w.message)).map((w) => w.message)).toEqual([]);
  });

  it('still checks the certificate against the IP address (its IP SANs)', async () => {
    expect(await check(dnsOnly.port)).toMatch(/\[unavailable\].*(ERR_TLS_CERT_ALTNAME_INVALID|IP: 127\.0\.0\.1 is not in the cert's list)/);
  });

  it('keeps grpc.ssl_target_name_override: a DNS name is the server name and the name checked', async () => {
    expect(await check(dnsOnly.port, { 'grpc.ssl_target_name_override': 'rpc.test' })).toBe('serving');
    expect(serverNames).toContain('rpc.test');
    expect(await check(dnsOnly.port, { 'grpc.ssl_target_name_override': 'other.test' })).toMatch(/\[unavailable\].*ERR_TLS_CERT_ALTNAME_INVALID/);
  });
});
