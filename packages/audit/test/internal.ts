// Test-only access to internals (the digest fast path), plus the public API.
import type { AuditMessage } from '@parley/proto';
import { decodeEntry, digestEntry, type EntryDigest } from '../src/entry.js';
import { crypto } from './fixtures.js';

export * from '../src/index.js';

/** Layout, entry hash and leaf hash of an entry (the verifier's fast path). */
export const digestEntryForTest = Object.assign((entry: AuditMessage): EntryDigest => digestEntry(crypto, entry), {
  decode: (bytes: Uint8Array): AuditMessage => decodeEntry(bytes),
});
