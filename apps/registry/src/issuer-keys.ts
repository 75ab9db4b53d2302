/**
 * The issuer key files of one registry process (docs/PROTOCOL.md §15.2,
 * §15.9): `issuer-key.json` holds the active key, `issuer-key.json.next.<key
 * id in hex>` a prepared one. A rotation writes the prepared key's file
 * (synced) before the database names it; the activation commits first and then
 * renames the prepared file over the active one, which deletes the retired
 * key's secret. A process that stopped between that commit and the rename
 * finishes the rename when it starts again.
 *
 * *Why one file per key id:* a rotation whose commit fails removes its file, and
 * it must only ever remove its own — with one shared name, a losing concurrent
 * rotation deleted the winner's key, which the database then named (found by
 * review). A data directory written before this layout may hold the prepared
 * key as `issuer-key.json.next`: it is still found, by the key id it holds.
 *
 * The prepared key is sealed like the active one: with the passphrase the
 * server was started with, at the same Argon2id cost.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, type IssuerKey } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import { DATA_FILES } from './config.js';
import { isSealedKeyFile, readKeyFile, readPublicKey, renameDurably, writeKeyFile, type KdfStrength } from './key-file.js';
import type { IssuerRow } from './store.js';

const TYPE = 'parley-registry-issuer-key';

/** The issuer keys a registry process holds, by key id. */
export class IssuerKeyFiles {
  readonly #crypto: ParleyCrypto;
  readonly #passphrase: string | undefined;
  /** The active key file. */
  readonly activePath: string;
  /** The prepared key file of releases before per-key files (still read: a prepared key found here by its key id is used). */
  readonly legacyNextPath: string;

  /**
   * @param crypto the ParleyCrypto instance
   * @param dataDir the registry data directory
   * @param passphrase the issuer key passphrase (needed for sealed files; reused to seal a prepared key)
   */
  constructor(crypto: ParleyCrypto, dataDir: string, passphrase: string | undefined) {
    this.#crypto = crypto;
    this.#passphrase = passphrase;
    this.activePath = join(dataDir, DATA_FILES.issuerKey);
    this.legacyNextPath = `${this.activePath}.next`;
  }

  /** The file of prepared key `keyId` (`issuer-key.json.next.<key id in hex>`). */
  preparedPath(keyId: Uint8Array): string {
    return `${this.legacyNextPath}.${toHex(keyId)}`;
  }

  /** The file holding prepared key `keyId` (its own, or the legacy `issuer-key.json.next`), or undefined. */
  findPrepared(keyId: Uint8Array): string | undefined {
    for (const path of [this.preparedPath(keyId), this.legacyNextPath]) {
      const held = this.keyIdOf(path);
      if (held !== undefined && this.#crypto.constantTimeEqual(held, keyId)) return path;
    }
    return undefined;
  }

  /** Every prepared key file in the data directory (per-key and legacy), whatever key it holds. */
  preparedFiles(): string[] {
    const dir = dirname(this.activePath);
    const legacy = basename(this.legacyNextPath);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return [];
    }
    const isPrepared = (n: string): boolean => n === legacy || (n.startsWith(`${legacy}.`) && /^[0-9a-f]{32}$/.test(n.slice(legacy.length + 1)));
    return names.filter(isPrepared).sort().map((n) => join(dir, n));
  }

