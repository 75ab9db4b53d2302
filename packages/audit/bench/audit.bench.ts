// @parley/audit benchmark. Every figure sits beside a peer measured in the same
// run, as a ratio: the raw cryptography an entry needs, done directly through
// crypto-core with nothing else (layout + Ed25519 + the two BLAKE3 hashes).
//
//   1. appends/s to the file (fsync batched, and fsync per entry) and to PostgreSQL
//      (DATABASE_URL, else PGlite in memory) vs signing + hashing the same entries;
//   2. chain verification MB/s over AUDIT_BENCH_ENTRIES entries (default 1,000,000)
//      read from a file vs Ed25519-verify + hashing alone;
//   1b. reopening a log of AUDIT_BENCH_REOPEN entries (default 50,000; PostgreSQL with DATABASE_URL, else
//      PGlite) from its latest signed checkpoint vs reading and verifying every entry (a gateway restart);
//   3. inclusion-proof generation and verification at that size vs the raw
//      BLAKE3 node hashes a proof of that depth needs.
//
// The large log is generated once (Ed25519 signing dominates: ~30 s for 1M) and
// cached in the OS temp directory as parley-audit-bench-<N>.log; delete it to
// regenerate. AUDIT_BENCH_ENTRIES=100000 gives a quick run.
import { existsSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as nodeCrypto from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { measure, printTable, type Row, type Sample } from '@parley/bench-harness';
import { concatBytes, createCrypto, layout, u32be } from '@parley/crypto-core';
import { AuditMessageSchema, create, MessageType } from '@parley/proto';
import pg from 'pg';
import {
  AuditLog,
  encodeEntry,
  FILE_MAGIC,
  merkleHasher,
  MerkleTree,
  openFileStore,
  openPostgresStore,
  verifyChain,
  verifyInclusionProof,
  writerKeyId,
  type AuditEntryFields,
  type AuditStore,
} from '../src/index.js';

const N = Number(process.env['AUDIT_BENCH_ENTRIES'] ?? 1_000_000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const crypto = await createCrypto();
const seed = new Uint8Array(32).fill(0x5e);
const writer = crypto.ed25519.keyPairFromSeed(seed);
const keyIdBytes = writerKeyId(crypto, writer.publicKey);
const scratch = join(tmpdir(), `parley-audit-bench-${process.pid}`);

function fields(i: number): AuditEntryFields {
  const messageHash = new Uint8Array(32);
  new DataView(messageHash.buffer).setUint32(0, i);
  return {
    messageHash,
    senderId: `agent-${i % 1000}`,
    recipientId: `agent-${(i * 7) % 1000}`,
    messageType: MessageType.UNSPECIFIED,
    outcome: i % 10 === 0 ? 'queued' : 'routed',
    timestampMs: 1_767_225_600_000 + i,
  };
}

const LEAF_PREFIX = Uint8Array.of(0);

/** The raw work of writing one entry: its layout, one Ed25519 signature, the entry hash and the leaf hash. */
const prev = new Uint8Array(32);
function rawWrite(i: number): Uint8Array {
  const f = fields(i);
  const body = layout('parley/v1/audit-entry')
    .u64(i)
    .fixed(f.messageHash, 32)
    .str(f.senderId)
    .str(f.recipientId)
    .i64(f.timestampMs!)
    .u32(f.messageType)
    .str(f.outcome)
    .fixed(prev, 32)
    .fixed(keyIdBytes, 16)
    .bytes();
  const sig = crypto.ed25519.sign(body, writer.secretKey);
  crypto.blake3(layout('parley/v1/audit-entry-hash').var(body).fixed(sig, 64).bytes());
  return crypto.blake3(concatBytes(LEAF_PREFIX, u32be(body.length), body, sig));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Alternates async batches (A B A B …); returns the median ops/s of each. */
async function alternate(cases: { batch: number; run: (from: number, count: number) => Promise<unknown> }[]): Promise<Sample[]> {
  const results: number[][] = cases.map(() => []);
  const next = cases.map(() => 0);
  for (const [i, c] of cases.entries()) {
    await c.run(next[i]!, Math.min(50, c.batch)); // warm-up
    next[i]! += Math.min(50, c.batch);
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, c] of cases.entries()) {
      const t0 = performance.now();
      await c.run(next[i]!, c.batch);
      results[i]!.push((c.batch * 1000) / (performance.now() - t0));
      next[i]! += c.batch;
    }
  }
  return results.map((r) => {
    const opsPerSec = median(r);
    return { opsPerSec, usPerOp: 1e6 / opsPerSec };
  });
}

/** Appends one after another, or (concurrent) all of a batch at once, as a gateway's many streams do. */
async function appendRow(label: string, store: AuditStore, batch: number, concurrent = false): Promise<Row> {
  const log = await AuditLog.open(crypto, { store, writer });
  const sequential = async (from: number, count: number): Promise<void> => {
    for (let i = from; i < from + count; i++) await log.append(fields(i));
  };
  const together = async (from: number, count: number): Promise<void> => {
    await Promise.all(Array.from({ length: count }, (_, k) => log.append(fields(from + k))));
  };
  const [ours, peer] = await alternate([
    { batch, run: concurrent ? together : sequential },
    { batch, run: async (from, count) => { for (let i = from; i < from + count; i++) rawWrite(i); } },
  ]);
  await log.close();
  return { label, unit: 'ops/s', ours: ours!, peer: peer! };
}

console.log(`@parley/audit bench — node ${process.version}, crypto backends: ed25519=${crypto.backends.ed25519}, blake3=${crypto.backends.blake3}`);
console.log(`peer = the raw per-entry cryptography through crypto-core alone (layout, Ed25519, BLAKE3); ratio = ours / peer`);

// 1. Appends --------------------------------------------------------------------------------------
rmSync(scratch, { recursive: true, force: true });
await (await import('node:fs/promises')).mkdir(scratch, { recursive: true });
const appendRows: Row[] = [];
appendRows.push(await appendRow('file, fsync batched (256 entries / 20 ms)', await openFileStore(crypto, join(scratch, 'batched.log'), { fsync: { entries: 256, ms: 20 } }), 2000));
appendRows.push(await appendRow('file, fsync every entry', await openFileStore(crypto, join(scratch, 'always.log')), 200));
const url = process.env['DATABASE_URL'];
if (url !== undefined && url !== '') {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  const table = `parley_audit_bench_${process.pid}`;
  try {
    appendRows.push(await appendRow('PostgreSQL (pg.Pool, local server)', await openPostgresStore(crypto, pool, { table }), 500));
    appendRows.push(await appendRow('PostgreSQL, 500 concurrent (group commit)', await openPostgresStore(crypto, pool, { table: `${table}_g` }), 500, true));
  } finally {
    for (const t of [table, `${table}_g`]) {
      await pool.query(`DROP TABLE IF EXISTS ${t}`);
      await pool.query(`DROP TABLE IF EXISTS ${t}_checkpoints`);
      await pool.query(`DROP FUNCTION IF EXISTS ${t}_append_only()`);
    }
    await pool.end();
  }
} else {
  const db = new PGlite();
  appendRows.push(await appendRow('PGlite in memory (no DATABASE_URL)', await openPostgresStore(crypto, db), 500));
  appendRows.push(await appendRow('PGlite, 500 concurrent (group commit)', await openPostgresStore(crypto, db, { table: 'parley_audit_g' }), 500, true));
  await db.close();
}
printTable('Appends: AuditLog.append (validate, sign, hash, store, extend tree) vs raw sign + hash per entry', 'raw crypto', appendRows);
rmSync(scratch, { recursive: true, force: true });

// 1b. Reopening a log (a restart): from its latest signed checkpoint vs reading and verifying every entry -------
{
  const R = Number(process.env['AUDIT_BENCH_REOPEN'] ?? 50_000);
  const pool = url !== undefined && url !== '' ? new pg.Pool({ connectionString: url, max: 4 }) : undefined;
  const lite = pool === undefined ? new PGlite() : undefined;
  const client = pool ?? lite!;
  const table = `parley_audit_reopen_${process.pid}`;
  try {
    const log = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer, proofs: false });
    for (let i = 0; i < R; i += 500) await Promise.all(Array.from({ length: Math.min(500, R - i) }, (_, k) => log.append(fields(i + k))));
    await log.append(fields(R)); // one entry past the last checkpoint taken while appending
    const withCheckpoints = async (): Promise<number> => {
      const t0 = performance.now();
      const l = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table, migrate: false }), writer, proofs: false, checkpointEvery: 0 });
      if (l.size !== R + 1 || l.opening.checkpointSize === 0) throw new Error('bench: the reopened log did not adopt a checkpoint');
      return performance.now() - t0;
    };
    const everyEntry = async (): Promise<number> => {
      const store = await openPostgresStore(crypto, client, { table, migrate: false });
      const blind = Object.assign(Object.create(store) as AuditStore, { checkpoints: undefined, size: () => store.size(), read: (a: number, b: number) => store.read(a, b), readEncoded: (a: number, b: number) => store.readEncoded(a, b) });
      const t0 = performance.now();
      const l = await AuditLog.open(crypto, { store: blind, writer, proofs: false, checkpointEvery: 0 });
      if (l.size !== R + 1 || l.opening.entriesRead !== R + 1) throw new Error('bench: the full reopen did not read every entry');
      return performance.now() - t0;
    };
    const ours: number[] = [];
    const peer: number[] = [];
    for (let r = 0; r < Math.max(1, Math.min(ROUNDS, 3)); r++) {
      ours.push(await withCheckpoints());
      peer.push(await everyEntry());
    }
    const ms = (m: number): Sample => ({ opsPerSec: 1000 / m, usPerOp: m * 1000 });
    printTable(`Reopening a log of ${(R + 1).toLocaleString('en-US')} entries (${pool === undefined ? 'PGlite in memory' : 'PostgreSQL'}), as a gateway restart does`, 'read + verify every entry', [
      { label: 'AuditLog.open from the latest checkpoint', unit: 'µs', ours: ms(median(ours)), peer: ms(median(peer)) },
    ]);
  } finally {
    if (pool !== undefined) {
      for (const t of [table, `${table}_checkpoints`]) await pool.query(`DROP TABLE IF EXISTS ${t}`);
      await pool.query(`DROP FUNCTION IF EXISTS ${table}_append_only()`);
      await pool.end();
    } else await lite!.close();
  }
}

