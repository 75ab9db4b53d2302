// Noise spec rev. 34 conformance: reproduces every Noise_XX vector in
// ../shared/vectors/noise-xx.json (cacophony and snow), message by message,
// plus the handshake hash where the source gives it.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { createCrypto, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { HandshakeState, parseProtocolName, type HandshakeResult } from '../src/noise/index.js';

const VECTORS_PATH = fileURLToPath(new URL('../../../../shared/vectors/noise-xx.json', import.meta.url));

interface NoiseVector {
  protocol_name: string;
  init_prologue: string;
  init_static: string;
  init_ephemeral: string;
  resp_prologue: string;
  resp_static: string;
  resp_ephemeral: string;
  handshake_hash?: string;
  source?: string;
  messages: { payload: string; ciphertext: string }[];
}

const present = existsSync(VECTORS_PATH);
if (!present && process.env['CI'] === 'true') {
  // In CI the file must be there: fail rather than skip.
  throw new Error(`Noise vectors missing at ${VECTORS_PATH}; CI requires them`);
}
const vectors: NoiseVector[] = present
  ? (JSON.parse(readFileSync(VECTORS_PATH, 'utf8')) as { vectors: NoiseVector[] }).vectors
  : [];

describe.runIf(present)('Noise XX vectors (../shared/vectors/noise-xx.json)', () => {
  let crypto: ParleyCrypto;
  beforeAll(async () => {
    crypto = await createCrypto();
  });

  it('has vectors for the protocol Parley speaks', () => {
    expect(vectors.some((v) => v.protocol_name === 'Noise_XX_25519_ChaChaPoly_BLAKE2b')).toBe(true);
    expect(vectors.length).toBeGreaterThanOrEqual(4);
  });

  for (const [i, v] of vectors.entries()) {
    it(`#${i} ${v.protocol_name} (${v.source ?? 'unknown source'})`, () => {
      const protocol = parseProtocolName(v.protocol_name, crypto);
      const initiator = new HandshakeState(crypto, {
        protocol,
        initiator: true,
        prologue: fromHex(v.init_prologue),
        staticKeyPair: crypto.x25519.keyPairFromSecret(fromHex(v.init_static)),
        fixedEphemeralKeyForTestingOnly: crypto.x25519.keyPairFromSecret(fromHex(v.init_ephemeral)),
      });
      const responder = new HandshakeState(crypto, {
        protocol,
        initiator: false,
        prologue: fromHex(v.resp_prologue),
        staticKeyPair: crypto.x25519.keyPairFromSecret(fromHex(v.resp_static)),
        fixedEphemeralKeyForTestingOnly: crypto.x25519.keyPairFromSecret(fromHex(v.resp_ephemeral)),
      });

      let iResult: HandshakeResult | undefined;
      let rResult: HandshakeResult | undefined;
      const handshakeLength = protocol.pattern.messages.length;
      for (const [m, msg] of v.messages.entries()) {
        const fromInitiator = m % 2 === 0;
        const payload = fromHex(msg.payload);
        if (m < handshakeLength) {
          const [writer, reader] = fromInitiator ? [initiator, responder] : [responder, initiator];
          const written = writer.writeMessage(payload);
          expect(toHex(written.message), `handshake message ${m}`).toBe(msg.ciphertext);
          const read = reader.readMessage(written.message);
          expect(toHex(read.payload)).toBe(msg.payload);
          if (written.result) [iResult, rResult] = fromInitiator ? [written.result, read.result] : [read.result, written.result];
        } else {
          if (!iResult || !rResult) throw new Error('handshake did not complete');
          const [sender, receiver] = fromInitiator ? [iResult.send, rResult.receive] : [rResult.send, iResult.receive];
          const ciphertext = sender.encryptWithAd(new Uint8Array(0), payload);
          expect(toHex(ciphertext), `transport message ${m}`).toBe(msg.ciphertext);
          expect(toHex(receiver.decryptWithAd(new Uint8Array(0), ciphertext))).toBe(msg.payload);
        }
      }
      expect(iResult && rResult).toBeTruthy();
      expect(toHex(iResult!.handshakeHash)).toBe(toHex(rResult!.handshakeHash));
      if (v.handshake_hash) expect(toHex(iResult!.handshakeHash)).toBe(v.handshake_hash);
      expect(toHex(iResult!.remoteStaticKey)).toBe(toHex(crypto.x25519.keyPairFromSecret(fromHex(v.resp_static)).publicKey));
    });
  }
});
