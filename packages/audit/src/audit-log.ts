/**
 * The writer (the issue's `MessageChain`): appends signed, hash-linked entries
 * to a store and keeps the Merkle tree over them in memory, so it can sign
 * tree heads and answer inclusion and consistency proofs for every size.
 *
 * Appends are serialised inside one AuditLog. Several AuditLogs (processes) may
 * share one PostgreSQL store: an append that loses a race gets `conflict` from
 * the store, catches up with the entries the others wrote, re-signs at the new
 * tip and retries, so the chain never forks. Entries written by others are
 * adopted only when signed by a trusted key (the writer's own, plus
 * `trustedKeys`): chaining onto an entry commits to its bytes.
 */
import type { AuditMessage } from '@parley/proto';
import { toHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, assertFunction, assertIntLike, assertIterable, assertKeyPair, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError, isAuditError } from './errors.js';
import { assertEntry, assertEntryFields, digestEntry, signChecked, writerKeyId, WriterKeys, ZERO_HASH, type AuditEntryFields } from './entry.js';
import { MerkleTree, RootAccumulator, merkleHasher, type ConsistencyProof, type InclusionProof } from './merkle.js';
import { assertNotification, type AuditNotification, type AuditStore } from './store.js';
import { signTreeHead, type SignedTreeHead } from './tree-head.js';
import { MAX_CHECKPOINT_SIGNERS, openCheckpoint, signCheckpoint, type AuditCheckpoint } from './checkpoint.js';
import { chainError, verifyChain } from './verify.js';

/** Most stored checkpoints `open` tries, newest first, before it reads every entry instead. */
export const MAX_CHECKPOINTS_TRIED = 16;
/** Most entries one group write stores (the PostgreSQL store's `appendMany` limit). */
export const MAX_GROUP = 256;
/** Most notifications waiting to be sent with the log's writes ({@link AuditLog.notify}). */
export const MAX_RIDERS = 16 * MAX_GROUP;

