#!/usr/bin/env node
/**
 * parley-audit: verify an audit log and produce proofs from it, for operators
 * and scripts (docs/PROTOCOL.md §9, packages/audit/README.md "CLI"), on the
 * shared CLI conventions of @parley/cli-kit (help, usage errors, exit 2).
 *
 * Every command that reads a log verifies the whole chain first (with the
 * trusted writer key), so nothing is proved or signed over a broken log. Exit
 * codes: 0 ok · 1 verification failed · 2 usage error · 3 storage error.
 */
import { open, readFile, writeFile } from 'node:fs/promises';
import { EXIT_CODES, Option, UsageError, createProgram, jsonOption, runProgram, runWhenExecuted, type CliCommand, type Failure } from '@parley/cli-kit';
import { createCrypto, fromBase64Url, fromHex, toHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import {
  AuditError,
  checkConsistency,
  checkInclusion,
  consistencyProofToJson,
  inclusionProofToJson,
  isAuditError,
  MerkleTree,
  merkleHasher,
  openFileStore,
  openPostgresStore,
  proofFromJson,
  signTreeHead,
  treeHeadFromJson,
  treeHeadToJson,
  verifyChain,
  writerKeyId,
  type AuditStore,
  type ChainVerification,
  type FileStoreEvent,
  type SignedTreeHead,
} from './index.js';
import { SCHEMA_RE, chooseTable, describeChain, gatewayChains, isPgliteDataDir, openPgliteDir, type GatewayChain } from './cli-sources.js';
import type { SqlClient } from './postgres-store.js';

const PROGRAM = 'parley-audit';

/** Exit codes of parley-audit: 0 and 2 as every Parley CLI (@parley/cli-kit), 1 and 3 its own. */
export const AUDIT_EXIT_CODES = Object.freeze({ ok: EXIT_CODES.ok, failed: 1, usage: EXIT_CODES.usage, storage: 3 } as const);
const EXIT = AUDIT_EXIT_CODES;

interface Io {
  json: boolean;
  out(value: Record<string, unknown>, text: string): void;
  warn(message: string): void;
  /** What was chosen for the operator (stderr, text mode only: --json output stays one document). */
  note(message: string): void;
  warnings: string[];
}

function makeIo(json: boolean, write: Required<Streams>): Io {
  const warnings: string[] = [];
  return {
    json,
    warnings,
    out(value, text) {
      write.out(json ? JSON.stringify(warnings.length > 0 ? { ...value, warnings } : value, null, 2) : text);
    },
    warn(message) {
      warnings.push(message);
      if (!json) write.err(`${PROGRAM}: warning: ${message}\n`);
    },
    note(message) {
      if (!json) write.err(`${PROGRAM}: ${message}\n`);
    },
  };
}

const HEX64 = /^[0-9a-fA-F]{64}$/;

async function readHexKey(value: string, what: string): Promise<Uint8Array> {
  let text = value;
  if (!HEX64.test(value)) {
    try {
      text = (await readFile(value, 'utf8')).trim();
    } catch {
      throw new UsageError(`${what}: neither 64 hex characters nor a readable file: ${value}`);
    }
  }
  if (!HEX64.test(text)) throw new UsageError(`${what} must be 64 hex characters (32 bytes)`);
  return fromHex(text);
}

/** The `type` of the gateway's audit key file (apps/gateway, `audit_key_file`). */
const GATEWAY_AUDIT_KEY_TYPE = 'parley-gateway-audit-key';

/**
 * The seed in a key file's text: 64 hex characters (as keygen writes them), or
 * the gateway's audit key file, JSON `{ "version": 1, "type":
 * "parley-gateway-audit-key", "public_key": hex, "seed": base64url }`. Errors
 * never quote the file's content (it is a secret).
 */
function seedOf(crypto: ParleyCrypto, file: string, text: string): Uint8Array {
  if (HEX64.test(text)) return fromHex(text);
  if (!text.startsWith('{')) throw new UsageError(`writer key file ${file} must hold a 32-byte seed as 64 hex characters, or be a gateway audit key file (JSON)`);
  let json: { version?: unknown; type?: unknown; seed?: unknown; public_key?: unknown };
  try {
    json = JSON.parse(text) as typeof json;
  } catch {
    throw new UsageError(`writer key file ${file} is not valid JSON`);
  }
  if (json === null || typeof json !== 'object' || json.type !== GATEWAY_AUDIT_KEY_TYPE || typeof json.seed !== 'string' || typeof json.public_key !== 'string') {
    throw new UsageError(`writer key file ${file} is not a ${GATEWAY_AUDIT_KEY_TYPE} file (type, seed and public_key)`);
  }
  if (json.version !== undefined && json.version !== 1) throw new UsageError(`writer key file ${file}: unsupported version (this parley-audit reads version 1)`);
  let seed: Uint8Array;
  try {
    seed = fromBase64Url(json.seed);
  } catch {
    throw new UsageError(`writer key file ${file}: the seed is not base64url`);
  }
  if (seed.length !== 32) {
    crypto.wipe(seed);
    throw new UsageError(`writer key file ${file}: the seed is not 32 bytes`);
  }
  if (!HEX64.test(json.public_key)) {
    crypto.wipe(seed);
    throw new UsageError(`writer key file ${file}: public_key is not 64 hex characters`);
  }
  const kp = crypto.ed25519.keyPairFromSeed(seed);
  const matches = crypto.constantTimeEqual(kp.publicKey, fromHex(json.public_key));
  kp.secretKey.wipe();
  if (!matches) {
    crypto.wipe(seed);
    throw new UsageError(`writer key file ${file}: public_key does not match the seed`);
  }
  return seed;
}

/**
 * Reads the writer key: a seed as hex, as keygen writes it, or the gateway's
 * audit key file (JSON, see {@link seedOf}).
 * @throws UsageError when the file cannot be read, is readable by group or others (like the registry's and
 *   the gateway's key files: a secret is 0600), or does not hold a seed
 */
async function readWriterKey(crypto: ParleyCrypto, file: string): Promise<Ed25519KeyPair> {
  let text: string;
  let mode: number;
  try {
    const handle = await open(file, 'r');
    try {
      mode = (await handle.stat()).mode;
      text = (await handle.readFile('utf8')).trim();
    } finally {
      await handle.close();
    }
  } catch {
    throw new UsageError(`cannot read the writer key file ${file}`);
  }
  if ((mode & 0o077) !== 0) throw new UsageError(`writer key file ${file} is readable by group or others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`);
  const seed = seedOf(crypto, file, text);
  try {
    return crypto.ed25519.keyPairFromSeed(seed);
  } finally {
    crypto.wipe(seed);
  }
}

async function readJsonFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    throw new UsageError(`cannot read ${what} ${file}`);
  }
}

