// Client pieces that need no gateway: the state file, errors, receipts.
import { mkdtempSync, rmSync, statSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { RpcError } from '@parley/rpc';
import { SessionError } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, decodeStateFile, encodeStateFile, fileStateStore, isClientError, signReceipt, verifyReceiptSignature } from '../src/index.js';

let crypto: ParleyCrypto;
let dir: string;
beforeAll(async () => {
  crypto = await createCrypto();
  dir = mkdtempSync(join(tmpdir(), 'parley-client-unit-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('state file', () => {
  it('round-trips sealed blobs and rejects corrupt files', () => {
    const blobs = [new Uint8Array([1, 2, 3]), new Uint8Array(0), crypto.randomBytes(300)];
    expect(decodeStateFile(encodeStateFile(blobs))).toEqual(blobs);
    expect(decodeStateFile(encodeStateFile([]))).toEqual([]);
    const bytes = encodeStateFile(blobs);
    expect(() => decodeStateFile(bytes.subarray(0, bytes.length - 1))).toThrow(/state_corrupt/);
    expect(() => decodeStateFile(new Uint8Array([...bytes, 0]))).toThrow(/state_corrupt/);
    expect(() => decodeStateFile(new TextEncoder().encode('nope nope'))).toThrow(/state_corrupt/);
  });

  it('fileStateStore: missing file is empty; saves atomically with mode 0600', async () => {
    const path = join(dir, 'nested', 'state.bin');
    const store = fileStateStore(path);
    expect(await store.load()).toEqual([]);
    await store.save([new Uint8Array([7])]);
    await store.save([new Uint8Array([8]), new Uint8Array([9])]);
    expect(await store.load()).toEqual([new Uint8Array([8]), new Uint8Array([9])]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, 'nested'))).toEqual(['state.bin']); // no temporary files left
    writeFileSync(path, 'garbage');
    await expect(store.load()).rejects.toSatisfy((e) => isClientError(e, 'state_corrupt'));
  });
});

describe('ClientError', () => {
  it('keeps the code of RpcError and SessionError', () => {
    expect(ClientError.from(new RpcError('policy_denied', 'no')).code).toBe('policy_denied');
    const s = ClientError.from(new SessionError('replay', 'again'));
    expect(s.code).toBe('replay');
    expect(s.message).toBe('[replay] again');
    expect(ClientError.from(new Error('boom')).code).toBe('internal');
  });
});

describe('receipts', () => {
  it('verify only with the signer key and unchanged fields', () => {
    const key = crypto.ed25519.generateKeyPair();
    const other = crypto.ed25519.generateKeyPair();
    const identity = { agentId: 'worker-1', signingKey: key.secretKey, certificate: undefined as never };
    const receipt = signReceipt(crypto, identity, { messageHash: crypto.randomBytes(32), senderId: 'planner-1', receivedAtMs: 1_700_000_000_000 });
    expect(verifyReceiptSignature(crypto, receipt, key.publicKey)).toBe(true);
    expect(verifyReceiptSignature(crypto, receipt, other.publicKey)).toBe(false);
    expect(verifyReceiptSignature(crypto, { ...receipt, senderId: 'planner-2' }, key.publicKey)).toBe(false);
    expect(verifyReceiptSignature(crypto, { ...receipt, signature: new Uint8Array(10) }, key.publicKey)).toBe(false);
  });
});