// 2. Verification over N entries -----------------------------------------------------------------
const bigLog = join(tmpdir(), `parley-audit-bench-${N}.log`);
if (!existsSync(bigLog)) {
  // Generation only: node:crypto signs with a prepared KeyObject (Ed25519 is deterministic, so the
  // signatures are exactly crypto-core's) and records are written in bulk.
  const t0 = performance.now();
  const priv = nodeCrypto.createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
  const fh = await open(`${bigLog}.tmp`, 'w');
  await fh.write(FILE_MAGIC);
  let chunk: Buffer[] = [];
  let previous: Uint8Array = new Uint8Array(32);
  for (let i = 0; i < N; i++) {
    const entry = create(AuditMessageSchema, { ...fields(i), index: BigInt(i), timestampMs: BigInt(fields(i).timestampMs!), previousHash: previous, signerKeyId: keyIdBytes });
    const body = layout('parley/v1/audit-entry')
      .u64(i).fixed(entry.messageHash, 32).str(entry.senderId).str(entry.recipientId).i64(entry.timestampMs)
      .u32(entry.messageType).str(entry.outcome).fixed(entry.previousHash, 32).fixed(entry.signerKeyId, 16).bytes();
    entry.signature = new Uint8Array(nodeCrypto.sign(null, body, priv));
    previous = crypto.blake3(layout('parley/v1/audit-entry-hash').var(body).fixed(entry.signature, 64).bytes());
    const payload = encodeEntry(entry);
    const rec = Buffer.alloc(8 + payload.length);
    rec.writeUInt32BE(payload.length, 0);
    rec.set(payload, 4);
    rec.set(crypto.blake3(rec.subarray(0, 4 + payload.length)).subarray(0, 4), 4 + payload.length);
    chunk.push(rec);
    if (chunk.length === 10_000) {
      await fh.write(Buffer.concat(chunk));
      chunk = [];
    }
  }
  await fh.write(Buffer.concat(chunk));
  await fh.close();
  (await import('node:fs')).renameSync(`${bigLog}.tmp`, bigLog);
  console.log(`\n(generated ${N} entries in ${((performance.now() - t0) / 1000).toFixed(1)} s; cached at ${bigLog})`);
}
const fileBytes = statSync(bigLog).size;
const store = await openFileStore(crypto, bigLog, { readOnly: true });
const tree = new MerkleTree(merkleHasher(crypto));
const tv = performance.now();
const result = await verifyChain(crypto, store.read(0, await store.size()), { keys: writer.publicKey, tree });
const seconds = (performance.now() - tv) / 1000;
if (!result.ok || result.size !== N) throw new Error(`verification failed: ${JSON.stringify(result)}`);