function parseCount(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw new UsageError(`${what} must be a non-negative integer`);
  return Number(value);
}

interface OpenedLog {
  readonly store: AuditStore;
  close(): Promise<void>;
}

const POSTGRES_URL = /^postgres(ql)?:\/\//;

/**
 * The PostgreSQL URL of a log argument: `postgres` is the database in DATABASE_URL (no password in argv,
 * where every user of the machine sees it); a postgres:// URL as given; undefined for a file.
 */
function postgresUrl(log: string, io: Io): string | undefined {
  if (log === 'postgres') {
    const url = process.env['DATABASE_URL'];
    if (url === undefined || url === '') throw new UsageError('--log postgres takes the database URL from DATABASE_URL, which is not set');
    if (!POSTGRES_URL.test(url)) throw new UsageError('DATABASE_URL must be a postgres:// or postgresql:// URL');
    return url;
  }
  if (!POSTGRES_URL.test(log)) return undefined;
  let password = false;
  try {
    password = new URL(log).password !== '';
  } catch {
    // pg reports a malformed URL when it connects
  }
  if (password) io.warn('the database password is on the command line, where other users of the machine can see it: put the URL in DATABASE_URL and give postgres as the log');
  return log;
}

/** A database the log is in: PostgreSQL (a URL) or a PGlite data directory; undefined for an audit file. */
async function openDatabaseOf(log: string, io: Io): Promise<{ client: SqlClient; engine: 'postgres' | 'pglite'; close(): Promise<void> } | undefined> {
  const url = postgresUrl(log, io);
  if (url !== undefined) {
    const { default: pg } = await import('pg');
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
    } catch (cause) {
      await client.end().catch(() => undefined);
      throw new AuditError('storage_failure', 'cannot connect to PostgreSQL', { cause });
    }
    return { client, engine: 'postgres', close: async () => void (await client.end().catch(() => undefined)) };
  }
  if (isPgliteDataDir(log)) return { ...(await openPgliteDir(log)), engine: 'pglite' };
  return undefined;
}