/** A notification sent with the next group written ({@link AuditLog.notify}). */
interface Rider {
  readonly notify: AuditNotification;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface PendingAppend {
  readonly fields: AuditEntryFields;
  readonly notify: AuditNotification | undefined;
  readonly resolve: (entry: AuditMessage) => void;
  readonly reject: (error: unknown) => void;
}

/** Options of {@link AuditLog.open}. */
export interface AuditLogOptions {
  /** Where entries go: `openFileStore(…)` or `openPostgresStore(…)`. The log closes it on `close()`. */
  readonly store: AuditStore;
  /** The writer's Ed25519 key pair: signs every entry and tree head. */
  readonly writer: Ed25519KeyPair;
  /** Milliseconds since the epoch for entries without a timestamp and for tree heads. Default `Date.now`. */
  readonly clock?: () => number;
  /**
   * What `open` does with the stored entries before extending them. Either way every entry the log
   * adopts (on open, and when catching up with other writers) must be signed by the writer key or one of
   * `trustedKeys`, with the right index and link, or the log refuses to extend it.
   * `'links'` (default) stops at the first entry that fails with `bad_signature` / `bad_link` / …;
   * `'full'` runs {@link verifyChain} first, so the error names the break reason (`modified`, `inserted`, …).
   */
  readonly verify?: 'links' | 'full';
  /**
   * The other writers' public keys (processes sharing a PostgreSQL log). Default: none, i.e. only
   * entries signed by this log's own writer key are adopted. A shared store needs every writer's key here.
   */
  readonly trustedKeys?: readonly Uint8Array[];
  /** How often one append may lose a race and retry. Default 64. */
  readonly maxRetries?: number;
  /**
   * Keep what proofs need (default `true`): every entry's leaf hash and the tree above them, ≈ 64 bytes an
   * entry for as long as the process runs. `false` keeps only the compact range of the current tree
   * (⌈log₂ n⌉ hashes): appends, `size`, `rootHash()` and `treeHead()` of the current size work; older sizes,
   * proofs and leaf hashes throw `not_found`. For a writer that never serves proofs (a gateway: verifiers
   * read the chain from its store), so its memory does not grow with its log.
   */
  readonly proofs?: boolean;
  /**
   * With `proofs: false` and a store that keeps checkpoints (PostgreSQL): every this many entries, and on
   * `close()`, the log stores a signed checkpoint of its state (§9.6), and `open` adopts the latest one
   * instead of reading and verifying every entry before it. Default 10 000; 0 stores none (the latest stored
   * one is still adopted).
   */
  readonly checkpointEvery?: number;
}

/** How {@link AuditLog.open} found the stored log. */
export interface AuditLogOpening {
  /** Entries adopted on the strength of a signed checkpoint (0: none was adopted). */
  readonly checkpointSize: number;
  /** Entries read and verified one by one. */
  readonly entriesRead: number;
  /** Why the latest stored checkpoint was not adopted (every entry was then read): a security event for the caller to log. */
  readonly checkpointRefused?: string;
}

/**
 * An audit log writer over a store.
 *
 * @example
 * const log = await AuditLog.open(crypto, { store, writer: crypto.ed25519.generateKeyPair() });
 * const entry = await log.append({ messageHash, senderId: 'planner-1', recipientId: 'coder-2',
 *                                  messageType: MessageType.TASK_ASSIGNMENT, outcome: 'routed' });
 * const head = log.treeHead();                      // signed: size and root
 * const proof = log.inclusionProof(Number(entry.index));
 */
export class AuditLog {
  readonly #crypto: ParleyCrypto;
  readonly #store: AuditStore;
  readonly #writer: Ed25519KeyPair;
  readonly #keys: WriterKeys;
  readonly #keyId: Uint8Array;
  readonly #keyIdHex: string;
  readonly #clock: () => number;
  readonly #maxRetries: number;
  #tree: MerkleTree | RootAccumulator;
  #tip: Uint8Array = ZERO_HASH;
  readonly #checkpointEvery: number;
  /** Tree size of the last checkpoint tried (stored or not) or adopted. */
  #checkpointSize = 0;
  /** Tree size of the last checkpoint known stored (or adopted). */
  #checkpointStored = 0;
  /** A checkpoint being stored (one at a time). */
  #checkpointWrite: Promise<void> | undefined;
  /** Entry hash of entry 0 (undefined: no entry yet, or not known after a `verify: 'full'` open). */
  #first: Uint8Array | undefined;
  /** Key ids that signed the entries so far, by hex (undefined: not known after a `verify: 'full'` open: no checkpoints). */
  #signers: Map<string, Uint8Array> | undefined = new Map();
  #opening: AuditLogOpening = { checkpointSize: 0, entriesRead: 0 };
  #queue: Promise<unknown> = Promise.resolve();
  /** Appends waiting for the next group write, in call order. */
  readonly #pending: PendingAppend[] = [];
  /** Notifications with no entry of their own, sent with the next group (at most {@link MAX_RIDERS}). */
  readonly #riders: Rider[] = [];
  #drainScheduled = false;
  #closed = false;

  private constructor(crypto: ParleyCrypto, options: Required<Pick<AuditLogOptions, 'store' | 'writer' | 'clock' | 'maxRetries' | 'proofs' | 'checkpointEvery'>> & { keys: WriterKeys }) {
    this.#crypto = crypto;
    this.#store = options.store;
    this.#writer = options.writer;
    this.#keys = options.keys;
    this.#keyId = writerKeyId(crypto, options.writer.publicKey);
    this.#keyIdHex = toHex(this.#keyId);
    this.#clock = options.clock;
    this.#maxRetries = options.maxRetries;
    this.#tree = options.proofs ? new MerkleTree(merkleHasher(crypto)) : new RootAccumulator(merkleHasher(crypto));
    this.#checkpointEvery = options.checkpointEvery;
  }

