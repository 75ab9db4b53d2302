export { CipherState, MAX_NONCE } from './cipher-state.js';
export { SymmetricState } from './symmetric-state.js';
export { HandshakeState, NOISE_MAX_MESSAGE_BYTES } from './handshake-state.js';
export type { HandshakeOptions, HandshakeResult, WriteResult, ReadResult, HandshakeStatus } from './handshake-state.js';
export { XX, PATTERNS } from './patterns.js';
export type { HandshakePattern, Token } from './patterns.js';
export { parseProtocolName, PARLEY_NOISE_PROTOCOL } from './protocol.js';
export type { NoiseProtocol, NoiseHash } from './protocol.js';