function schemaOf(v: Values): string | undefined {
  if (v.schema === undefined) return undefined;
  if (!SCHEMA_RE.test(v.schema)) throw new UsageError('--schema must be 1..63 characters of [a-z0-9_], not starting with a digit (the gateway\'s database_schema)');
  return v.schema;
}

async function openLog(crypto: ParleyCrypto, log: string, v: Values, keys: readonly Uint8Array[], io: Io): Promise<OpenedLog> {
  const database = await openDatabaseOf(log, io);
  if (database !== undefined) {
    try {
      const schema = database.engine === 'postgres' ? schemaOf(v) : undefined;
      if (database.engine === 'pglite' && v.schema !== undefined) throw new UsageError('--schema applies to PostgreSQL only (an embedded gateway database has none)');
      // A gateway's database: the chain of the writer key given, from gateway_audit_chains (--table overrides).
      const { table, chain } = await chooseTable(crypto, database.client, { table: v.table, schema, keys });
      if (chain !== undefined) io.note(`reading ${describeChain(crypto, chain)}`);
      const store = await openPostgresStore(crypto, database.client, { migrate: false, ...(table === undefined ? {} : { table }) });
      return { store, close: () => database.close() };
    } catch (cause) {
      await database.close();
      if (isAuditError(cause, 'malformed')) throw new UsageError(cause.message.replace(/^\[[a-z_]+\] /, '')); // e.g. a bad --table
      throw cause;
    }
  }
  if (v.table !== undefined) throw new UsageError('--table applies to database logs only (PostgreSQL, or a PGlite data directory)');
  if (v.schema !== undefined) throw new UsageError('--schema applies to PostgreSQL logs only');
  const onEvent = (event: FileStoreEvent): void => {
    // A torn tail (a crash's) is a warning. A damaged record with data after it is the break verifyChain reports.
    if (event.type === 'torn_record' && event.cause !== 'corrupt') {
      io.warn(`torn record (${event.cause}) at offset ${event.offset}: ${event.bytes} bytes after ${event.entries} whole entries were not read`);
    }
  };
  // 'inspect': a damaged file opens, so that the first break is named even when it lies before the damage; the
  // store's reads then end in the damage (the library's own rule), which verifyChain reports as a break.
  const store = await openFileStore(crypto, log, { readOnly: true, onCorruption: 'inspect', onEvent });
  return { store, close: () => store.close() };
}

/** The `chains` command: the audit chains a gateway's database lists, with their sizes. */
async function listChains(crypto: ParleyCrypto, log: string, v: Values, io: Io): Promise<number> {
  const database = await openDatabaseOf(log, io);
  if (database === undefined) throw new UsageError('chains reads a gateway database: a PGlite data directory (the gateway\'s data_dir), postgres (DATABASE_URL) or postgres://…');
  try {
    const schema = database.engine === 'postgres' ? schemaOf(v) : undefined;
    if (database.engine === 'pglite' && v.schema !== undefined) throw new UsageError('--schema applies to PostgreSQL only (an embedded gateway database has none)');
    const chains = await gatewayChains(database.client, schema);
    if (chains === undefined) {
      throw new AuditError('not_found', `this database has no gateway_audit_chains table${schema === undefined ? ' (a gateway with database_schema set: give --schema)' : ` in schema ${schema}`}`);
    }
    const rows: { chain: GatewayChain; size: number }[] = [];
    for (const chain of chains) {
      const store = await openPostgresStore(crypto, database.client, { migrate: false, table: chain.table });
      rows.push({ chain, size: await store.size() });
    }
    io.out(
      {
        ok: true,
        chains: rows.map(({ chain, size }) => ({
          table: chain.table,
          writerPublicKey: toHex(chain.writerPublicKey),
          writerKeyId: toHex(writerKeyId(crypto, chain.writerPublicKey)),
          createdAtMs: chain.createdAtMs,
          size,
        })),
      },
      rows.length === 0
        ? 'no audit chains'
        : rows.map(({ chain, size }) => `${chain.table}  ${size} entries  writer key ${toHex(chain.writerPublicKey)}  created ${new Date(chain.createdAtMs).toISOString()}`).join('\n'),
    );
    return EXIT.ok;
  } finally {
    await database.close();
  }
}