// Peer: Ed25519 verify + entry hash + leaf hash of the same entries (layouts prepared beforehand).
const sample: { body: Uint8Array; sig: Uint8Array }[] = [];
for await (const e of store.read(0, Math.min(N, 20_000))) {
  const body = layout('parley/v1/audit-entry')
    .u64(e.index).fixed(e.messageHash, 32).str(e.senderId).str(e.recipientId).i64(e.timestampMs)
    .u32(e.messageType).str(e.outcome).fixed(e.previousHash, 32).fixed(e.signerKeyId, 16).bytes();
  sample.push({ body, sig: e.signature });
}
await store.close();
let k = 0;
const bytesPerEntry = (fileBytes - FILE_MAGIC.length) / N;
const [rawVerify] = measure([
  {
    name: 'raw',
    bytesPerOp: bytesPerEntry,
    fn: () => {
      const s = sample[k++ % sample.length]!;
      const ok = crypto.ed25519.verify(s.sig, s.body, writer.publicKey);
      crypto.blake3(layout('parley/v1/audit-entry-hash').var(s.body).fixed(s.sig, 64).bytes());
      crypto.blake3(concatBytes(LEAF_PREFIX, u32be(s.body.length), s.body, s.sig));
      return ok;
    },
  },
]);
const oursVerify: Sample = { opsPerSec: N / seconds, usPerOp: (seconds * 1e6) / N, mbPerSec: fileBytes / seconds / 1e6 };
printTable(`Chain verification, ${N.toLocaleString('en-US')} entries (${(fileBytes / 1e6).toFixed(0)} MB file, ${bytesPerEntry.toFixed(0)} B/entry): read + decode + verify + Merkle`, 'raw crypto', [
  { label: 'verifyChain from the file', unit: 'MB/s', ours: oursVerify, peer: rawVerify! },
  { label: 'verifyChain from the file (entries/s)', unit: 'ops/s', ours: oursVerify, peer: rawVerify! },
]);
console.log(`(one pass: ${seconds.toFixed(1)} s)`);

