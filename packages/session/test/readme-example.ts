import assert from 'node:assert/strict';
import { createCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import { MessageType, type HandshakeFrame } from '@parley/proto';
import { SessionManager, verifyDisclosure, type SessionManagerEvent } from '../src/index.js';

const crypto = await createCrypto();

// What the registry gives every agent: a certificate from its issuer, the trust bundle, the revocation list.
const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
const revocations = new MemoryRevocationSet({ maxAgeMs: 60_000 });
revocations.replace([], 0, Date.now()); // the registry's signed list: version 0, nothing revoked yet
const identity = (agentId: string, agentType: string) => {
  const key = crypto.ed25519.generateKeyPair();
  const certificate = issueCertificate(crypto, issuer, {
    agentId,
    identityPublicKey: key.publicKey,
    agentType,
    capabilities: ['msg:send'],
    validFromMs: Date.now(),
    validUntilMs: Date.now() + 24 * 60 * 60 * 1000,
  });
  return { agentId, signingKey: key.secretKey, certificate };
};

// HandshakeFrames travel through the gateway; here, a stand-in that hands each frame to its recipient.
const managers = new Map<string, SessionManager>();
const gateway = { send: (frame: HandshakeFrame) => void managers.get(frame.recipientId)?.handleFrame(frame) };
const events: SessionManagerEvent[] = [];
const plannerIdentity = identity('planner-1', 'planner');
for (const agent of [plannerIdentity, identity('worker-7', 'worker')]) {
  const manager = new SessionManager({
    crypto,
    handshake: { identity: agent, trustBundle, revocations },
    transport: { sendFrame: (frame) => gateway.send(frame) },
    timeouts: { timeoutMinutes: 30, maxDurationMinutes: 1440, warningThresholdMinutes: 5, autoRenew: true },
    onEvent: (event) => events.push(event), // security and lifecycle events, never keys
  });
  managers.set(agent.agentId, manager);
}
const planner = managers.get('planner-1')!;
const worker = managers.get('worker-7')!;

// The first seal runs the Noise XX handshake with worker-7, then seals in the new session.
const { envelope, messageHash } = await planner.seal('worker-7', {
  type: MessageType.HANDOFF_REQUEST,
  content: { task: 'reindex', deadline: '2026-12-01' },
});
// … on the other side:
const { content, payload, disclosure } = worker.open(envelope); // throws SessionError with a stable code
assert.deepEqual(content, { task: 'reindex', deadline: '2026-12-01' });
assert.equal(payload.type, MessageType.HANDOFF_REQUEST);
// worker-7 can prove to anyone what planner-1 sent, revealing no session key (PROTOCOL §6.5).
const proven = verifyDisclosure(crypto, { envelope, senderCertificate: plannerIdentity.certificate, disclosure }, { trustBundle });
assert.deepEqual(proven.messageHash, messageHash);
assert.equal(events.filter((e) => e.kind === 'established').length, 2);
assert.throws(() => worker.open(envelope), /replay/); // the same envelope twice is a replay

planner.close();
worker.close();
