/**
 * Registration and rotation challenges (docs/PROTOCOL.md §15.4): stateless until used — a challenge
 * carries its expiry and purpose under an HMAC with the registry's challenge secret, and only a used one
 * is written (inside the transaction that uses it).
 */
import { SecretKey, concatBytes } from '@parley/crypto-core';
import { bytes, type Queryable } from '@parley/db';
import type { ChallengePurpose } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import type { StoreState } from './context.js';

export class Challenges {
  readonly #s: StoreState;
  #challengeSecret: SecretKey | undefined;

  constructor(state: StoreState) {
    this.#s = state;
  }

  /**
   * Makes a challenge without writing anything (§15.4): random(8) ‖ u48be(expires_at_ms) ‖ u8(purpose) ‖
   * the first 17 bytes of HMAC-SHA256(challenge secret, "parley/v1/registry-challenge" ‖ those 15 bytes).
   * *Why:* CreateChallenge is anonymous; a row per call let anyone fill the table.
   */
  async create(purpose: ChallengePurpose, expiresAtMs: number): Promise<Uint8Array> {
    const body = new Uint8Array(CHALLENGE_BODY_BYTES);
    body.set(this.#s.crypto.randomBytes(8), 0);
    writeU48(body, 8, expiresAtMs);
    body[14] = purpose;
    const out = new Uint8Array(32);
    out.set(body, 0);
    out.set(this.#tag(await this.#challengeKey(), body), CHALLENGE_BODY_BYTES);
    return out;
  }

  /**
   * Checks a challenge's MAC, purpose and expiry, then records it as used (inside the caller's
   * transaction, so a failed registration leaves it unused).
   * @throws RpcError `challenge_invalid`
   */
  async consume(tx: Queryable, challenge: Uint8Array, purpose: ChallengePurpose, nowMs: number): Promise<void> {
    if (challenge.length !== 32) throw new RpcError('challenge_invalid', 'challenge unknown or already used: request a new one');
    const body = challenge.subarray(0, CHALLENGE_BODY_BYTES);
    // The secret is read through the transaction: a query on the pool while the transaction holds PGlite's
    // only connection would never return (a registry restarted with no secret cached hung on its first
    // registration, found by review), and on PostgreSQL it would take a second pooled connection.
    const key = await this.#challengeKeyIn(tx);
    if (key === undefined || !this.#s.crypto.constantTimeEqual(this.#tag(key, body), challenge.subarray(CHALLENGE_BODY_BYTES))) {
      throw new RpcError('challenge_invalid', 'challenge unknown or already used: request a new one');
    }
    if (body[14] !== purpose) throw new RpcError('challenge_invalid', 'challenge was issued for another purpose');
    const expiresAtMs = readU48(body, 8);
    if (expiresAtMs <= nowMs) throw new RpcError('challenge_invalid', 'challenge expired: request a new one');
    const rows = await tx.query('INSERT INTO challenges (challenge, purpose, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT (challenge) DO NOTHING RETURNING 1', [challenge, purpose, expiresAtMs]);
    if (rows.length === 0) throw new RpcError('challenge_invalid', 'challenge unknown or already used: request a new one');
  }

  #tag(key: SecretKey, body: Uint8Array): Uint8Array {
    return this.#s.crypto.hmacSha256(key, concatBytes(CHALLENGE_MAC_DOMAIN, body)).subarray(0, 32 - CHALLENGE_BODY_BYTES);
  }

  /** The registry's challenge secret: created once (by whichever instance comes first), then cached. Outside any transaction. */
  async #challengeKey(): Promise<SecretKey> {
    if (this.#challengeSecret !== undefined) return this.#challengeSecret;
    await this.#s.db.query("INSERT INTO registry_secrets (name, secret) VALUES ('challenge', $1) ON CONFLICT (name) DO NOTHING", [this.#s.crypto.randomBytes(32)]);
    return (await this.#challengeKeyIn(this.#s.db))!;
  }

  /**
   * The challenge secret read through `q` (the caller's transaction) when not cached; undefined when none
   * was ever created — then no challenge was ever made, and none is valid. Never creates it: a secret
   * inserted by a transaction that then rolls back would stay cached here but not in the database.
   */
  async #challengeKeyIn(q: Queryable): Promise<SecretKey | undefined> {
    if (this.#challengeSecret !== undefined) return this.#challengeSecret;
    const rows = await q.query<{ secret: unknown }>("SELECT secret FROM registry_secrets WHERE name = 'challenge'");
    if (rows[0] === undefined) return undefined;
    this.#challengeSecret ??= SecretKey.from(bytes(rows[0].secret), 'mac');
    return this.#challengeSecret;
  }
}

const CHALLENGE_BODY_BYTES = 15;
const CHALLENGE_MAC_DOMAIN = new TextEncoder().encode('parley/v1/registry-challenge');

function writeU48(out: Uint8Array, at: number, value: number): void {
  let v = value;
  for (let i = 5; i >= 0; i--) {
    out[at + i] = v % 256;
    v = Math.floor(v / 256);
  }
}

function readU48(from: Uint8Array, at: number): number {
  let v = 0;
  for (let i = 0; i < 6; i++) v = v * 256 + from[at + i]!;
  return v;
}
