/**
 * Handshake patterns held as data (Noise spec rev. 34, §7). Parley uses XX:
 *
 *   XX:
 *     -> e
 *     <- e, ee, s, es
 *     -> s, se
 */

export type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss';

export interface HandshakePattern {
  readonly name: string;
  /** Pre-message patterns (§7.1): tokens known before the handshake, per side. */
  readonly initiatorPreMessage: readonly Token[];
  readonly responderPreMessage: readonly Token[];
  /** Message patterns; even indexes are sent by the initiator. */
  readonly messages: readonly (readonly Token[])[];
}

/** §7.5 interactive pattern XX. */
export const XX: HandshakePattern = Object.freeze<HandshakePattern>({
  name: 'XX',
  initiatorPreMessage: [],
  responderPreMessage: [],
  messages: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']],
});

export const PATTERNS: Readonly<Record<string, HandshakePattern>> = Object.freeze({ XX });
