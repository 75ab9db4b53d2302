// Addresses and the plaintext rule: one parser and one loopback test for the registry, the gateway, their CLIs
// and the SDK. Loopback is 127.0.0.0/8, ::1 and localhost, nothing else (not 0.0.0.0, not a name that merely
// starts with "localhost", not a private range).
import { describe, expect, it } from 'vitest';
import { formatHostPort, isLoopbackAddress, isLoopbackHost, isRpcError, parseHostPort } from '../src/index.js';

describe('addresses', () => {
  it('parses host:port and [v6]:port, and names the setting in the error', () => {
    expect(parseHostPort('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseHostPort('gw.example.net:443')).toEqual({ host: 'gw.example.net', port: 443 });
    expect(parseHostPort('[::1]:7443')).toEqual({ host: '::1', port: 7443 });
    for (const bad of ['nope', 'host:', ':80', 'a b:1', 'host:65536', 'host:123456', '::1:80', '[zz]:1']) {
      let error: unknown;
      try {
        parseHostPort(bad, 'listen');
      } catch (e) {
        error = e;
      }
      expect(isRpcError(error, 'malformed'), bad).toBe(true);
      expect((error as Error).message, bad).toContain(`listen must be HOST:PORT (port 0..65535), got '${bad}'`);
    }
  });

  it('formats an IPv6 host in brackets', () => {
    expect(formatHostPort({ host: '::1', port: 1 })).toBe('[::1]:1');
    expect(formatHostPort({ host: '127.0.0.1', port: 2 })).toBe('127.0.0.1:2');
    expect(formatHostPort(parseHostPort('[2001:db8::1]:443'))).toBe('[2001:db8::1]:443');
  });

  it('loopback is 127.0.0.0/8, ::1 and localhost only', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST']) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.1.2.3', '192.168.0.1', 'localhost.example.net', 'mylocalhost', '128.0.0.1', '127.0.0.1.nip.io', '']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });

  it('an address to dial: host:port, bare host, and gRPC dns: targets', () => {
    for (const a of ['127.0.0.1:7443', '[::1]:7443', 'localhost:1', 'localhost', '::1', 'dns:127.0.0.1:7443', 'dns:///localhost:7443', 'dns://8.8.8.8/127.0.0.1:1']) {
      expect(isLoopbackAddress(a), a).toBe(true);
    }
    for (const a of ['10.1.2.3:7443', 'gw.example.net:443', '[2001:db8::1]:443', 'dns:gw.example.net:443', 'dns://127.0.0.1/gw.example.net:443', 'unix:/tmp/x.sock', '']) {
      expect(isLoopbackAddress(a), a).toBe(false);
    }
  });
});
