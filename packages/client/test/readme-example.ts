// An agent program: planner-1 hands worker-1 a task through a running gateway and gets worker-1's verified
// receipt. Both agents were enrolled in the checkout with
// `npm run -s registry -- agent register <id> --type <type> --json > <id>.json` (the JSON names the key file the CLI
// wrote, by its absolute path); the trust bundle is `npm run -s registry -- trust-bundle > trust-bundle.json`.
// Run it from a directory inside the checkout ("Using the SDK from your own code" below):
//   PARLEY_GATEWAY=127.0.0.1:7443 PARLEY_GATEWAY_ID=gw-1 PARLEY_REGISTRY=127.0.0.1:50051 \
//   PARLEY_AGENTS_DIR=./agents PARLEY_STATE_KEY_FILE=./state.key PARLEY_TRUST_BUNDLE=./trust-bundle.json \
//   node --conditions=@parley/source --import tsx agent.ts
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, fileStateStore, stateKeyFile, verifyReceiptSignature } from '../src/index.js';
import { createCrypto, fromBase64Url } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';
import { MessageType } from '@parley/proto';

const setting = (name: string): string => process.env[name] ?? assert.fail(`${name} is not set`);
const agentsDir = setting('PARLEY_AGENTS_DIR');
const crypto = await createCrypto();
const trustBundle = TrustBundle.fromJSON(crypto, readFileSync(setting('PARLEY_TRUST_BUNDLE'), 'utf8'));
const ca = process.env['PARLEY_GATEWAY_CA']; // PEM; required unless the gateway is on loopback
// What the agents' state files are sealed under: made (0600) on the first run and read on the next ones, which
// continue from the state (a new key each run could not open it). Keep it apart from the state files.
const stateKey = await stateKeyFile(setting('PARLEY_STATE_KEY_FILE'), { crypto });

/** What `agent register --json` printed: the certificate, and the key file it wrote. */
function identityOf(agentId: string) {
  const registered = JSON.parse(readFileSync(join(agentsDir, `${agentId}.json`), 'utf8')) as { certificate: { encoded: string }; key_file: string };
  const { seed } = JSON.parse(readFileSync(registered.key_file, 'utf8')) as { seed: string };
  const certificate = decodeCertificate(fromBase64Url(registered.certificate.encoded));
  return { agentId, signingKey: crypto.ed25519.keyPairFromSeed(fromBase64Url(seed)).secretKey, certificate };
}

const online = (agentId: string) =>
  connect({
    gateway: setting('PARLEY_GATEWAY'),
    expectedGatewayId: setting('PARLEY_GATEWAY_ID'), // required: the gateway this agent means to reach (§10.2)
    identity: identityOf(agentId),
    trustBundle, // where trust starts; then the registry's signed bundle is followed (§15.9)
    registry: { address: setting('PARLEY_REGISTRY') },
    ...(ca === undefined ? {} : { tls: { rootCerts: readFileSync(ca) } }),
    stateStore: fileStateStore(join(agentsDir, `${agentId}.state`)), // durable outbox, inbox, sessions
    stateKey,
    crypto,
    onEvent: (e) => {
      if (e.kind === 'security') console.warn(e);
    },
  });
const planner = await online('planner-1');
const worker = await online('worker-1');

// worker-1's application: handles a message, then acknowledges it.
const handled = (async () => {
  for await (const msg of worker.messages()) {
    console.log(`${msg.from} → worker-1: ${JSON.stringify(msg.content)}`); // msg.redelivered: handed over before a crash
    await msg.ack(); // only now: receipt signed, gateway delivery acked
    return msg;
  }
  throw new Error('worker-1 stopped before a message arrived');
})();

// Resolves with worker-1's verified receipt — signed after ITS application acknowledged the message.
const receipt = await planner.send('worker-1', MessageType.TASK_ASSIGNMENT, { task: 'reindex' }, { id: 'order-42' });
const msg = await handled;
assert.deepEqual(receipt.messageHash, msg.messageHash);
assert.ok(verifyReceiptSignature(crypto, receipt, identityOf('worker-1').certificate.identityPublicKey)); // anyone can check it later
console.log(`receipt: ${receipt.recipientId} at ${new Date(Number(receipt.receivedAtMs)).toISOString()}`);

await planner.close();
await worker.close();
