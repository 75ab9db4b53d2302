/**
 * Ed25519 key files: the registry's issuer key, operator keys and agent keys
 * (docs/PROTOCOL.md §15.2). JSON, written with mode 0600 through a temporary
 * file and a rename (so a crash never leaves half a key), refused on read when
 * group or others may read it (as ssh does). The seed is stored either plainly
 * or sealed under a passphrase:
 *
 *   key  = Argon2id(passphrase, salt, ops_limit, mem_limit)            (crypto_pwhash, 32 bytes)
 *   ad   = layout('parley/v1/sealed-key-file').str(type).fixed(public_key, 32)
 *   ciphertext = ChaCha20-Poly1305(key, counter 0, ad, seed)          (one key per salt, so nonce 0 is unique)
 *
 * The public key and key id stay readable, so `operator list` and the trust
 * bundle need no passphrase.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { renameDurably, writeSecretFile as writeSecret } from '@parley/cli-kit';
import {
  PWHASH_MEMLIMIT_INTERACTIVE,
  PWHASH_MEMLIMIT_MODERATE,
  PWHASH_OPSLIMIT_INTERACTIVE,
  PWHASH_OPSLIMIT_MODERATE,
  PWHASH_SALT_BYTES,
  fromBase64Url,
  fromHex,
  layout,
  toBase64Url,
  toHex,
  utf8,
  type Ed25519KeyPair,
  type ParleyCrypto,
} from '@parley/crypto-core';
import { keyId } from '@parley/identity';
import { RpcError } from '@parley/rpc';

/** What a key file holds. */
export type KeyFileType = 'parley-registry-issuer-key' | 'parley-operator-key' | 'parley-agent-key';

/** Argon2id cost of a sealed key file. */
export type KdfStrength = 'moderate' | 'interactive';

const KDF = {
  moderate: { opsLimit: PWHASH_OPSLIMIT_MODERATE, memLimit: PWHASH_MEMLIMIT_MODERATE },
  interactive: { opsLimit: PWHASH_OPSLIMIT_INTERACTIVE, memLimit: PWHASH_MEMLIMIT_INTERACTIVE },
} as const;

const SEALED_DOMAIN = 'parley/v1/sealed-key-file';

/** A key loaded from a file. */
export interface LoadedKey extends Ed25519KeyPair {
  readonly type: KeyFileType;
  /** 16-byte key id (§3.1). */
  readonly keyId: Uint8Array;
  readonly createdAtMs: number;
  readonly path: string;
}

interface KeyFileJson {
  version: 1;
  type: KeyFileType;
  key_id: string;
  public_key: string;
  created_at_ms: number;
  seed?: string;
  sealed?: { kdf: 'argon2id'; ops_limit: number; mem_limit: number; salt: string; ciphertext: string };
}

function sealedAd(type: KeyFileType, publicKey: Uint8Array): Uint8Array {
  return layout(SEALED_DOMAIN).str(type).fixed(publicKey, 32, 'publicKey').bytes();
}

/**
 * Writes a key file with mode 0600. Refuses to overwrite an existing file.
 *
 * @param crypto the ParleyCrypto instance
 * @param path where
 * @param type what the key is for
 * @param keyPair the key
 * @param options `passphrase` to seal the seed (with `kdf` strength, default moderate)
 * @throws RpcError `already_exists` when the file exists
 */
export function writeKeyFile(
  crypto: ParleyCrypto,
  path: string,
  type: KeyFileType,
  keyPair: Ed25519KeyPair,
  options: { readonly passphrase?: string; readonly kdf?: KdfStrength; readonly overwrite?: boolean } = {},
): void {
  if (options.overwrite !== true && existsSync(path)) throw new RpcError('already_exists', `key file ${path} already exists`);
  const seed = crypto.ed25519.exportSeed(keyPair.secretKey);
  try {
    const json: KeyFileJson = {
      version: 1,
      type,
      key_id: toHex(keyId(crypto, keyPair.publicKey)),
      public_key: toBase64Url(keyPair.publicKey),
      created_at_ms: Date.now(),
    };
    if (options.passphrase === undefined) {
      json.seed = toBase64Url(seed);
    } else {
      const cost = KDF[options.kdf ?? 'moderate'];
      const salt = crypto.randomBytes(PWHASH_SALT_BYTES);
      const password = utf8(options.passphrase);
      let key;
      try {
        key = crypto.pwhash(password, salt, cost);
      } finally {
        crypto.wipe(password);
      }
      try {
        const ciphertext = crypto.aead.seal(key, 0n, seed, sealedAd(type, keyPair.publicKey));
        json.sealed = { kdf: 'argon2id', ops_limit: cost.opsLimit, mem_limit: cost.memLimit, salt: toBase64Url(salt), ciphertext: toBase64Url(ciphertext) };
      } finally {
        key.wipe();
      }
    }
    writeSecretFile(path, `${JSON.stringify(json, null, 2)}\n`, options.overwrite === true);
  } finally {
    crypto.wipe(seed);
  }
}

/**
 * Writes a secret file (@parley/cli-kit's `writeSecretFile`: 0600, whole or not at all, linked into place
 * unless `overwrite`).
 * @throws RpcError `already_exists` when `path` exists and `overwrite` is false
 */
