/**
 * The shared-memory store's schema (docs/PROTOCOL.md §18.10), versioned with
 * @parley/db's one migration runner, like the gateway's and the registry's: each migration runs in its own transaction
 * under a transaction-scoped advisory lock, recorded in `memory_migrations`, so
 * several processes starting at once apply each exactly once; a database that
 * records a version this build does not know is refused. Same SQL on
 * PostgreSQL and PGlite.
 *
 * What the tables hold is what the store may see: ids, versions, sizes,
 * digests, signatures, certificates, sealed key copies and ciphertext. No
 * column ever holds a key or a plaintext.
 */
import { migrate, type Database, type Migration } from '@parley/db';

/** Advisory lock key serialising the memory migrations ("parleymm"). */
const MIGRATION_LOCK_KEY = 0x7061726c65796d6dn;

/** The schema, in order. Never edit an applied migration: add one. */
export const MEMORY_MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: 'shared memory',
    sql: `
      -- One row per memory: the head of its membership log, its key epoch, its usage.
      CREATE TABLE memories (
        memory_id           text     PRIMARY KEY,
        owner_id            text     NOT NULL,
        created_at_ms       bigint   NOT NULL,
        expires_at_ms       bigint   NOT NULL,           -- 0: never
        membership_version  bigint   NOT NULL CHECK (membership_version >= 1),
        membership_head     bytea    NOT NULL CHECK (length(membership_head) = 32),
        current_epoch       integer  NOT NULL CHECK (current_epoch >= 1),
        used_bytes          bigint   NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
        used_segments       bigint   NOT NULL DEFAULT 0 CHECK (used_segments >= 0)
      );
      CREATE INDEX memories_by_owner ON memories (owner_id);
      CREATE INDEX memories_expiry ON memories (expires_at_ms) WHERE expires_at_ms > 0;

      -- Per owner: how much all its memories use (the per-owner quotas).
      CREATE TABLE memory_owners (
        owner_id       text    PRIMARY KEY,
        memories       bigint  NOT NULL DEFAULT 0 CHECK (memories >= 0),
        used_bytes     bigint  NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
        used_segments  bigint  NOT NULL DEFAULT 0 CHECK (used_segments >= 0)
      );

      -- The signed, hash-chained membership log (protobuf MembershipEntry as received).
      CREATE TABLE memory_membership_log (
        memory_id   text    NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
        version     bigint  NOT NULL CHECK (version >= 1),
        entry       bytea   NOT NULL,
        entry_hash  bytea   NOT NULL CHECK (length(entry_hash) = 32),
        PRIMARY KEY (memory_id, version)
      );

      -- The member list the log folds to (the ACL the store enforces), with the certificate of each grant.
      CREATE TABLE memory_members (
        memory_id      text      NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
        member_id      text      NOT NULL,
        access         smallint  NOT NULL CHECK (access IN (1, 2, 3)),
        public_key     bytea     NOT NULL CHECK (length(public_key) = 32),
        expires_at_ms  bigint    NOT NULL,               -- 0: never
        certificate    bytea     NOT NULL,
        PRIMARY KEY (memory_id, member_id)
      );
      CREATE INDEX memory_members_by_member ON memory_members (member_id, memory_id);

      -- Signed epoch records still needed (from the oldest a segment uses).
      CREATE TABLE memory_epochs (
        memory_id  text     NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
        epoch      integer  NOT NULL CHECK (epoch >= 1),
        record     bytea    NOT NULL,
        PRIMARY KEY (memory_id, epoch)
      );

      -- Sealed key copies of the current epoch (and of earlier ones until the next rotation).
      CREATE TABLE memory_key_wraps (
        memory_id  text     NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
        member_id  text     NOT NULL,
        epoch      integer  NOT NULL,
        wrap       bytea    NOT NULL,
        PRIMARY KEY (memory_id, member_id, epoch)
      );

      -- The current version of each segment: signed write record and ciphertext.
      CREATE TABLE memory_segments (
        memory_id      text     NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
        segment_id     text     NOT NULL,
        version        bigint   NOT NULL CHECK (version >= 1),
        key_epoch      integer  NOT NULL,
        record         bytea    NOT NULL,
        ciphertext     bytea    NOT NULL,
        size           bigint   NOT NULL CHECK (size = length(ciphertext)),
        expires_at_ms  bigint   NOT NULL,               -- 0: never
        PRIMARY KEY (memory_id, segment_id)
      );
      CREATE INDEX memory_segments_expiry ON memory_segments (expires_at_ms) WHERE expires_at_ms > 0;
      CREATE INDEX memory_segments_epoch ON memory_segments (memory_id, key_epoch);

      -- Request nonces seen, kept until their timestamps leave the skew window (§18.8).
      CREATE TABLE memory_request_nonces (
        agent_id       text    NOT NULL,
        nonce          bytea   NOT NULL CHECK (length(nonce) = 16),
        expires_at_ms  bigint  NOT NULL,
        PRIMARY KEY (agent_id, nonce)
      );
      CREATE INDEX memory_request_nonces_expiry ON memory_request_nonces (expires_at_ms);

      -- The last certificate each agent authenticated a call with (GetAgentCertificate).
      CREATE TABLE memory_agents (
        agent_id     text    PRIMARY KEY,
        serial       bytea   NOT NULL,
        certificate  bytea   NOT NULL,
        seen_at_ms   bigint  NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'replaced member keys',
    sql: `
      -- The epoch that was current when a GRANT replaced a member's key that held a copy of it (0: none). While it
      -- is still the current epoch, a key no member holds any more can open it, so a rotation is required
      -- (§18.5): the next epoch is sealed to the new key only.
      ALTER TABLE memories ADD COLUMN replaced_key_epoch integer NOT NULL DEFAULT 0 CHECK (replaced_key_epoch >= 0);
    `,
  },
]);

/**
 * Applies the memory migrations not yet recorded (@parley/db's runner: idempotent; safe from several processes at once).
 * @returns the schema version afterwards
 * @throws DbError `failed_precondition` when the database records a version newer than this build knows
 */
export async function migrateMemorySchema(db: Database): Promise<number> {
  return (await migrate(db, { component: 'shared-memory store', table: 'memory_migrations', lockKey: MIGRATION_LOCK_KEY, migrations: MEMORY_MIGRATIONS })).version;
}
