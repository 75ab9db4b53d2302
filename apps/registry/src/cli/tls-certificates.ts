/** The X.509 functions `tls init|issue` use, loaded on demand by ./tls.ts (crypto-core's subpath, ECDSA P-256 by WebCrypto). */
export { createTlsCa, createTlsCertificate, tlsHostName } from '@parley/crypto-core/tls';