export function writeSecretFile(path: string, text: string, overwrite = false): void {
  try {
    writeSecret(path, text, { overwrite });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new RpcError('already_exists', `${path} already exists`, { cause: error });
    throw error;
  }
}

export { renameDurably };

/**
 * Whether a key file is sealed (needs a passphrase).
 * @param path the file
 * @returns true when it has a `sealed` section
 */
export function isSealedKeyFile(path: string): boolean {
  try {
    return (JSON.parse(readFileSync(path, 'utf8')) as { sealed?: unknown }).sealed !== undefined;
  } catch {
    return false;
  }
}

function bad(path: string, what: string): never {
  throw new RpcError('malformed', `key file ${path}: ${what}`);
}

/**
 * Reads only the public half of a key file (no passphrase needed).
 * @returns the public key and key id
 */
export function readPublicKey(crypto: ParleyCrypto, path: string, type?: KeyFileType): { publicKey: Uint8Array; keyId: Uint8Array } {
  const json = parse(path, type);
  const publicKey = decode(path, 'public_key', () => fromBase64Url(json.public_key));
  if (publicKey.length !== 32) bad(path, 'public_key must be 32 bytes');
  return { publicKey, keyId: keyId(crypto, publicKey) };
}

function decode(path: string, field: string, fn: () => Uint8Array): Uint8Array {
  try {
    return fn();
  } catch {
    return bad(path, `${field} is not valid base64url`);
  }
}

function parse(path: string, type: KeyFileType | undefined): KeyFileJson {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    const code = (cause as { code?: unknown }).code;
    if (code === 'ENOENT') throw new RpcError('not_found', `key file ${path} does not exist`, { cause });
    if (code === 'EACCES') throw new RpcError('permission_denied', `key file ${path} is not readable by this user`, { cause });
    throw new RpcError('unavailable', `cannot read key file ${path}`, { cause });
  }
  let json: KeyFileJson;
  try {
    json = JSON.parse(text) as KeyFileJson;
  } catch {
    return bad(path, 'not valid JSON');
  }
  if (typeof json !== 'object' || json === null || json.version !== 1) bad(path, 'unsupported format (expected version 1)');
  if (type !== undefined && json.type !== type) bad(path, `holds a ${String(json.type)}, expected a ${type}`);
  if (typeof json.public_key !== 'string') bad(path, 'public_key is missing');
  return json;
}

/**
 * Loads a key file: checks its permissions, opens the seal when there is one,
 * and checks that the seed gives the recorded public key.
 *
 * @param crypto the ParleyCrypto instance
 * @param path the file
 * @param type the expected type
 * @param passphrase required for a sealed file
 * @returns the key
 * @throws RpcError `not_found` (no file), `permission_denied` (mode too open, wrong
 *   passphrase, missing passphrase), `malformed` (bad contents)
 */
export function readKeyFile(crypto: ParleyCrypto, path: string, type: KeyFileType, passphrase?: string): LoadedKey {
  const json = parse(path, type);
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new RpcError('permission_denied', `key file ${path} is accessible by group or others (mode ${mode.toString(8)}): run chmod 600 ${path}`);
  }
  const { publicKey } = readPublicKey(crypto, path, type);
  let seed: Uint8Array;
  if (json.sealed !== undefined) {
    if (passphrase === undefined) throw new RpcError('permission_denied', `key file ${path} is sealed: a passphrase is required`);
    const s = json.sealed;
    if (s.kdf !== 'argon2id' || !Number.isSafeInteger(s.ops_limit) || !Number.isSafeInteger(s.mem_limit)) bad(path, 'unknown sealing parameters');
    const salt = decode(path, 'sealed.salt', () => fromBase64Url(s.salt));
    const ciphertext = decode(path, 'sealed.ciphertext', () => fromBase64Url(s.ciphertext));
    const password = utf8(passphrase);
    let key;
    try {
      key = crypto.pwhash(password, salt, { opsLimit: s.ops_limit, memLimit: s.mem_limit });
    } catch (cause) {
      throw new RpcError('malformed', `key file ${path}: sealing parameters out of range`, { cause });
    } finally {
      crypto.wipe(password);
    }
    try {
      seed = crypto.aead.open(key, 0n, ciphertext, sealedAd(type, publicKey));
    } catch (cause) {
      throw new RpcError('permission_denied', `wrong passphrase for key file ${path}`, { cause });
    } finally {
      key.wipe();
    }
  } else {
    if (typeof json.seed !== 'string') bad(path, 'seed is missing');
    seed = decode(path, 'seed', () => fromBase64Url(json.seed!));
  }
  try {
    if (seed.length !== 32) bad(path, 'seed must be 32 bytes');
    const pair = crypto.ed25519.keyPairFromSeed(seed);
    if (!crypto.constantTimeEqual(pair.publicKey, publicKey)) bad(path, 'seed does not match public_key');
    const id = keyId(crypto, publicKey);
    if (typeof json.key_id !== 'string' || !crypto.constantTimeEqual(fromHex(json.key_id), id)) bad(path, 'key_id does not match public_key');
    return { ...pair, type, keyId: id, createdAtMs: json.created_at_ms, path };
  } finally {
    crypto.wipe(seed);
  }
}
