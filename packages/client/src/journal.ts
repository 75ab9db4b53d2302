/**
 * The agent's journal (docs/PROTOCOL.md §13, §17): every fact the delivery
 * contract and the nonce rule depend on, as sealed records in a StateStore.
 *
 *   session   sealed session state (PSS1, §13), replacing any earlier one of that session — unless it is older:
 *             `ep` (its send epoch + newest receive epoch, both only growing) below the held one's
 *   closed    the session ended; forget it
 *   reserve   the session may seal counters below `upTo`: written (and fsynced) BEFORE any of them is sealed
 *   out_unsealed  a send not sealed yet (§17.2 item 2): the message as the application gave it, its recipient,
 *             created and expiry times — written when `send` finds no session with the recipient, before the
 *             agent waits for one; replaced by the entry's `out` record (same id) in one append once the
 *             message is sealed (a send made in a live session is sealed at once: its `out` record only)
 *   out       an outbox entry: the sealed envelope, the plaintext to reseal it and the recipient's certified
 *             key (to verify its receipt or SessionReject without the session), until its receipt
 *   out_done  the outbox entry is settled (receipt, expiry, permanent refusal)
 *   in        an opened message not yet acknowledged by the application — also the replay-window mark
 *             of its counter and hash, in the same record, so the two can never disagree after a crash
 *   in_done   the application acknowledged it: the receipt signed for it (re-sent on redelivery)
 *   bundle    the newest trust bundle document the agent accepted from its registry (§15.9), so a restart
 *             continues from it instead of the pinned bundle; the highest version wins
 *   revocations  the revocation list this agent follows (§15.6, revocation-follow.ts): the registry id (hex), the
 *             highest list version verified, and revocations held (`kept`: agent ids or serials in hex, with
 *             their reason and time) — written when either changes, with the revocations newly held; replay
 *             takes the union and the highest version (a record of another registry starts over), compaction
 *             writes it all again (in records of at most 1 000). Nothing is un-revoked across a restart
 *
 * Each record is sealed on its own: "PAR1" ‖ salt(32) ‖ ChaCha20-Poly1305(k, 0, "PAR1" ‖ salt, JSON) with
 * k = BLAKE2b-256(key = stateKey, "parley/v1/agent-journal" ‖ salt). A fresh random salt per record gives a
 * fresh key, so nonce 0 is never used twice under one key whatever the process does or crashes into.
 * Replaying the records in order is idempotent: a record written twice (before and after a compaction)
 * changes nothing the second time.
 */
import { SecretKey, concatBytes, type ParleyCrypto } from '@parley/crypto-core';
import { ClientError } from './errors.js';
import type { StateStore } from './state-store.js';

const MAGIC = new TextEncoder().encode('PAR1');
const SALT = 32;
const CONTEXT = new TextEncoder().encode('parley/v1/agent-journal');
export const JOURNAL_VERSION = 1;

/** An outgoing message as the application gave it (kept to reseal it in a new session). */
export interface OutboxMessage {
  readonly type: number;
  readonly content: unknown;
  /** base64url, when present. */
  readonly handoffHash?: string;
  readonly parentMessageHash?: string;
}