  /** Reads a key file (sealed or not). */
  read(path: string): IssuerKey {
    return createIssuerKey(this.#crypto, readKeyFile(this.#crypto, path, TYPE, isSealedKeyFile(path) ? this.#passphrase : undefined));
  }

  /** The public key id in a file, or undefined when it does not exist or does not parse. */
  keyIdOf(path: string): Uint8Array | undefined {
    if (!existsSync(path)) return undefined;
    try {
      return readPublicKey(this.#crypto, path, TYPE).keyId;
    } catch {
      return undefined;
    }
  }

  /**
   * Writes a new prepared key's file, under its own key id's name, sealed like the active key's (same
   * passphrase and cost).
   * @throws RpcError `failed_precondition` (sealed without a passphrase), `already_exists` (the file exists)
   */
  writePrepared(key: IssuerKey): void {
    const sealed = isSealedKeyFile(this.activePath);
    if (sealed && this.#passphrase === undefined) throw new RpcError('failed_precondition', 'the issuer key is sealed but this process has no passphrase to seal a new one');
    writeKeyFile(this.#crypto, this.preparedPath(key.keyId), TYPE, key, sealed ? { passphrase: this.#passphrase!, kdf: kdfOf(this.activePath) } : {});
  }

  /** Removes prepared key `keyId`'s own file (a rotation whose commit failed); never another key's. */
  removePrepared(keyId: Uint8Array): void {
    rmSync(this.preparedPath(keyId), { force: true });
  }

  /**
   * After an activation committed: the prepared file becomes the active one (the retired key's secret
   * file is replaced, so deleted). No-op when the active file already holds `keyId`.
   * @throws RpcError `failed_precondition` when neither file holds it
   */
  promote(keyId: Uint8Array): void {
    const active = this.keyIdOf(this.activePath);
    if (active !== undefined && this.#crypto.constantTimeEqual(active, keyId)) return;
    const next = this.findPrepared(keyId);
    if (next === undefined) {
      throw new RpcError('failed_precondition', `neither ${this.activePath} nor ${this.preparedPath(keyId)} holds issuer key ${toHex(keyId)}`);
    }
    renameDurably(next, this.activePath);
  }

  /**
   * Loads the keys this process needs at start, given the database's issuer keys: the active one
   * (finishing an activation whose rename was interrupted) and the prepared one when its file is here.
   * @returns the keys held, and notes for the log
   * @throws RpcError `failed_precondition` when the active key's file is not here
   */
  loadFor(issuers: readonly IssuerRow[]): { keys: IssuerKey[]; notes: string[] } {
    const notes: string[] = [];
    const active = issuers.find((i) => i.state === 'active');
    if (active === undefined) throw new RpcError('failed_precondition', 'the registry has no active issuer key');
    const prepared = issuers.find((i) => i.state === 'prepared');
    const held = this.keyIdOf(this.activePath);
    const activated = held !== undefined && this.#crypto.constantTimeEqual(held, active.keyId) ? undefined : this.findPrepared(active.keyId);
    if (activated !== undefined) {
      renameDurably(activated, this.activePath);
      notes.push(`finished an interrupted issuer activation: ${activated} moved over ${this.activePath}`);
    }
    const current = this.read(this.activePath);
    if (!this.#crypto.constantTimeEqual(current.keyId, active.keyId)) {
      throw new RpcError(
        'failed_precondition',
        `the issuer key file (key id ${toHex(current.keyId)}) is not the registry's active issuer key (${toHex(active.keyId)}): copy the active key's file to ${this.activePath}`,
      );
    }
    const keys = [current];
    const preparedFile = prepared === undefined ? undefined : this.findPrepared(prepared.keyId);
    if (prepared !== undefined) {
      if (preparedFile !== undefined) keys.push(this.read(preparedFile));
      else notes.push(`issuer key ${toHex(prepared.keyId)} is prepared but ${this.preparedPath(prepared.keyId)} does not hold it: this process cannot sign once it is active (another registry process will activate it)`);
    }
    for (const path of this.preparedFiles()) {
      if (path !== preparedFile) notes.push(`${path} holds a key the registry has not prepared (an interrupted rotation): it is ignored (delete it once no rotation is running)`);
    }
    return { keys, notes };
  }
}

function kdfOf(path: string): KdfStrength {
  try {
    const json = JSON.parse(readFileSync(path, 'utf8')) as { sealed?: { mem_limit?: number } };
    return (json.sealed?.mem_limit ?? 0) > 64 * 1024 * 1024 ? 'moderate' : 'interactive';
  } catch {
    return 'moderate';
  }
}