/** Verifies the whole log (a damaged file record ends the store's read, so it is a break like any other). */
async function verifyLog(
  crypto: ParleyCrypto,
  store: AuditStore,
  keys: readonly Uint8Array[],
  head: SignedTreeHead | undefined,
): Promise<{ result: ChainVerification; tree: MerkleTree }> {
  const tree = new MerkleTree(merkleHasher(crypto));
  const result = await verifyChain(crypto, store.read(0, await store.size()), { keys, tree, ...(head === undefined ? {} : { head }) });
  return { result, tree };
}

function reportBreak(io: Io, result: Extract<ChainVerification, { ok: false }>): number {
  io.out(
    { ok: false, index: result.index, reason: result.reason, detail: result.detail, ...(result.entryIndex === undefined ? {} : { entryIndex: result.entryIndex }) },
    `BROKEN at index ${result.index}: ${result.reason} — ${result.detail}`,
  );
  return EXIT.failed;
}

/** Option values of a command (with the global --json). */
interface Values {
  json?: boolean;
  log?: string;
  size?: string;
  key?: string;
  publicKey?: string[];
  head?: string;
  table?: string;
  schema?: string;
  out?: string;
}

async function trustedKeys(crypto: ParleyCrypto, v: Values, required: boolean): Promise<{ keys: Uint8Array[]; writer?: Ed25519KeyPair }> {
  const keys: Uint8Array[] = [];
  for (const k of v.publicKey ?? []) keys.push(await readHexKey(k, '--public-key'));
  let writer: Ed25519KeyPair | undefined;
  if (v.key !== undefined) {
    writer = await readWriterKey(crypto, v.key);
    keys.push(writer.publicKey);
  }
  if (required && keys.length === 0) throw new UsageError('give the trusted writer key: --public-key <key> or --key <file>');
  return writer === undefined ? { keys } : { keys, writer };
}

function needLog(v: Values): string {
  if (v.log === undefined) throw new UsageError('--log <file | PGlite data directory | postgres | postgres://…> is required');
  return v.log;
}

function treeSizeFor(v: Values, size: number): number {
  const n = parseCount(v.size, '--size') ?? size;
  if (n > size) throw new UsageError(`--size ${n} exceeds the log size ${size}`);
  return n;
}

/**
 * The tree head in a --head file: what `head` prints (the bare head), or what `head --json` prints (the
 * head under `head`, beside `ok`), so either can be saved and given back.
 */
function headJsonOf(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch {
    return text; // treeHeadFromJson says what is wrong
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && !('rootHash' in value)) {
    const inner = (value as { head?: unknown }).head;
    if (inner !== null && typeof inner === 'object') return inner;
  }
  return value;
}

async function withLog(
  crypto: ParleyCrypto,
  io: Io,
  log: string,
  v: Values,
  keys: readonly Uint8Array[],
  then: (tree: MerkleTree, store: AuditStore, result: Extract<ChainVerification, { ok: true }>) => Promise<number>,
): Promise<number> {
  let head: SignedTreeHead | undefined;
  if (v.head !== undefined) {
    try {
      head = treeHeadFromJson(headJsonOf(await readJsonFile(v.head, 'the head file')));
    } catch (cause) {
      throw cause instanceof UsageError ? cause : new UsageError(`--head: ${(cause as Error).message}`);
    }
  }
  const opened = await openLog(crypto, log, v, keys, io);
  try {
    const { result, tree } = await verifyLog(crypto, opened.store, keys, head);
    if (!result.ok) return reportBreak(io, result);
    return await then(tree, opened.store, result);
  } finally {
    await opened.close();
  }
}