export type JournalRecord =
  /**
   * `ep`: the snapshot's send epoch plus its newest receive epoch (session-snapshots.ts); a record with a lower
   * one than the session's record replayed before it is older and is ignored (absent in older records).
   */
  | { readonly t: 'session'; readonly id: string; readonly sealed: string; readonly ep?: number }
  | { readonly t: 'closed'; readonly id: string }
  | { readonly t: 'reserve'; readonly id: string; readonly upTo: number }
  | {
      readonly t: 'out';
      readonly id: string;
      readonly to: string;
      readonly msg: OutboxMessage;
      /** SecureMessage protobuf, base64url. */
      readonly env: string;
      readonly hash: string;
      readonly sid: string;
      /** The recipient's certified identity key in session `sid`, base64url: verifies its receipt and SessionReject after a restart without the session (absent in older records). */
      readonly peer?: string;
      readonly at: number;
      readonly exp: number;
      readonly reseals: number;
    }
  /**
   * A send waiting for a session, nothing of it sealed yet (§17.2 item 2): replaced by its `out` record (same
   * `id`), or ended by `out_done`. Journals written before it existed have none, and load as they did.
   */
  | { readonly t: 'out_unsealed'; readonly id: string; readonly to: string; readonly msg: OutboxMessage; readonly at: number; readonly exp: number }
  | { readonly t: 'out_done'; readonly id: string; readonly outcome: 'delivered' | 'expired' | 'failed' | 'cancelled' }
  | {
      readonly t: 'in';
      readonly hash: string;
      readonly sid: string;
      readonly n: number;
      readonly from: string;
      /** SecureMessage protobuf, base64url. */
      readonly env: string;
      /** Encoded MessagePayload, base64url. */
      readonly payload: string;
      readonly salt: string;
      /** The sender's AgentCertificate, base64url. */
      readonly cert: string;
      readonly at: number;
    }
  | { readonly t: 'in_done'; readonly hash: string; readonly receipt: string; readonly at: number }
  /** A SignedTrustBundle protobuf, base64url, at trust bundle version `version` (not `v`: that is the record format's). */
  | { readonly t: 'bundle'; readonly version: number; readonly doc: string }
  /** Journals written before it existed have none, and load as they did (nothing kept). */
  | { readonly t: 'revocations'; readonly registry: string; readonly version: number; readonly kept: readonly KeptRevocation[] }
  /**
   * The identity public key (base64url) the state was written under: an agent started with another key (its key
   * was rotated, §17.8) does not restore the sessions, which its peers hold under the old certificate.
   * `rotatedAtMs`: when this key first replaced another — for a message lifetime after it the agent's replies
   * carry its certificate, across restarts, since its peers' old sessions and sends live that long.
   */
  | { readonly t: 'identity'; readonly key: string; readonly rotatedAtMs?: number };

/** A revocation held by the followed list: a revoked agent id, or a revoked serial (hex); `at`: its revokedAtMs. */
export type KeptRevocation = { readonly agent: string; readonly reason: string; readonly at: number } | { readonly serial: string; readonly reason: string; readonly at: number };

/** Seals and opens journal records, and keeps the store's order. */
export class Journal {
  readonly #crypto: ParleyCrypto;
  readonly #key: SecretKey;
  readonly #store: StateStore;
  #failed: ClientError | undefined;

  constructor(crypto: ParleyCrypto, stateKey: SecretKey, store: StateStore) {
    if (!(stateKey instanceof SecretKey) || stateKey.length !== 32) throw new ClientError('malformed', 'stateKey must be a 32-byte SecretKey');
    this.#crypto = crypto;
    this.#key = stateKey;
    this.#store = store;
  }

  /** The failure that made the journal stop accepting records, if any (fail closed). */
  get failure(): ClientError | undefined {
    return this.#failed;
  }

