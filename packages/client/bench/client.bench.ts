// client benchmark: the CPU the SDK spends per application message below the
// gateway stream, both ends in one process, beside the floor measured in the
// same run and sampled alternately (round by round) so machine drift hits both:
//
//   SDK: one 1 KiB message, sender and recipient, as an agent handles it —
//     sender   SessionManager.sealIn (payload encoding, commitment, AEAD, HMAC tag,
//              Ed25519 signature, protobuf envelope), the envelope encoded for the wire;
//     recipient the envelope decoded, its message hash taken for the inbox lookup
//              (messageHashOf), SessionManager.open with that hash (every §8.1 check),
//              the content as JSON, the receipt signed (signReceipt) and encoded;
//     sender   the receipt decoded and its signature verified (verifyReceiptSignature).
//   floor: the cryptography that message needs, on raw buffers of the same sizes
//     through crypto-core (libsodium): ChaCha20-Poly1305 seal + open, HMAC-SHA256
//     tag + verify, BLAKE3 of the commitment input, the ciphertext and the signed
//     bytes on each side, two Ed25519 signatures (envelope, receipt) and two
//     verifications. Nothing of Parley can go below it.
//
// The agent's own bookkeeping (outbox, inbox, the gateway stream) is measured end to
// end by apps/gateway's bench ("the 100 SDK agents' process … µs CPU per message").
//
// Figures are per CPU second of this process (process.cpuUsage), not per wall-clock second.
// BENCH_ROUNDS (default 5) rounds of BENCH_ROUND_MS (default 300) per case, median.
import { printTable, type Sample } from '@parley/bench-harness';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import { DeliveryReceiptSchema, MessageType, SecureMessageSchema, fromBinary, toBinary, type HandshakeFrame } from '@parley/proto';
import { signReceipt, verifyReceiptSignature } from '@parley/protocol';
import { SessionManager, messageHashOf, type LocalIdentity, type OutgoingMessage } from '@parley/session';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const ROUND_MS = Number(process.env['BENCH_ROUND_MS'] ?? 300);
const DAY = 86_400_000;

const crypto: ParleyCrypto = await createCrypto();
const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
const revocations = new MemoryRevocationSet({ maxAgeMs: 60 * 60_000 });
revocations.apply([], 0, Date.now());

function agent(agentId: string): LocalIdentity & { publicKey: Uint8Array } {
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, {
    agentId,
    identityPublicKey: keyPair.publicKey,
    agentType: 'worker',
    capabilities: ['tasks:read', 'tasks:write'],
    validFromMs: now - DAY,
    validUntilMs: now + 30 * DAY,
  });
  return { agentId, signingKey: keyPair.secretKey, certificate, publicKey: keyPair.publicKey };
}

const alice = agent('planner-alice');
const bob = agent('worker-bob');
// Two managers wired back to back: a frame one sends is handled by the other (the gateway's relay, minus the network).
const managers: { a?: SessionManager; b?: SessionManager } = {};
const manager = (identity: LocalIdentity, peer: () => SessionManager): SessionManager =>
  new SessionManager({
    crypto,
    handshake: { identity, trustBundle, revocations },
    transport: { sendFrame: (frame: HandshakeFrame) => void peer().handleFrame(frame).catch(() => undefined) },
  });
managers.a = manager(alice, () => managers.b!);
managers.b = manager(bob, () => managers.a!);
const sender = managers.a;
const recipient = managers.b;
const session = await sender.session(bob.agentId);

// 1 KiB of content, as the gateway bench sends.
const MESSAGE: OutgoingMessage = { type: MessageType.TASK_ASSIGNMENT, content: 'x'.repeat(1024) };

let receivedAtMs = Date.now();
async function sdkMessage(): Promise<void> {
  const sealed = await sender.sealIn(session, MESSAGE);
  const wire = toBinary(SecureMessageSchema, sealed.envelope);
  // recipient
  const envelope = fromBinary(SecureMessageSchema, wire);
  const hash = messageHashOf(crypto, envelope);
  const opened = recipient.open(envelope, hash);
  if (opened.content !== MESSAGE.content) throw new Error('bench: content differs');
  const receipt = signReceipt(crypto, bob, { messageHash: hash.hash, senderId: envelope.senderId, receivedAtMs: receivedAtMs++ });
  const receiptWire = toBinary(DeliveryReceiptSchema, receipt);
  // sender
  if (!verifyReceiptSignature(crypto, fromBinary(DeliveryReceiptSchema, receiptWire), bob.publicKey)) throw new Error('bench: receipt does not verify');
}