/** Runs one command (arguments and options already parsed and counted by commander). */
async function run(crypto: ParleyCrypto, command: string, args: readonly string[], v: Values, io: Io): Promise<number> {
  switch (command) {
    case 'verify': {
      const { keys } = await trustedKeys(crypto, v, true);
      return withLog(crypto, io, args[0]!, v, keys, async (_tree, _store, result) => {
        io.out(
          { ok: true, size: result.size, rootHash: toHex(result.rootHash), lastEntryHash: toHex(result.lastEntryHash) },
          `OK: ${result.size} entries verified; root ${toHex(result.rootHash)}`,
        );
        return EXIT.ok;
      });
    }
    case 'head': {
      if (v.key === undefined) throw new UsageError('head signs with the writer key: --key <file> is required');
      const { keys, writer } = await trustedKeys(crypto, v, true);
      return withLog(crypto, io, needLog(v), v, keys, async (tree) => {
        const treeSize = treeSizeFor(v, tree.size);
        const head = signTreeHead(crypto, writer!, { treeSize, rootHash: tree.root(treeSize), timestampMs: Date.now() });
        const json = treeHeadToJson(head);
        io.out({ ok: true, head: json }, JSON.stringify(json, null, 2));
        return EXIT.ok;
      });
    }
    case 'prove': {
      const index = parseCount(args[0], '<index>')!;
      const { keys, writer } = await trustedKeys(crypto, v, true);
      return withLog(crypto, io, needLog(v), v, keys, async (tree, store) => {
        const treeSize = treeSizeFor(v, tree.size);
        if (index >= treeSize) throw new UsageError(`<index> ${index} is not below the tree size ${treeSize}`);
        const proof = tree.inclusionProof(index, treeSize);
        let entry;
        for await (const e of store.read(index, index + 1)) entry = e;
        const rootHash = tree.root(treeSize);
        const head = writer === undefined ? undefined : signTreeHead(crypto, writer, { treeSize, rootHash, timestampMs: Date.now() });
        const json = inclusionProofToJson(proof, {
          leafHash: tree.leafHash(index),
          rootHash,
          ...(entry === undefined ? {} : { entry }),
          ...(head === undefined ? {} : { head }),
        });
        io.out({ ok: true, ...json }, JSON.stringify(json, null, 2));
        return EXIT.ok;
      });
    }
    case 'consistency': {
      const oldSize = parseCount(args[0], '<old-size>')!;
      const newSize = parseCount(args[1], '<new-size>')!;
      if (oldSize > newSize) throw new UsageError('<old-size> must not exceed <new-size>');
      const { keys, writer } = await trustedKeys(crypto, v, true);
      return withLog(crypto, io, needLog(v), v, keys, async (tree) => {
        if (newSize > tree.size) throw new UsageError(`<new-size> ${newSize} exceeds the log size ${tree.size}`);
        const proof = tree.consistencyProof(oldSize, newSize);
        const oldRoot = tree.root(oldSize);
        const newRoot = tree.root(newSize);
        const now = Date.now();
        const heads =
          writer === undefined
            ? {}
            : {
                oldHead: signTreeHead(crypto, writer, { treeSize: oldSize, rootHash: oldRoot, timestampMs: now }),
                newHead: signTreeHead(crypto, writer, { treeSize: newSize, rootHash: newRoot, timestampMs: now }),
              };
        const json = consistencyProofToJson(proof, { oldRoot, newRoot, ...heads });
        io.out({ ok: true, ...json }, JSON.stringify(json, null, 2));
        return EXIT.ok;
      });
    }
    case 'check': {
      const { keys } = await trustedKeys(crypto, v, true);
      let bundle;
      try {
        bundle = proofFromJson(await readJsonFile(args[0]!, 'the proof file'));
      } catch (cause) {
        throw cause instanceof UsageError ? cause : new UsageError(`proof file: ${(cause as Error).message}`);
      }
      try {
        if (bundle.type === 'inclusion') {
          if (bundle.head === undefined) throw new AuditError('bad_proof', 'the proof carries no signed tree head to check against (prove with --key)');
          checkInclusion(crypto, { proof: bundle.proof, head: bundle.head, leafHash: bundle.leafHash, keys, ...(bundle.entry === undefined ? {} : { entry: bundle.entry }) });
          io.out(
            { ok: true, type: 'inclusion', leafIndex: bundle.proof.leafIndex, treeSize: bundle.proof.treeSize },
            `OK: entry ${bundle.proof.leafIndex} is in the signed tree of size ${bundle.proof.treeSize}`,
          );
        } else {
          if (bundle.oldHead === undefined || bundle.newHead === undefined) {
            throw new AuditError('bad_proof', 'the proof carries no signed tree heads to check against (run consistency with --key)');
          }
          checkConsistency(crypto, { proof: bundle.proof, oldHead: bundle.oldHead, newHead: bundle.newHead, keys });
          io.out(
            { ok: true, type: 'consistency', oldSize: bundle.proof.oldSize, newSize: bundle.proof.newSize },
            `OK: the signed tree of size ${bundle.proof.oldSize} is a prefix of the signed tree of size ${bundle.proof.newSize}`,
          );
        }
        return EXIT.ok;
      } catch (cause) {
        if (!isAuditError(cause) || cause.code === 'storage_failure') throw cause;
        io.out({ ok: false, reason: cause.code, detail: cause.message }, `FAILED: ${cause.message}`);
        return EXIT.failed;
      }
    }
    case 'chains':
      return listChains(crypto, args[0]!, v, io);
    case 'keygen': {
      if (v.out === undefined) throw new UsageError('--out <file> is required');
      const kp = crypto.ed25519.generateKeyPair();
      const seed = crypto.ed25519.exportSeed(kp.secretKey);
      try {
        await writeFile(v.out, `${toHex(seed)}\n`, { flag: 'wx', mode: 0o600 });
      } catch (cause) {
        throw new UsageError(`cannot create ${v.out}${(cause as { code?: string }).code === 'EEXIST' ? ' (it exists; keygen never overwrites)' : ''}`);
      } finally {
        crypto.wipe(seed);
        kp.secretKey.wipe();
      }
      const publicKey = toHex(kp.publicKey);
      io.out({ ok: true, publicKey, keyId: toHex(writerKeyId(crypto, kp.publicKey)) }, `public key ${publicKey}`);
      return EXIT.ok;
    }
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

// ---------------------------------------------------------------------------
// The command line (@parley/cli-kit on commander): each command takes only the options it reads.

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

const OPTIONS = {
  log: () =>
    new Option('--log <log>', "the audit log: a file, a gateway's PGlite data directory (data_dir), postgres (the database in DATABASE_URL), or postgres://… / postgresql://…").makeOptionMandatory(),
  publicKey: () => new Option('--public-key <key>', 'a trusted writer public key: 64 hex characters, or a file holding them (repeatable)').argParser(collect),
  key: () =>
    new Option('--key <file>', 'the writer key: a file (mode 0600) holding the 32-byte Ed25519 seed as 64 hex characters (from keygen), or the gateway\'s audit key file (audit_key_file); proofs then carry tree heads signed with it'),
  head: () => new Option('--head <file>', 'a signed tree head the log must match (what `head` prints, with or without --json): catches a cut tail'),
  size: () => new Option('--size <n>', 'tree size to prove against or sign (default: the whole log)'),
  table: () =>
    new Option(
      '--table <name>',
      "the table of a database log (default: in a gateway's database, the chain gateway_audit_chains lists for the writer key given; else parley_audit)",
    ),
  schema: () => new Option('--schema <name>', "the PostgreSQL schema of a gateway's database (its database_schema; default public)"),
  out: () => new Option('--out <file>', 'the key file to create (mode 0600; never overwritten)').makeOptionMandatory(),
};

const LOG_ARGUMENT =
  "an audit file; a gateway's database — its PGlite data directory (data_dir, the gateway stopped), or postgres (the database in DATABASE_URL: no password on the command line) or postgres://… / postgresql://… (with --schema for its database_schema) — where the chain of the writer key given is read; or any PostgreSQL table (--table, default parley_audit)";
const DB_ARGUMENT = "a gateway's database: its PGlite data directory (data_dir, the gateway stopped), postgres (the database in DATABASE_URL) or postgres://… / postgresql://…";

interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly description: string;
  readonly args: readonly (readonly [name: string, description: string])[];
  readonly options: readonly Option[];
}

/** The commands, with fresh Option objects (an option belongs to one command of one program). */
const commandSpecs = (): readonly CommandSpec[] => [
  {
    name: 'verify',
    summary: 'verify the whole chain of a log',
    usage: '<log> (--public-key <key>… | --key <file>) [--head <file>] [--table <name>] [--schema <name>] [--json]',
    description: 'Checks every entry\'s hash link and writer signature, and with --head that the log still matches a signed tree head (a cut tail or a rewritten history fails). Prints the size and root, or the first break.',
    args: [['<log>', LOG_ARGUMENT]],
    options: [OPTIONS.publicKey(), OPTIONS.key(), OPTIONS.head(), OPTIONS.table(), OPTIONS.schema()],
  },
  {
    name: 'head',
    summary: 'sign a tree head over a verified log',
    usage: '--log <log> --key <file> [--size <n>] [--table <name>] [--schema <name>] [--json]',
    description: 'Verifies the log, then signs its tree head (size and root) with the writer key: a statement only the writer can make. Heads are signed on demand, not stored; keep the ones you publish.',
    args: [],
    options: [OPTIONS.log(), OPTIONS.key(), OPTIONS.publicKey(), OPTIONS.size(), OPTIONS.head(), OPTIONS.table(), OPTIONS.schema()],
  },
  {
    name: 'prove',
    summary: 'print an inclusion proof for one entry',
    usage: '<index> --log <log> (--key <file> | --public-key <key>…) [--size <n>] [--table <name>] [--schema <name>] [--json]',
    description: 'Verifies the log, then prints a JSON proof bundle that entry <index> is in the tree of --size entries: the entry, its leaf hash, the path and the root; with --key also the signed head, which makes the bundle checkable by anyone with `check` and the public key alone.',
    args: [['<index>', 'the entry to prove, counted from 0']],
    options: [OPTIONS.log(), OPTIONS.key(), OPTIONS.publicKey(), OPTIONS.size(), OPTIONS.head(), OPTIONS.table(), OPTIONS.schema()],
  },
  {
    name: 'consistency',
    summary: 'print a consistency proof between two tree sizes',
    usage: '<old-size> <new-size> --log <log> (--key <file> | --public-key <key>…) [--table <name>] [--schema <name>] [--json]',
    description: 'Verifies the log, then prints a JSON proof that its tree of <old-size> entries is a prefix of its tree of <new-size> entries; with --key also both signed heads.',
    args: [
      ['<old-size>', 'the earlier tree size'],
      ['<new-size>', 'the later tree size, at most the log size'],
    ],
    options: [OPTIONS.log(), OPTIONS.key(), OPTIONS.publicKey(), OPTIONS.head(), OPTIONS.table(), OPTIONS.schema()],
  },
  {
    name: 'check',
    summary: 'check a proof file with only the public key',
    usage: '<proof-file> --public-key <key>… [--json]',
    description: 'Verifies a proof file from `prove` or `consistency` with only the proof, its signed heads and the trusted public key; no log needed.',
    args: [['<proof-file>', 'JSON from prove or consistency']],
    options: [OPTIONS.publicKey(), OPTIONS.key()],
  },
  {
    name: 'chains',
    summary: "list the audit chains in a gateway's database",
    usage: '<database> [--schema <name>] [--json]',
    description:
      "Lists the audit chains gateway_audit_chains names — one per gateway audit key: the table, its size, the writer public key and key id, and when it was created. verify, head, prove and consistency pick the chain of the writer key given (--key <audit_key_file> or --public-key) by themselves; --table names one explicitly. An embedded (PGlite) database is read only while its gateway is stopped.",
    args: [['<database>', DB_ARGUMENT]],
    options: [OPTIONS.schema()],
  },
  {
    name: 'keygen',
    summary: 'create a writer key file',
    usage: '--out <file> [--json]',
    description: 'Generates an Ed25519 writer key, writes its 32-byte seed as hex to --out (mode 0600; an existing file is never overwritten) and prints the public key.',
    args: [],
    options: [OPTIONS.out()],
  },
];

/** Where the CLI writes: stdout (one call per block) and stderr (lines as given). */
interface Streams {
  readonly out?: (text: string) => void;
  readonly err?: (text: string) => void;
}

/**
 * Runs parley-audit.
 * @param argv arguments after the program name
 * @param streams where output goes (default stdout and stderr)
 * @returns the exit code (AUDIT_EXIT_CODES)
 */
export async function main(argv: readonly string[], streams: Streams = {}): Promise<number> {
  const write: Required<Streams> = {
    out: streams.out ?? ((text) => void process.stdout.write(`${text}\n`)),
    err: streams.err ?? ((text) => void process.stderr.write(text)),
  };
  const program = createProgram({ name: PROGRAM, description: 'Verify a Parley audit log and prove entries in it.', ...write });
  program.addOption(jsonOption());
  let result: number = EXIT.ok;
  for (const spec of commandSpecs()) {
    const command = program.command(spec.name).summary(spec.summary).usage(spec.usage).description(`${spec.summary}.\n\n${spec.description}`);
    for (const [name, description] of spec.args) command.argument(name, description);
    for (const option of spec.options) command.addOption(option);
    command.action(async function (this: CliCommand) {
      const values = this.optsWithGlobals<Values>();
      const io = makeIo(values.json === true, write);
      result = await run(await createCrypto(), spec.name, this.processedArgs as string[], values, io);
    });
  }
  program.addHelpSection({
    text: 'Every command that reads a log verifies the whole chain first (with the trusted writer keys) and refuses to prove or sign over a broken one.',
  });
  program.addHelpSection({
    heading: "A gateway's audit log:",
    items: [
      ['embedded (PGlite)', 'parley-audit verify <data_dir> --key <audit_key_file>   (the gateway stopped)'],
      ['PostgreSQL', 'DATABASE_URL=postgres://… parley-audit verify postgres --key <audit_key_file> [--schema <database_schema>]'],
      ['its chains', 'parley-audit chains <data_dir | postgres> [--schema <database_schema>]'],
    ],
  });
  program.addHelpSection({
    heading: 'Exit codes:',
    align: 'section',
    items: [
      ['0', 'ok'],
      ['1', 'verification failed (a broken chain, a proof or signature that does not check)'],
      ['2', 'usage error (arguments, unreadable key or proof files, an index or size beyond the log)'],
      ['3', 'storage error (missing or non-audit file, unreachable database, missing table, I/O)'],
    ],
  });
  program.addHelpSection({
    heading: 'Environment:',
    items: [['DATABASE_URL', 'the PostgreSQL URL of the log `postgres` (keeps the password out of the command line)']],
  });
  const code = await runProgram(program, argv, {
    classify: (cause): Failure => {
      if (isAuditError(cause)) {
        const storage = cause.code === 'storage_failure' || cause.code === 'not_found' || cause.code === 'torn_record' || cause.code === 'malformed';
        return { exitCode: storage ? EXIT.storage : EXIT.failed, code: cause.code, message: cause.message };
      }
      return { exitCode: EXIT.storage, code: 'storage_failure', message: `unexpected failure: ${(cause as Error | undefined)?.message ?? String(cause)}` };
    },
    onFailure: (failure) => {
      if (program.opts<Values>().json === true) write.out(JSON.stringify({ ok: false, error: failure.code, message: failure.message }, null, 2));
    },
  });
  return code === EXIT.ok ? result : code;
}

runWhenExecuted(PROGRAM, main);