  /**
   * Every record, in order. A last record that does not open is a torn write and is dropped; any
   * other record that does not open or parse is `state_corrupt`.
   */
  async load(): Promise<JournalRecord[]> {
    const sealed = await this.#store.load();
    const out: JournalRecord[] = [];
    for (let i = 0; i < sealed.length; i++) {
      try {
        out.push(this.#open(sealed[i]!));
      } catch (error) {
        if (i === sealed.length - 1) break; // torn tail (e.g. zero-filled pages after a crash)
        throw error;
      }
    }
    return out;
  }

  /**
   * Appends records durably (resolves after fsync). After one failure every later append fails too
   * with the same error: a journal with a hole in it must not be trusted with a counter or a message.
   */
  async append(records: readonly JournalRecord[]): Promise<void> {
    if (this.#failed !== undefined) throw this.#failed;
    const sealed = records.map((r) => this.#seal(r));
    try {
      await this.#store.append(sealed);
    } catch (error) {
      this.#failed ??= new ClientError('unavailable', `agent state could not be saved: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      throw this.#failed;
    }
  }

  /** Atomically replaces the journal with `records` (compaction). */
  async rewrite(records: readonly JournalRecord[]): Promise<void> {
    if (this.#failed !== undefined) throw this.#failed;
    try {
      await this.#store.rewrite(records.map((r) => this.#seal(r)));
    } catch (error) {
      this.#failed ??= new ClientError('unavailable', `agent state could not be saved: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      throw this.#failed;
    }
  }

  close(): Promise<void> {
    return this.#store.close();
  }

  #recordKey(salt: Uint8Array): SecretKey {
    return SecretKey.adopt(this.#crypto.blake2b(concatBytes(CONTEXT, salt), 32, this.#key), 'aead');
  }

  #seal(record: JournalRecord): Uint8Array {
    const plaintext = new TextEncoder().encode(JSON.stringify({ v: JOURNAL_VERSION, ...record }));
    const salt = this.#crypto.randomBytes(SALT);
    const header = concatBytes(MAGIC, salt);
    const key = this.#recordKey(salt);
    try {
      return concatBytes(header, this.#crypto.aead.seal(key, 0n, plaintext, header));
    } finally {
      key.wipe();
      plaintext.fill(0);
    }
  }

  #open(sealed: Uint8Array): JournalRecord {
    if (sealed.length < MAGIC.length + SALT + 16 || !this.#crypto.constantTimeEqual(sealed.subarray(0, MAGIC.length), MAGIC)) {
      throw new ClientError('state_corrupt', 'agent state record has a bad header');
    }
    const header = sealed.subarray(0, MAGIC.length + SALT);
    const key = this.#recordKey(sealed.subarray(MAGIC.length, MAGIC.length + SALT));
    let parsed: unknown;
    try {
      const plaintext = this.#crypto.aead.open(key, 0n, sealed.subarray(header.length), header);
      parsed = JSON.parse(new TextDecoder().decode(plaintext));
      plaintext.fill(0);
    } catch (cause) {
      const where = this.#store.location ?? 'the state store';
      throw new ClientError(
        'state_corrupt',
        `agent state record does not open: ${where} was written under another stateKey, or it was altered. It cannot be read ` +
          `without the key it was written with. To start afresh, move ${where} aside: the agent then starts with no saved state, ` +
          'and what only that state held is lost — sends not yet confirmed by a receipt, received messages not yet acknowledged, and its sessions',
        { cause },
      );
    } finally {
      key.wipe();
    }
    const r = parsed as { v?: unknown; t?: unknown };
    if (typeof r !== 'object' || r === null || r.v !== JOURNAL_VERSION || typeof r.t !== 'string') throw new ClientError('state_corrupt', 'agent state record has an unknown version or type');
    return parsed as JournalRecord;
  }
}

/** What a journal replays to. */
export interface JournalState {
  /** Live sessions: sealed state and the reserved send mark. */
  readonly sessions: Map<string, { sealed: string; reservedUpTo: number }>;
  /** Received counters and hashes per session, to mark in the restored windows. */
  readonly marks: Map<string, { n: number; hash: string }[]>;
  /** Pending sends by id: sealed (`out`) or still waiting for a session (`out_unsealed`). */
  readonly outbox: Map<string, Extract<JournalRecord, { t: 'out' | 'out_unsealed' }>>;
  readonly inbox: Map<string, Extract<JournalRecord, { t: 'in' }>>;
  readonly receipts: Map<string, { receipt: string; at: number }>;
  /** The newest trust bundle document recorded, if any. */
  bundle: { readonly version: number; readonly doc: string } | undefined;
  /** The identity key the state was last written under (absent in older journals). */
  identityKey: string | undefined;
  /** When that key was first started replacing another (a rotation, §17.8), if it did. */
  rotatedAtMs: number | undefined;
  /** The followed revocation list's kept data (`revocations` records; absent in older journals), by subject. */
  revocations?: { registry: string; version: number; readonly kept: Map<string, KeptRevocation> };
}

/** Replays records into the state they describe (idempotent, order-respecting). */
export function replay(records: readonly JournalRecord[]): JournalState {
  const state: JournalState = { sessions: new Map(), marks: new Map(), outbox: new Map(), inbox: new Map(), receipts: new Map(), bundle: undefined, identityKey: undefined, rotatedAtMs: undefined };
  /** The `ep` of each session's record kept so far: an older snapshot never replaces a newer one. */
  const positions = new Map<string, number>();
  const mark = (sid: string, n: number, hash: string): void => {
    let list = state.marks.get(sid);
    if (list === undefined) state.marks.set(sid, (list = []));
    list.push({ n, hash });
  };
  for (const r of records) {
    switch (r.t) {
      case 'session': {
        const prev = state.sessions.get(r.id);
        const held = positions.get(r.id);
        if (prev !== undefined && held !== undefined && typeof r.ep === 'number' && r.ep < held) break; // older than the one held
        if (typeof r.ep === 'number') positions.set(r.id, r.ep);
        else positions.delete(r.id); // a record of an older version of this code: replaces, as it always did
        state.sessions.set(r.id, { sealed: r.sealed, reservedUpTo: prev?.reservedUpTo ?? 0 });
        break;
      }
      case 'closed':
        state.sessions.delete(r.id);
        state.marks.delete(r.id);
        positions.delete(r.id);
        break;
      case 'reserve': {
        const s = state.sessions.get(r.id);
        if (s !== undefined) s.reservedUpTo = Math.max(s.reservedUpTo, r.upTo);
        break;
      }
      case 'out':
        state.outbox.set(r.id, r);
        break;
      case 'out_unsealed':
        if (typeof r.id !== 'string' || typeof r.to !== 'string' || typeof r.at !== 'number' || typeof r.exp !== 'number' || typeof r.msg !== 'object' || r.msg === null) {
          throw new ClientError('state_corrupt', 'agent state: a malformed unsealed send record');
        }
        // Its sealed record, once written, replaces it (it comes later in the journal); never the other way round.
        if (state.outbox.get(r.id)?.t !== 'out') state.outbox.set(r.id, r);
        break;
      case 'out_done':
        state.outbox.delete(r.id);
        break;
      case 'in':
        if (!state.receipts.has(r.hash)) state.inbox.set(r.hash, r);
        mark(r.sid, r.n, r.hash);
        break;
      case 'in_done':
        state.inbox.delete(r.hash);
        state.receipts.set(r.hash, { receipt: r.receipt, at: r.at });
        break;
      case 'bundle':
        if (typeof r.version !== 'number' || typeof r.doc !== 'string') throw new ClientError('state_corrupt', 'agent state: a malformed trust bundle record');
        if (state.bundle === undefined || r.version > state.bundle.version) state.bundle = { version: r.version, doc: r.doc };
        break;
      case 'revocations': {
        if (typeof r.registry !== 'string' || !/^[0-9a-f]{32}$/.test(r.registry) || !Number.isSafeInteger(r.version) || r.version < 0 || !Array.isArray(r.kept)) {
          throw new ClientError('state_corrupt', 'agent state: a malformed revocations record');
        }
        if (state.revocations === undefined || state.revocations.registry !== r.registry) state.revocations = { registry: r.registry, version: 0, kept: new Map() };
        const held = state.revocations;
        held.version = Math.max(held.version, r.version);
        for (const k of r.kept as readonly unknown[]) {
          const e = k as { agent?: unknown; serial?: unknown; reason?: unknown; at?: unknown };
          const key = typeof e.agent === 'string' ? `agent:${e.agent}` : typeof e.serial === 'string' && /^[0-9a-f]{32}$/.test(e.serial) ? `serial:${e.serial}` : undefined;
          if (key === undefined || typeof e.reason !== 'string' || typeof e.at !== 'number' || !Number.isSafeInteger(e.at)) throw new ClientError('state_corrupt', 'agent state: a malformed revocations record');
          if (!held.kept.has(key)) held.kept.set(key, k as KeptRevocation); // the first revocation of a subject stands
        }
        break;
      }
      case 'identity':
        if (typeof r.key !== 'string' || r.key === '') throw new ClientError('state_corrupt', 'agent state: a malformed identity record');
        if (r.rotatedAtMs !== undefined && (typeof r.rotatedAtMs !== 'number' || !Number.isSafeInteger(r.rotatedAtMs))) throw new ClientError('state_corrupt', 'agent state: a malformed identity record');
        state.identityKey = r.key;
        state.rotatedAtMs = r.rotatedAtMs;
        break;
      default:
        throw new ClientError('state_corrupt', 'agent state record of an unknown type');
    }
  }
  return state;
}