  /**
   * Opens a log over a store: reads and checks every stored entry, rebuilds
   * the Merkle tree, and is then ready to append.
   *
   * @param crypto ParleyCrypto from `createCrypto()`
   * @param options store, writer key, clock, open-time verification
   * @returns the log
   * @throws AuditError `malformed` (options), the break reason when the stored chain is broken, `storage_failure`
   */
  static async open(crypto: ParleyCrypto, options: AuditLogOptions): Promise<AuditLog> {
    assertCrypto(crypto);
    const o = assertObject(options, 'options');
    const store = o['store'] as AuditStore;
    for (const m of ['size', 'append', 'read', 'close'] as const) {
      if (typeof (store as unknown as Record<string, unknown> | null)?.[m] !== 'function') malformed(`options.store must be an AuditStore, got ${describe(store)}`);
    }
    const writer = assertKeyPair(o['writer'], 'options.writer');
    const clock = o['clock'] === undefined ? Date.now : assertFunction<() => number>(o['clock'], 'options.clock');
    const verify = o['verify'] === undefined ? 'links' : o['verify'];
    if (verify !== 'links' && verify !== 'full') malformed("options.verify must be 'links' or 'full'");
    const trusted = o['trustedKeys'] === undefined ? [] : o['trustedKeys'];
    if (!Array.isArray(trusted)) malformed(`options.trustedKeys must be an array, got ${describe(trusted)}`);
    const maxRetries = assertSafeInt(o['maxRetries'] === undefined ? 64 : o['maxRetries'], 'options.maxRetries', 0, 10_000);
    // Explicitly: the writer's own key, plus the keys of the other writers the caller names. Nothing else.
    const keys = WriterKeys.from(crypto, [writer.publicKey, ...(trusted as unknown[] as Uint8Array[])]);
    if (o['proofs'] !== undefined && typeof o['proofs'] !== 'boolean') malformed(`options.proofs must be a boolean, got ${describe(o['proofs'])}`);
    const checkpointEvery = assertSafeInt(o['checkpointEvery'] === undefined ? 10_000 : o['checkpointEvery'], 'options.checkpointEvery', 0, Number.MAX_SAFE_INTEGER);
    const log = new AuditLog(crypto, { store, writer, clock, maxRetries, keys, proofs: o['proofs'] !== false, checkpointEvery });
    if (verify === 'full') {
      const size = await store.size();
      const result = await verifyChain(crypto, store.read(0, size), { keys, tree: log.#tree });
      if (!result.ok) throw chainError(result);
      log.#tip = result.lastEntryHash;
      log.#signers = undefined; // which keys signed is not known: this log stores no checkpoint
    } else if (log.#tree instanceof RootAccumulator && store.checkpoints !== undefined) {
      await log.#adoptCheckpoint();
    }
    const from = log.#tree.size;
    await log.#catchUp();
    log.#opening = { ...log.#opening, entriesRead: verify === 'full' ? log.#tree.size : log.#tree.size - from };
    return log;
  }

  /** How `open` found the stored log: entries adopted from a checkpoint, entries read, a checkpoint refused. */
  get opening(): AuditLogOpening {
    return this.#opening;
  }

  /**
   * Adopts the latest stored checkpoint (§9.6) that checks — of the {@link MAX_CHECKPOINTS_TRIED} latest within the
   * store's size, newest first: signed by a trusted key, naming only trusted keys as its entries' signers, peaks
   * folding to its root, a checkpoint of this log (entry 0 hashes to its first_entry_hash), and its last entry in
   * the store hashing to its last_entry_hash. If none does, the log stays empty (every entry is then read and
   * verified) and `opening` says why.
   * @throws AuditError `removed` when a checkpoint that checks and is of this log (on an empty store: signed by this
   *   writer's own key) covers more entries than the store holds (a cut log)
   */
  async #adoptCheckpoint(): Promise<void> {
    const crypto = this.#crypto;
    const store = this.#store;
    const size = await store.size();
    let above: AuditCheckpoint[];
    let list: AuditCheckpoint[];
    try {
      // Read apart: rows beyond the store (a cut log, or junk) cannot hide the ones that could be adopted.
      above = (await store.checkpoints!(MAX_CHECKPOINTS_TRIED)).filter((c) => c.treeSize > size);
      list = await store.checkpoints!(MAX_CHECKPOINTS_TRIED, size);
    } catch (error) {
      this.#opening = { checkpointSize: 0, entriesRead: 0, checkpointRefused: `reading them failed: ${error instanceof Error ? error.message : String(error)}` };
      return;
    }
    const reasons: string[] = [];
    let first: Uint8Array | undefined;
    const firstHash = async (): Promise<Uint8Array> => (first ??= await this.#entryHashAt(0));
    // A checkpoint that checks and is of this log (or, on an empty store, signed by this writer's own key) covering
    // more entries than the store holds: entries were removed.
    for (const checkpoint of above) {
      try {
        openCheckpoint(crypto, merkleHasher(crypto), this.#keys, checkpoint);
        const ours = size === 0 ? crypto.constantTimeEqual(checkpoint.signerKeyId, this.#keyId) : crypto.constantTimeEqual(await firstHash(), checkpoint.firstEntryHash);
        if (ours) throw Object.assign(new AuditError('removed', `the store holds ${size} entries, fewer than the ${checkpoint.treeSize} a signed checkpoint of this log covers`), { fatal: true });
        reasons.push(`the checkpoint at ${checkpoint.treeSize} entries: it is not a checkpoint of this log`);
      } catch (error) {
        if ((error as { fatal?: boolean }).fatal === true) throw error;
        reasons.push(`the checkpoint at ${checkpoint.treeSize} entries: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    for (const checkpoint of list) {
      try {
        const tree = openCheckpoint(crypto, merkleHasher(crypto), this.#keys, checkpoint);
        if (!crypto.constantTimeEqual(await firstHash(), checkpoint.firstEntryHash)) throw new AuditError('malformed', 'it is not a checkpoint of this log (its first entry differs)');
        let last: AuditMessage | undefined;
        for await (const e of store.read(checkpoint.treeSize - 1, checkpoint.treeSize)) last = e;
        if (last === undefined || last.index !== BigInt(checkpoint.treeSize - 1)) throw new AuditError('removed', `entry ${checkpoint.treeSize - 1} is not where the checkpoint says`);
        const digest = digestEntry(crypto, last);
        const pk = this.#keys.get(last.signerKeyId);
        if (pk === undefined || !crypto.ed25519.verify(last.signature, digest.layout, pk)) throw new AuditError('bad_signature', `entry ${checkpoint.treeSize - 1} is not signed by a trusted key`);
        if (!crypto.constantTimeEqual(digest.entryHash, checkpoint.lastEntryHash)) throw new AuditError('modified', `entry ${checkpoint.treeSize - 1} does not hash to the checkpoint's last_entry_hash`);
        this.#tree = tree;
        this.#tip = checkpoint.lastEntryHash.slice();
        this.#first = checkpoint.firstEntryHash.slice();
        this.#signers = new Map(checkpoint.entrySigners.map((k) => [toHex(k), k.slice()]));
        this.#checkpointSize = checkpoint.treeSize;
        this.#checkpointStored = checkpoint.treeSize;
        this.#opening = {
          checkpointSize: checkpoint.treeSize,
          entriesRead: 0,
          ...(reasons.length === 0 ? {} : { checkpointRefused: `${reasons.length} other checkpoint(s) refused: ${reasons[0]}` }),
        };
        return;
      } catch (error) {
        reasons.push(`the checkpoint at ${checkpoint.treeSize} entries: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    if (reasons.length > 0) this.#opening = { checkpointSize: 0, entriesRead: 0, checkpointRefused: reasons.length === 1 ? reasons[0]! : `${reasons.length} checkpoints refused, the latest: ${reasons[0]}` };
  }

  /** The entry hash of stored entry `index` (its bytes as stored: compared with a signed hash, not trusted on their own). */
  async #entryHashAt(index: number): Promise<Uint8Array> {
    for await (const e of this.#store.read(index, index + 1)) {
      if (e.index !== BigInt(index)) break;
      return digestEntry(this.#crypto, e).entryHash;
    }
    throw new AuditError('removed', `entry ${index} is missing from the store`);
  }

  /**
   * Stores a checkpoint of the current state once `every` entries passed since the last attempt (one write at a
   * time; a failed one is tried again `every` entries later, or at close). Never throws: it runs after the
   * entries are stored.
   */
  #maybeCheckpoint(force = false): void {
    const tree = this.#tree;
    const signers = this.#signers;
    const first = this.#first;
    if (!(tree instanceof RootAccumulator) || this.#store.saveCheckpoint === undefined || this.#checkpointWrite !== undefined || signers === undefined || first === undefined) return;
    if (tree.size === 0 || this.#checkpointEvery === 0 || signers.size > MAX_CHECKPOINT_SIGNERS) return;
    if (force ? tree.size === this.#checkpointStored : tree.size - this.#checkpointSize < this.#checkpointEvery) return;
    let checkpoint: AuditCheckpoint;
    try {
      checkpoint = signCheckpoint(this.#crypto, this.#writer, this.#keyId, { tree, firstEntryHash: first, lastEntryHash: this.#tip, entrySigners: signers.values() }, assertIntLike(this.#clock(), 'clock()'));
    } catch {
      return; // a clock that does not answer: the next one
    }
    this.#checkpointSize = checkpoint.treeSize;
    this.#checkpointWrite = this.#store
      .saveCheckpoint(checkpoint)
      .then(
        () => void (this.#checkpointStored = Math.max(this.#checkpointStored, checkpoint.treeSize)),
        () => undefined, // the next one, `every` entries on (or at close), covers these entries too
      )
      .finally(() => (this.#checkpointWrite = undefined));
  }

  /** Number of entries. */
  get size(): number {
    return this.#tree.size;
  }

  /** The writer's public key (what verifiers trust). */
  get publicKey(): Uint8Array {
    return this.#writer.publicKey.slice();
  }

  /** The writer's key id (each entry's signer_key_id). */
  get keyId(): Uint8Array {
    return this.#keyId.slice();
  }

  /** The store underneath. */
  get store(): AuditStore {
    return this.#store;
  }

  /**
   * Appends one entry: assigns the next index and previous_hash, signs, stores,
   * and extends the tree. Concurrent calls are applied in call order. With a
   * store that has `appendMany` (PostgreSQL), appends that arrive while one is
   * being written are signed and stored together in one statement when it
   * completes (group commit, at most {@link MAX_GROUP} per statement): each
   * caller still gets its own entry, and a failed write fails every append of
   * that group, none of which is then in the store.
   *
   * @param fields message hash, sender, recipient, message type, outcome, optional timestamp
   * @param options `notify`: a notification sent in the same transaction as the entry — if and only if it is
   *   stored (a store whose `notifies` is set: PostgreSQL). A consumer that acts on it knows the entry is durable.
   * @returns the stored entry
   * @throws AuditError `malformed` (fields), `conflict` (lost more than `maxRetries` races),
   *   `bad_signature` (another entry in the store is not signed by a trusted key: nothing is chained onto it),
   *   a break reason (another writer's entries do not link), `storage_failure`
   */
  append(fields: AuditEntryFields, options?: { readonly notify?: AuditNotification }): Promise<AuditMessage> {
    return new Promise<AuditMessage>((resolve, reject) => {
      try {
        this.#check();
        const notify = options === undefined ? undefined : assertObject(options, 'options')['notify'] as AuditNotification | undefined;
        assertEntryFields(fields);
        if (notify !== undefined) {
          if (this.#store.notifies !== true) malformed('this audit store cannot send notifications with entries');
          assertNotification(notify); // here, not in the store: it would fail the whole group
        }
        this.#pending.push({ fields, notify, resolve, reject });
      } catch (error) {
        reject(error);
        return;
      }
      if (!this.#drainScheduled) this.#scheduleDrain();
    });
  }

  /**
   * Sends a notification that has no entry of its own, through the log's group commit: in the statement of the
   * next group of entries when appends arrive while one is being written, or — when none do — with the other
   * such notifications waiting, in one statement of their own. While the log is busy it costs no statement of
   * its own; it is never sent before the statement in flight completes.
   *
   * @returns settled when sent (rejected with its group's error: not sent); undefined when the store sends no
   *   notifications or {@link MAX_RIDERS} wait already: the caller sends it its own way
   * @throws AuditError `malformed` (channel or payload: checked here, as a bad one would fail the whole group),
   *   `storage_failure` once the log is closed
   */
  notify(notification: AuditNotification): Promise<void> | undefined {
    this.#check();
    assertNotification(notification);
    if (this.#store.notifies !== true || this.#store.appendMany === undefined || this.#store.notify === undefined || this.#riders.length >= MAX_RIDERS) return undefined;
    return new Promise<void>((resolve, reject) => {
      this.#riders.push({ notify: notification, resolve, reject });
      if (!this.#drainScheduled) this.#scheduleDrain();
    });
  }

  #scheduleDrain(): void {
    this.#drainScheduled = true;
    const run = (): Promise<void> => this.#drain();
    this.#queue = this.#queue.then(run, run);
  }

  /** Writes the appends waiting now (one group), in call order. */
  async #drain(): Promise<void> {
    this.#drainScheduled = false;
    const grouped = this.#store.appendMany !== undefined;
    const group = this.#pending.splice(0, grouped ? MAX_GROUP : 1);
    const notifications = group.flatMap((p) => (p.notify === undefined ? [] : [p.notify]));
    // Riders fill what the group leaves of one statement's notifications (2 × MAX_GROUP), or go alone.
    const riders = grouped ? this.#riders.splice(0, 2 * MAX_GROUP - notifications.length) : [];
    if (this.#pending.length > 0 || this.#riders.length > 0) this.#scheduleDrain();
    try {
      // No closed check here: what was accepted before close() is written (close waits for it); later calls are
      // refused where they are made.
      for (const r of riders) notifications.push(r.notify);
      if (group.length === 0) {
        if (riders.length > 0) await this.#store.notify!(notifications);
      } else {
        const entries = await this.#write(group.map((p) => p.fields), notifications);
        group.forEach((p, i) => p.resolve(entries[i]!));
      }
      for (const r of riders) r.resolve();
    } catch (error) {
      for (const p of group) p.reject(error);
      for (const r of riders) r.reject(error);
    }
  }

  /** Signs `fields` at the tip and stores them (one statement when the store can); retries lost races. */
  async #write(fields: readonly AuditEntryFields[], notifications: readonly AuditNotification[]): Promise<AuditMessage[]> {
    for (let attempt = 0; ; attempt++) {
      let previousHash = this.#tip;
      const signed = fields.map((f, i) => {
        const timestampMs = f.timestampMs === undefined ? assertIntLike(this.#clock(), 'clock()') : assertIntLike(f.timestampMs, 'fields.timestampMs');
        const result = signChecked(this.#crypto, this.#writer, this.#keyId, { ...f, previousHash }, this.#tree.size + i, timestampMs);
        previousHash = result.digest.entryHash;
        return result;
      });
      try {
        if (notifications.length > 0) await this.#store.appendMany!(signed.map((x) => x.entry), notifications);
        else if (signed.length === 1) await this.#store.append(signed[0]!.entry);
        else await this.#store.appendMany!(signed.map((x) => x.entry));
      } catch (cause) {
        if (isAuditError(cause, 'conflict') && attempt < this.#maxRetries) {
          await this.#catchUp();
          continue;
        }
        throw cause;
      }
      if (this.#tree.size === 0) this.#first = signed[0]!.digest.entryHash;
      for (const { digest } of signed) {
        this.#tree.append(digest.leafHash);
        this.#tip = digest.entryHash;
      }
      if (this.#signers !== undefined && !this.#signers.has(this.#keyIdHex)) this.#signers.set(this.#keyIdHex, this.#keyId);
      this.#maybeCheckpoint();
      return signed.map((x) => x.entry);
    }
  }

  /**
   * Reads entries other writers appended since the last append (shared PostgreSQL logs).
   * @returns the new size
   */
  refresh(): Promise<number> {
    try {
      this.#check();
    } catch (error) {
      return Promise.reject(error);
    }
    const run = async (): Promise<number> => {
      await this.#catchUp();
      return this.#tree.size;
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /**
   * MTH of the first `treeSize` entries.
   * @throws AuditError `not_found` beyond the log, `malformed` for a non-integer, `storage_failure` once closed
   */
  rootHash(treeSize: number = this.size): Uint8Array {
    this.#check();
    assertSafeInt(treeSize, 'treeSize');
    const tree = this.#tree;
    if (tree instanceof MerkleTree) return tree.root(treeSize);
    if (treeSize !== tree.size) throw new AuditError('not_found', `this log keeps only its current root (size ${tree.size}), opened with proofs: false`);
    return tree.root();
  }

  /** The full tree, for what needs more than the current root. */
  #fullTree(what: string): MerkleTree {
    this.#check();
    if (this.#tree instanceof MerkleTree) return this.#tree;
    throw new AuditError('not_found', `this log keeps no ${what} (opened with proofs: false)`);
  }

  /**
   * Signs a tree head for the first `treeSize` entries (default: all), timestamped by the clock.
   * @throws AuditError `not_found` beyond the log, `key_wiped` when the writer key was wiped, `storage_failure` once
   *   closed (a closed log signs nothing)
   */
  treeHead(treeSize: number = this.size): SignedTreeHead {
    const rootHash = this.rootHash(treeSize);
    return signTreeHead(this.#crypto, this.#writer, { treeSize, rootHash, timestampMs: assertIntLike(this.#clock(), 'clock()') });
  }

  /**
   * Inclusion proof of entry `index` in the tree of `treeSize` entries (default: all).
   * @throws AuditError `not_found` unless index < treeSize ≤ size, `malformed` for a negative or non-integer index,
   *   `storage_failure` once closed
   */
  inclusionProof(index: number, treeSize: number = this.size): InclusionProof {
    return this.#fullTree('proofs').inclusionProof(index, treeSize);
  }

  /**
   * Consistency proof between tree sizes `oldSize` ≤ `newSize` (default: all).
   * @throws AuditError `not_found` / `malformed` for sizes outside the log, `storage_failure` once closed
   */
  consistencyProof(oldSize: number, newSize: number = this.size): ConsistencyProof {
    return this.#fullTree('proofs').consistencyProof(oldSize, newSize);
  }

  /**
   * Leaf hash of entry `index`.
   * @throws AuditError `malformed` unless a safe integer ≥ 0, `not_found` unless below the size, `storage_failure` once closed
   */
  leafHash(index: number): Uint8Array {
    return this.#fullTree('leaf hashes').leafHash(index);
  }

  /**
   * Reads one stored entry.
   * @throws AuditError `not_found` beyond the log, `malformed` for a negative or non-integer index, `storage_failure` once closed
   */
  async entry(index: number): Promise<AuditMessage> {
    this.#check();
    assertSafeInt(index, 'index');
    if (index >= this.size) throw new AuditError('not_found', `no entry ${index} (size ${this.size})`);
    for await (const e of this.#store.read(index, index + 1)) return e;
    throw new AuditError('not_found', `entry ${index} is missing from the store`);
  }

  /**
   * Waits for the appends already made (they are written), then closes the store. Idempotent. Every method
   * called afterwards — append, notify, refresh, entry, rootHash, treeHead, the proofs and leafHash — throws
   * (or rejects with) the same `storage_failure` "the audit log is closed"; the getters (`size`, `publicKey`,
   * `keyId`, `store`, `opening`) still answer.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Until the queue settles: a drain of more than one group schedules the next one.
    for (let queue = this.#queue; ; queue = this.#queue) {
      await queue;
      if (queue === this.#queue) break;
    }
    // A restart after a graceful close reads no entry at all.
    await this.#checkpointWrite;
    this.#maybeCheckpoint(true);
    await this.#checkpointWrite;
    await this.#store.close();
  }

  /**
   * Ingests stored entries past the local tip, checking index, signature (writer key or trustedKeys) and
   * link of each. Chaining onto an entry is vouching for its bytes (the verifier's rule 2b, PROTOCOL §9.5),
   * so an entry someone else put in the store (a rogue writer, anyone with INSERT on the table) is adopted
   * only if a trusted key signed it; otherwise the log refuses to extend the store.
   */
  async #catchUp(): Promise<void> {
    const to = await this.#store.size();
    let expected = this.#tree.size;
    if (to < expected) throw new AuditError('removed', `the store holds ${to} entries, fewer than the ${expected} this log has seen`);
    for await (const entry of this.#store.read(expected, to)) {
      if (entry.index !== BigInt(expected)) {
        throw new AuditError(entry.index > BigInt(expected) ? 'removed' : 'inserted', `stored entry at position ${expected} has index ${entry.index}`);
      }
      const digest = digestEntry(this.#crypto, entry);
      const pk = this.#keys.get(entry.signerKeyId);
      if (pk === undefined || !this.#crypto.ed25519.verify(entry.signature, digest.layout, pk)) {
        throw new AuditError(
          'bad_signature',
          `stored entry ${expected} is not signed by the writer key or a trusted key (${pk === undefined ? 'unknown signer_key_id' : 'signature does not verify'}): ` +
            'refusing to extend it (run verifyChain to classify; pass the other writers\' keys as trustedKeys)',
        );
      }
      if (!this.#crypto.constantTimeEqual(entry.previousHash, this.#tip)) {
        throw new AuditError('bad_link', `stored entry ${expected} does not link to entry ${expected - 1} (run verifyChain to classify)`);
      }
      if (expected === 0) this.#first = digest.entryHash;
      if (this.#signers !== undefined) {
        const id = toHex(entry.signerKeyId);
        if (!this.#signers.has(id)) this.#signers.set(id, entry.signerKeyId.slice());
      }
      this.#tree.append(digest.leafHash);
      this.#tip = digest.entryHash;
      expected++;
    }
    if (expected !== to) throw new AuditError('removed', `the store reported ${to} entries but returned ${expected}`);
  }

  /** The one error of a closed log. */
  #check(): void {
    if (this.#closed) throw new AuditError('storage_failure', 'the audit log is closed');
  }
}

/**
 * Builds the Merkle tree of a sequence of entries (no verification: use
 * {@link verifyChain} with `tree` to verify and build in one pass).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param entries entries in order
 * @returns the tree
 */
export async function treeFromEntries(crypto: ParleyCrypto, entries: AsyncIterable<AuditMessage> | Iterable<AuditMessage>): Promise<MerkleTree> {
  assertCrypto(crypto);
  assertIterable(entries, 'entries');
  const tree = new MerkleTree(merkleHasher(crypto));
  for await (const entry of entries) tree.append(digestEntry(crypto, assertEntry(entry)).leafHash);
  return tree;
}

