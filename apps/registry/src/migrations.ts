/**
 * The registry's schema: versioned SQL migrations, applied on start (DESIGN.md
 * "Registry") by @parley/db's one migration runner (`migrate`: an advisory
 * lock per component, a `registry_migrations` table, a newer schema refused).
 * The same SQL runs on PostgreSQL and PGlite.
 */
import { migrate, type Database, type Migration, type MigrationResult } from '@parley/db';

export type { Migration, MigrationResult };

/** Advisory lock key that serialises migrations (any fixed 64-bit value; this is "parleyrg"). */
export const MIGRATION_LOCK_KEY = 0x7061726c65797267n;

/** The schema, in order. Never edit an applied migration: add a new one. */
export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: 'registry schema',
    sql: `
      -- One row: this registry's identity.
      CREATE TABLE registry_meta (
        singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        registry_id    bytea   NOT NULL CHECK (length(registry_id) = 16),
        created_at_ms  bigint  NOT NULL
      );

      -- Issuer public keys (the secret keys live in key files, never here).
      CREATE TABLE issuer_keys (
        key_id         bytea   PRIMARY KEY CHECK (length(key_id) = 16),
        public_key     bytea   NOT NULL UNIQUE CHECK (length(public_key) = 32),
        created_at_ms  bigint  NOT NULL,
        retired_at_ms  bigint,
        not_after_ms   bigint,
        active         boolean NOT NULL DEFAULT false
      );
      CREATE UNIQUE INDEX issuer_keys_one_active ON issuer_keys (active) WHERE active;

      -- Operator keys allowed to sign state-changing requests.
      CREATE TABLE operators (
        key_id           bytea  PRIMARY KEY CHECK (length(key_id) = 16),
        public_key       bytea  NOT NULL UNIQUE CHECK (length(public_key) = 32),
        name             text   NOT NULL,
        added_at_ms      bigint NOT NULL,
        added_by_key_id  bytea
      );

      CREATE TABLE agents (
        agent_id          text   PRIMARY KEY,
        agent_type        text   NOT NULL,
        capabilities      text[] NOT NULL,
        current_serial    bytea  NOT NULL CHECK (length(current_serial) = 16),
        registered_at_ms  bigint NOT NULL,
        updated_at_ms     bigint NOT NULL,
        revoked_version   bigint
      );
      CREATE INDEX agents_by_type ON agents (agent_type, agent_id);
      CREATE INDEX agents_by_capability ON agents USING gin (capabilities);

      -- Every certificate ever issued. An identity key is registered once, ever.
      CREATE TABLE certificates (
        serial               bytea  PRIMARY KEY CHECK (length(serial) = 16),
        agent_id             text   NOT NULL REFERENCES agents (agent_id),
        identity_public_key  bytea  NOT NULL UNIQUE CHECK (length(identity_public_key) = 32),
        issuer_key_id        bytea  NOT NULL REFERENCES issuer_keys (key_id),
        valid_from_ms        bigint NOT NULL,
        valid_until_ms       bigint NOT NULL,
        issued_at_ms         bigint NOT NULL,
        encoded              bytea  NOT NULL,
        revoked_version      bigint
      );
      CREATE INDEX certificates_by_agent ON certificates (agent_id);
      CREATE INDEX certificates_by_issuer ON certificates (issuer_key_id, valid_until_ms);

      -- The revocation list's version counter and chain head: one row, updated
      -- in the revoking transaction, so versions are gapless under concurrency
      -- (the row lock orders the writers; a rollback returns the number).
      CREATE TABLE revocation_counter (
        singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version    bigint  NOT NULL,
        head_hash  bytea   NOT NULL CHECK (length(head_hash) = 32)
      );
      INSERT INTO revocation_counter (version, head_hash) VALUES (0, decode(repeat('00', 32), 'hex'));

      -- The append-only revocation list.
      CREATE TABLE revocations (
        version          bigint   PRIMARY KEY CHECK (version > 0),
        agent_id         text,
        serial           bytea    CHECK (length(serial) = 16),
        reason           smallint NOT NULL,
        reason_text      text     NOT NULL,
        revoked_at_ms    bigint   NOT NULL,
        recorded_at_ms   bigint   NOT NULL,
        entry_hash       bytea    NOT NULL CHECK (length(entry_hash) = 32),
        operator_key_id  bytea,
        CHECK ((agent_id IS NULL) <> (serial IS NULL))
      );
      CREATE UNIQUE INDEX revocations_one_per_agent ON revocations (agent_id) WHERE agent_id IS NOT NULL;
      CREATE UNIQUE INDEX revocations_one_per_serial ON revocations (serial) WHERE serial IS NOT NULL;

      -- Single-use proof-of-possession challenges.
      CREATE TABLE challenges (
        challenge      bytea    PRIMARY KEY CHECK (length(challenge) = 32),
        purpose        smallint NOT NULL,
        expires_at_ms  bigint   NOT NULL
      );

      -- Operator request nonces seen, kept until their timestamps are out of the skew window.
      CREATE TABLE operator_nonces (
        key_id         bytea  NOT NULL,
        nonce          bytea  NOT NULL,
        expires_at_ms  bigint NOT NULL,
        PRIMARY KEY (key_id, nonce)
      );
    `,
  },
  {
    version: 2,
    name: 'operator removal',
    sql: `
      -- A removed operator keeps its row (who listed it, who removed it, when) and can never sign again;
      -- the same key cannot be listed again (its key_id stays taken): a leaked key stays out.
      ALTER TABLE operators ADD COLUMN removed_at_ms bigint;
      ALTER TABLE operators ADD COLUMN removed_by_key_id bytea;
    `,
  },
  {
    version: 3,
    name: 'stateless challenges',
    sql: `
      -- CreateChallenge is anonymous, so it writes nothing: a challenge is MACed under this secret
      -- (docs/PROTOCOL.md §15.4). \`challenges\` now records only challenges CONSUMED by a verified
      -- registration or rotation, until they expire, to keep them single use.
      CREATE TABLE registry_secrets (
        name    text  PRIMARY KEY,
        secret  bytea NOT NULL CHECK (length(secret) = 32)
      );
      DELETE FROM challenges;
    `,
  },
  {
    version: 4,
    name: 'issuer lifecycle, signed trust bundles, join tokens',
    sql: `
      -- Issuer keys move prepared (1) -> active (2) -> retired (3) -> dropped (4, no longer in the
      -- trust bundle) (docs/PROTOCOL.md §15.9). \`active\` stays equal to (state = 2).
      ALTER TABLE issuer_keys ADD COLUMN state smallint;
      UPDATE issuer_keys SET state = CASE WHEN active THEN 2 ELSE 3 END;
      ALTER TABLE issuer_keys ALTER COLUMN state SET NOT NULL;
      ALTER TABLE issuer_keys ADD CONSTRAINT issuer_keys_state CHECK (state BETWEEN 1 AND 4 AND active = (state = 2));
      -- For a prepared key: when it becomes active, and the grace it gives the key it retires
      -- (0: until the last certificate that key signed expires).
      ALTER TABLE issuer_keys ADD COLUMN activates_at_ms bigint;
      ALTER TABLE issuer_keys ADD COLUMN retire_grace_ms bigint;
      ALTER TABLE issuer_keys ADD COLUMN activated_at_ms bigint;
      CREATE UNIQUE INDEX issuer_keys_one_prepared ON issuer_keys (state) WHERE state = 1;

      -- Every version of the signed trust bundle document (SignedTrustBundle protobuf), gapless.
      CREATE TABLE trust_bundles (
        version       bigint PRIMARY KEY CHECK (version > 0),
        issued_at_ms  bigint NOT NULL,
        document      bytea  NOT NULL
      );

      -- One-time enrolment tokens (§15.11): only a hash of the secret is stored.
      CREATE TABLE join_tokens (
        token_id           bytea  PRIMARY KEY CHECK (length(token_id) = 16),
        token_hash         bytea  NOT NULL CHECK (length(token_hash) = 32),
        agent_id           text   NOT NULL,
        agent_type         text   NOT NULL,
        capabilities       text[] NOT NULL,
        validity_ms        bigint NOT NULL,
        created_at_ms      bigint NOT NULL,
        expires_at_ms      bigint NOT NULL,
        created_by_key_id  bytea  NOT NULL,
        used_at_ms         bigint,
        used_serial        bytea,
        revoked_at_ms      bigint
      );
      CREATE INDEX join_tokens_by_expiry ON join_tokens (expires_at_ms);
    `,
  },
  {
    version: 5,
    name: 'key rotation rate limit',
    sql: `
      -- When the agent last rotated its key (RotateKey). Each rotation appends a SUPERSEDED entry to the
      -- revocation list for ever, so an agent rotates at most once a minute (docs/PROTOCOL.md §15.5).
      ALTER TABLE agents ADD COLUMN last_rotated_at_ms bigint;
    `,
  },
]);

/**
 * Applies every registry migration not yet recorded, each in its own transaction under the advisory lock.
 * Safe to run twice and from several processes at once.
 *
 * @param db the database (with its search_path schema, if any)
 * @param schema when set, created first (PostgreSQL only; PGlite uses `public`)
 * @param migrations the list to apply (default {@link MIGRATIONS})
 * @returns the versions applied and the resulting version
 * @throws DbError `failed_precondition` when the database records a newer version than this build knows;
 *   `malformed` on a bad schema name
 */
export function applyMigrations(db: Database, schema?: string, migrations: readonly Migration[] = MIGRATIONS): Promise<MigrationResult> {
  return migrate(db, { component: 'registry', table: 'registry_migrations', lockKey: MIGRATION_LOCK_KEY, migrations }, schema === undefined ? {} : { schema });
}
