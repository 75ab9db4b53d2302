// @parley/crypto-core/tls: the CA and leaf certificates of `parley-registry tls`,
// checked with Node's own X.509 parser and a real TLS 1.3 handshake.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { once } from 'node:events';
import { createServer, connect, type TLSSocket } from 'node:tls';
import { format, inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { TLS_MAX_DAYS, createTlsCa, createTlsCertificate, tlsHostName } from '../src/tls.js';

describe('createTlsCa / createTlsCertificate', () => {
  it('makes a P-256 root CA and a server certificate it signs, for every host given', async () => {
    const now = new Date('2030-01-01T00:00:00Z');
    const ca = await createTlsCa({ commonName: 'Test CA', days: 30, now });
    const leaf = await createTlsCertificate(ca, { hosts: ['gw.example.org', '127.0.0.1', '::1'], days: 10, now });
    const caCert = new X509Certificate(ca.certificatePem);
    const leafCert = new X509Certificate(leaf.certificatePem);
    expect(caCert.ca).toBe(true);
    expect(caCert.subject).toBe('CN=Test CA');
    expect(caCert.verify(caCert.publicKey)).toBe(true);
    expect(leafCert.ca).toBe(false);
    expect(leafCert.issuer).toBe('CN=Test CA');
    expect(leafCert.verify(caCert.publicKey)).toBe(true);
    expect(leafCert.checkIssued(caCert)).toBe(true);
    expect(leafCert.subjectAltName).toBe('DNS:gw.example.org, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(leafCert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // serverAuth
    expect(leafCert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(new Date(leafCert.validFrom).getTime()).toBe(now.getTime() - 5 * 60_000);
    expect(new Date(leafCert.validTo).getTime()).toBe(now.getTime() - 5 * 60_000 + 10 * 86_400_000);
    expect(leaf.notAfter.getTime()).toBe(new Date(leafCert.validTo).getTime());
    expect(leaf.sha256).toBe(leafCert.fingerprint256.replace(/:/g, '').toLowerCase());
    // The key is the certificate's, PKCS#8.
    expect(leaf.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(leafCert.checkPrivateKey(createPrivateKey(leaf.privateKeyPem))).toBe(true);
    // Serial numbers: positive, random.
    expect(leafCert.serialNumber).not.toBe(caCert.serialNumber);
    expect(Number.parseInt(leafCert.serialNumber.slice(0, 2), 16)).toBeLessThan(0x80);
  });

  it('never lets a leaf outlive its CA; client certificates carry clientAuth', async () => {
    const ca = await createTlsCa({ days: 2 });
    const leaf = await createTlsCertificate(ca, { hosts: ['agent-1'], usage: 'client', days: 397 });
    const caCert = new X509Certificate(ca.certificatePem);
    const leafCert = new X509Certificate(leaf.certificatePem);
    expect(new Date(leafCert.validTo).getTime()).toBe(new Date(caCert.validTo).getTime());
    expect(leafCert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
  });

  it('refuses bad hosts, names, validities, a leaf as CA and a CA key that is not its certificate\'s', async () => {
    const ca = await createTlsCa();
    const other = await createTlsCa();
    for (const hosts of [[], ['bad host'], ['-x.example'], ['a..b'], ['x'.repeat(64)]]) {
      await expect(createTlsCertificate(ca, { hosts })).rejects.toMatchObject({ code: 'invalid_value' });
    }
    await expect(createTlsCertificate(ca, { hosts: ['ok'], days: 0 })).rejects.toMatchObject({ code: 'invalid_value' });
    await expect(createTlsCertificate(ca, { hosts: ['ok'], days: TLS_MAX_DAYS + 1 })).rejects.toMatchObject({ code: 'invalid_value' });
    await expect(createTlsCa({ commonName: 'a,b' })).rejects.toMatchObject({ code: 'invalid_value' });
    const leaf = await createTlsCertificate(ca, { hosts: ['ok'] });
    await expect(createTlsCertificate(leaf, { hosts: ['x'] })).rejects.toMatchObject({ code: 'invalid_value', message: expect.stringContaining('not a CA') });
    await expect(createTlsCertificate({ certificatePem: ca.certificatePem, privateKeyPem: other.privateKeyPem }, { hosts: ['x'] })).rejects.toMatchObject({
      code: 'invalid_value',
      message: expect.stringContaining('does not match'),
    });
    await expect(createTlsCertificate({ certificatePem: 'garbage', privateKeyPem: ca.privateKeyPem }, { hosts: ['x'] })).rejects.toMatchObject({ code: 'invalid_encoding' });
    expect(tlsHostName('[::1]')).toEqual({ type: 'ip', value: '::1' });
    expect(tlsHostName('*.Example.org')).toEqual({ type: 'dns', value: '*.example.org' });
  });

  it('never prints a private key: JSON.stringify, console.log and util.inspect redact it; reading it by name still works', async () => {
    const ca = await createTlsCa();
    const leaf = await createTlsCertificate(ca, { hosts: ['localhost'] });
    for (const made of [ca, leaf]) {
      const body = made.privateKeyPem.split('\n')[1]!; // the first line of base64 key material
      expect(made.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      expect(body.length).toBeGreaterThan(40);
      const printed = [
        JSON.stringify(made),
        JSON.stringify({ made }),
        format('%o', made), // console.log's formatting
        format(made),
        inspect(made, { showHidden: true, depth: 5 }),
        inspect({ made }, { showHidden: true, depth: 5 }),
        String(made),
        Object.keys(made).join(','),
        JSON.stringify({ ...made }),
      ];
      for (const text of printed) {
        expect(text).not.toContain('PRIVATE KEY');
        expect(text).not.toContain(body);
      }
      expect(JSON.parse(JSON.stringify(made))).toEqual({ certificatePem: made.certificatePem, privateKeyPem: '[redacted]', sha256: made.sha256, notAfter: made.notAfter.toISOString() });
      expect(inspect(made)).toContain("privateKeyPem: '[redacted]'");
      expect(Object.keys(made)).toEqual(['certificatePem', 'sha256', 'notAfter']);
    }
    // What the CLI does: the key read by name and written out; a CA made here signs the next certificate.
    expect(createPrivateKey(leaf.privateKeyPem).asymmetricKeyType).toBe('ec');
    const next = await createTlsCertificate(ca, { hosts: ['other'] });
    expect(new X509Certificate(next.certificatePem).checkIssued(new X509Certificate(ca.certificatePem))).toBe(true);
  });

  it('serves a TLS 1.3 handshake that a client trusting only the CA accepts for the right name', async () => {
    const ca = await createTlsCa();
    const leaf = await createTlsCertificate(ca, { hosts: ['localhost', '127.0.0.1'] });
    const server = createServer({ cert: leaf.certificatePem, key: leaf.privateKeyPem, minVersion: 'TLSv1.3' }, (s) => s.end('ok'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    const handshake = (servername: string): Promise<string> =>
      new Promise((resolve) => {
        const socket: TLSSocket = connect({ host: '127.0.0.1', port, ca: ca.certificatePem, servername });
        socket.once('secureConnect', () => {
          resolve(socket.getProtocol() ?? 'none');
          socket.destroy();
        });
        socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
    try {
      expect(await handshake('localhost')).toBe('TLSv1.3');
      expect(await handshake('other.example')).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    } finally {
      server.close();
    }
  });
});