// The floor's inputs, sized as the SDK message's: ciphertext, commitment input, signed bytes, receipt layout.
const probe = await sender.sealIn(session, MESSAGE);
recipient.open(probe.envelope);
const aeadKey = crypto.randomKey('aead');
const macKey = crypto.randomKey('generic');
const plaintext = crypto.randomBytes(probe.envelope.encryptedPayload.length - 16);
const ad = crypto.randomBytes(160);
const commitmentInput = crypto.randomBytes(plaintext.length + 40);
const macInput = crypto.randomBytes(probe.envelope.encryptedPayload.length + 180);
const signedBytes = crypto.randomBytes(260);
const receiptLayout = crypto.randomBytes(120);
let counter = 0n;
function floor(): void {
  const n = counter++;
  // sender
  const c = crypto.blake3(commitmentInput);
  const ct = crypto.aead.seal(aeadKey, n, plaintext, ad);
  const tag = crypto.hmacSha256(macKey, macInput);
  crypto.blake3(ct);
  const sig = crypto.ed25519.sign(signedBytes, alice.signingKey);
  crypto.blake3(signedBytes);
  // recipient
  crypto.blake3(ct);
  if (!crypto.ed25519.verify(sig, signedBytes, alice.publicKey)) throw new Error('bench: floor signature');
  crypto.blake3(signedBytes);
  if (!crypto.hmacSha256Verify(macKey, macInput, tag)) throw new Error('bench: floor tag');
  crypto.aead.open(aeadKey, n, ct, ad);
  if (crypto.blake3(commitmentInput)[0] !== c[0]) throw new Error('bench: floor commitment');
  const receiptSig = crypto.ed25519.sign(receiptLayout, bob.signingKey);
  // sender
  if (!crypto.ed25519.verify(receiptSig, receiptLayout, bob.publicKey)) throw new Error('bench: floor receipt');
}

/** One round: operations per second of this process's CPU time (user + system), not of wall-clock time, so other processes on a shared machine weigh less. */
async function round(fn: () => unknown, ms: number): Promise<number> {
  let ops = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  while (performance.now() - start < ms) {
    const r = fn();
    if (r instanceof Promise) await r;
    ops += 1;
  }
  const cpu = process.cpuUsage(cpu0);
  return (ops * 1e6) / (cpu.user + cpu.system);
}

function median(values: readonly number[]): number {
  const s = [...values].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const cases = [sdkMessage, floor];
for (const c of cases) await round(c, Math.min(200, ROUND_MS)); // warm-up (JIT)
const results: number[][] = cases.map(() => []);
for (let r = 0; r < ROUNDS; r++) for (const [i, c] of cases.entries()) results[i]!.push(await round(c, ROUND_MS));
const [sdk, raw] = results.map((rs): Sample => {
  const opsPerSec = median(rs);
  return { opsPerSec, usPerOp: 1e6 / opsPerSec };
});

console.log(`node ${process.version}; crypto-core backends: ${Object.entries(crypto.backends).map(([k, v]) => `${k}=${v}`).join(', ')}; rounds ${ROUNDS} × ${ROUND_MS} ms per case, alternated, median`);
printTable('One 1 KiB message, both ends in one process: seal → wire → open → receipt signed → receipt verified', 'crypto floor', [
  { label: 'messages per CPU second', ours: sdk!, peer: raw!, unit: 'ops/s' },
  { label: 'CPU per message', ours: sdk!, peer: raw!, unit: 'µs' },
]);
console.log(`SDK overhead above the cryptography: ${(sdk!.usPerOp - raw!.usPerOp).toFixed(1)} µs per message (${((100 * (sdk!.usPerOp - raw!.usPerOp)) / sdk!.usPerOp).toFixed(0)} % of the SDK's CPU)`);
sender.close();
recipient.close();
