/**
 * Where a gateway keeps the trust bundle it follows (docs/PROTOCOL.md §15.9):
 * a file beside the pinned one (`<trust_bundle_file>.followed.json`), so a
 * restart continues from the newest verified version instead of falling back
 * to the pinned file (which may predate an issuer rotation). JSON, written
 * through a temporary file, fsync and rename (mode 0600):
 *
 *   { "version": 1, "type": "parley-followed-trust-bundle", "registry_id": hex,
 *     "bundle_version": n, "saved_at_ms": n, "document": base64url(follower's saved state) }
 *
 * `document` is what the follower saves (@parley/protocol's TrustBundleFollower:
 * the pinned bundle's hash ‖ the SignedTrustBundle; a file of an earlier release
 * holds the bare SignedTrustBundle). The follower checks it again when loaded
 * (the pin it was followed from, structure, registry, its own signature); a
 * file that does not pass is reported and the pinned bundle used instead.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fromBase64Url, toBase64Url, toHex } from '@parley/crypto-core';
import type { TrustBundleStore } from '@parley/protocol';

const TYPE = 'parley-followed-trust-bundle';

interface StateJson {
  version: 1;
  type: typeof TYPE;
  registry_id: string;
  bundle_version: number;
  saved_at_ms: number;
  document: string;
}

/** The followed trust bundle's file for a pinned bundle file (or, trusting on first use, beside the audit key). */
export function followedBundlePath(trustBundleFile: string | undefined, auditKeyFile: string): string {
  return trustBundleFile === undefined ? join(dirname(auditKeyFile), 'trust-bundle.followed.json') : `${trustBundleFile}.followed.json`;
}

/** A {@link TrustBundleStore} in one JSON file. */
export function fileTrustBundleStore(path: string, registryId: Uint8Array): TrustBundleStore {
  return {
    load() {
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return Promise.resolve(undefined);
        return Promise.reject(error instanceof Error ? error : new Error(String(error)));
      }
      const json = JSON.parse(text) as Partial<StateJson>;
      if (json.version !== 1 || json.type !== TYPE || typeof json.document !== 'string') return Promise.reject(new Error(`${path} is not a followed trust bundle file`));
      return Promise.resolve(fromBase64Url(json.document));
    },
    save(encoded, version) {
      const json: StateJson = { version: 1, type: TYPE, registry_id: toHex(registryId), bundle_version: version, saved_at_ms: Date.now(), document: toBase64Url(encoded) };
      const tmp = `${path}.${process.pid}.tmp`;
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, `${JSON.stringify(json, null, 2)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      const dir = openSync(dirname(path), 'r');
      try {
        fsyncSync(dir);
      } catch {
        // some platforms cannot fsync a directory; the rename is atomic anyway
      } finally {
        closeSync(dir);
      }
      return Promise.resolve();
    },
  };
}
