import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCrypto } from '@parley/crypto-core';
import { MessageType } from '@parley/proto';
import { AuditLog, checkConsistency, checkInclusion, openFileStore, verifyChain } from '../src/index.js';

const crypto = await createCrypto();
const writer = crypto.ed25519.generateKeyPair(); // the gateway's audit key
const path = join(mkdtempSync(join(tmpdir(), 'audit-')), 'audit.log');

// Writer: append-only file, fdatasync every 256 entries or 20 ms.
const store = await openFileStore(crypto, path, { fsync: { entries: 256, ms: 20 } });
const log = await AuditLog.open(crypto, { store, writer });
for (let i = 0; i < 10; i++) {
  await log.append({
    messageHash: crypto.blake3(new TextEncoder().encode(`envelope ${i}`)), // PROTOCOL §6.6 in real use
    senderId: 'planner-1',
    recipientId: 'coder-2',
    messageType: MessageType.UNSPECIFIED, // a relay cannot see the type
    outcome: 'routed',
  });
}
const head7 = log.treeHead(7); // signed: "my log had 7 entries with this root"
const head10 = log.treeHead();

// A third party with only the writer's public key, proofs and heads:
checkInclusion(crypto, { proof: log.inclusionProof(3), head: head10, entry: await log.entry(3), keys: writer.publicKey });
checkConsistency(crypto, { proof: log.consistencyProof(7, 10), oldHead: head7, newHead: head10, keys: writer.publicKey });
await log.close();

// An auditor: verify the whole file, read-only, against the latest head. A file with a damaged record that is
// not a torn tail is refused by this open (`malformed`, naming the record and its offset), never read as a
// shorter log; to look at the records before the damage, open with `onCorruption: 'inspect'` (verifyChain then
// reports the damage as a break at that index).
const reader = await openFileStore(crypto, path, { readOnly: true });
const result = await verifyChain(crypto, reader.read(0, await reader.size()), { keys: writer.publicKey, head: head10 });
assert.equal(result.ok, true);
// On a tampered log: { ok: false, index: 4, reason: 'modified', detail: '…' }
await reader.close();
