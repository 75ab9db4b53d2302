/**
 * The issuer key files of one registry process (docs/PROTOCOL.md §15.2,
 * §15.9): `issuer-key.json` holds the active key, `issuer-key.next.json` a
 * prepared one. A rotation writes the prepared key's file (synced) before the
 * database names it; the activation commits first and then renames the
 * prepared file over the active one, which deletes the retired key's secret.
 * A process that stopped between that commit and the rename finishes the
 * rename when it starts again.
 *
 * The prepared key is sealed like the active one: with the passphrase the
 * server was started with, at the same Argon2id cost.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
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
  /** The prepared key file. */
  readonly nextPath: string;

  /**
   * @param crypto the ParleyCrypto instance
   * @param dataDir the registry data directory
   * @param passphrase the issuer key passphrase (needed for sealed files; reused to seal a prepared key)
   */
  constructor(crypto: ParleyCrypto, dataDir: string, passphrase: string | undefined) {
    this.#crypto = crypto;
    this.#passphrase = passphrase;
    this.activePath = join(dataDir, DATA_FILES.issuerKey);
    this.nextPath = `${this.activePath}.next`;
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
   * Writes a new prepared key's file, sealed like the active key's (same passphrase and cost), replacing
   * a leftover prepared file that the database never named.
   */
  writeNext(key: IssuerKey): void {
    const sealed = isSealedKeyFile(this.activePath);
    if (sealed && this.#passphrase === undefined) throw new RpcError('failed_precondition', 'the issuer key is sealed but this process has no passphrase to seal a new one');
    writeKeyFile(this.#crypto, this.nextPath, TYPE, key, { ...(sealed ? { passphrase: this.#passphrase!, kdf: kdfOf(this.activePath) } : {}), overwrite: true });
  }

  /** Removes the prepared key file (a rotation whose commit failed). */
  removeNext(): void {
    rmSync(this.nextPath, { force: true });
  }

  /**
   * After an activation committed: the prepared file becomes the active one (the retired key's secret
   * file is replaced, so deleted). No-op when the active file already holds `keyId`.
   * @throws RpcError `failed_precondition` when neither file holds it
   */
  promote(keyId: Uint8Array): void {
    const active = this.keyIdOf(this.activePath);
    if (active !== undefined && this.#crypto.constantTimeEqual(active, keyId)) return;
    const next = this.keyIdOf(this.nextPath);
    if (next === undefined || !this.#crypto.constantTimeEqual(next, keyId)) {
      throw new RpcError('failed_precondition', `neither ${this.activePath} nor ${this.nextPath} holds issuer key ${toHex(keyId)}`);
    }
    renameDurably(this.nextPath, this.activePath);
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
    const nextId = this.keyIdOf(this.nextPath);
    if (nextId !== undefined && this.#crypto.constantTimeEqual(nextId, active.keyId)) {
      renameDurably(this.nextPath, this.activePath);
      notes.push(`finished an interrupted issuer activation: ${this.nextPath} moved over ${this.activePath}`);
    }
    const current = this.read(this.activePath);
    if (!this.#crypto.constantTimeEqual(current.keyId, active.keyId)) {
      throw new RpcError(
        'failed_precondition',
        `the issuer key file (key id ${toHex(current.keyId)}) is not the registry's active issuer key (${toHex(active.keyId)}): copy the active key's file to ${this.activePath}`,
      );
    }
    const keys = [current];
    const next = this.keyIdOf(this.nextPath);
    if (prepared !== undefined) {
      if (next !== undefined && this.#crypto.constantTimeEqual(next, prepared.keyId)) keys.push(this.read(this.nextPath));
      else notes.push(`issuer key ${toHex(prepared.keyId)} is prepared but ${this.nextPath} does not hold it: this process cannot sign once it is active (another registry process will activate it)`);
    } else if (next !== undefined) {
      notes.push(`${this.nextPath} holds a key the registry never prepared (an interrupted rotation): it is ignored and replaced by the next rotation`);
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