// 3. Inclusion proofs at N entries ---------------------------------------------------------------
const root = tree.root();
let j = 0;
const proofs = Array.from({ length: 1024 }, (_, i) => tree.inclusionProof(Math.floor((i * 2654435761) % N)));
const depth = proofs[0]!.path.length;
const node = new Uint8Array(65);
node[0] = 1;
const rawPath = () => {
  let h: Uint8Array = new Uint8Array(32);
  for (let d = 0; d < depth; d++) {
    node.set(h, 1);
    h = crypto.blake3(node);
  }
  return h;
};
const hasher = merkleHasher(crypto);
const [gen, rawA, ver, rawB] = measure([
  { name: 'prove', fn: () => tree.inclusionProof((j++ * 2654435761) % N) },
  { name: 'raw', fn: rawPath },
  { name: 'verify', fn: () => { const p = proofs[j++ & 1023]!; return verifyInclusionProof(hasher, p, tree.leafHash(p.leafIndex), root); } },
  { name: 'raw', fn: rawPath },
]);
printTable(`Inclusion proofs in a tree of ${N.toLocaleString('en-US')} entries (${depth} hashes per proof)`, `${depth}×BLAKE3 node`, [
  { label: 'inclusionProof (generate)', unit: 'µs', ours: gen!, peer: rawA! },
  { label: 'verifyInclusionProof', unit: 'µs', ours: ver!, peer: rawB! },
]);
