/**
 * No TLS server name (SNI) for an IP address. grpc-js sends the target's host
 * as the server name whatever it is, and Node warns on every process that
 * does so for an IP address (`[DEP0123] Setting the TLS ServerName to an IP
 * address is not permitted by RFC 6066`, on stderr: a non-JSON line in JSON
 * logs). RFC 6066 §3 allows host names only, so for an IP target — or an IP
 * `grpc.ssl_target_name_override` — no server name is sent. Nothing is lost:
 * Node checks the certificate against the connection's host (its IP SANs)
 * when no server name is given, and grpc-js still checks it against an
 * override; a DNS name is sent as before.
 */
import { isIP } from 'node:net';
import type { ChannelCredentials } from '@grpc/grpc-js';

/**
 * The same credentials, whose TLS connections send no server name when it
 * would be an IP address. Insecure credentials are returned as they are.
 *
 * grpc-js keeps the `tls.connect` options of a channel on the connector its
 * credentials make (`connectionOptions`); the server name is removed there.
 * A connector of another shape (another grpc-js) is left alone.
 *
 * @param credentials `credentials.createSsl(...)` (or any other)
 * @returns credentials for {@link createClient} (it applies this itself)
 */
export function withoutIpServerName(credentials: ChannelCredentials): ChannelCredentials {
  if (!credentials._isSecure()) return credentials;
  // Inherits everything else (compose, _equals, the TLS settings) from the original.
  const wrapped = Object.create(credentials) as ChannelCredentials;
  wrapped._createSecureConnector = (...args) => {
    const connector = credentials._createSecureConnector(...args);
    const options = (connector as { connectionOptions?: { servername?: unknown } }).connectionOptions;
    if (options !== undefined && typeof options.servername === 'string' && isIP(options.servername) !== 0) delete options.servername;
    return connector;
  };
  return wrapped;
}
