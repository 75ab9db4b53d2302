// Client pieces that need no gateway: the state file, errors, receipts.
import { appendFileSync, mkdtempSync, rmSync, statSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { RpcError } from '@parley/rpc';
import { SessionError } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Journal, fileStateStore, frameRecords, isClientError, memoryStateStore, parseRecords, replay, signReceipt, verifyReceiptSignature } from '../src/index.js';

let crypto: ParleyCrypto;
let dir: string;
beforeAll(async () => {
  crypto = await createCrypto();
  dir = mkdtempSync(join(tmpdir(), 'parley-client-unit-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('state store', () => {
  it('frames records and drops only a torn tail', () => {
    const records = [new Uint8Array([1, 2, 3]), new Uint8Array(0), crypto.randomBytes(300)];
    const framed = frameRecords(records);
    expect(parseRecords(framed)).toEqual({ records, tornAt: undefined });
    for (const cut of [1, 3, 5, framed.length - 1]) {
      const { records: got, tornAt } = parseRecords(framed.subarray(0, cut));
      expect(tornAt).toBeDefined();
      expect(records.slice(0, got.length)).toEqual(got);
    }
  });

  it('fileStateStore: missing file is empty; appends survive reopening; rewrite is atomic with mode 0600; a torn tail is cut', async () => {
    const path = join(dir, 'nested', 'state.bin');
    const store = fileStateStore(path);
    /** What another store finds (one store at a time: `store` is closed first, and reopens at its next call). */
    const reread = async (): Promise<Uint8Array[]> => {
      await store.close();
      const other = fileStateStore(path);
      try {
        return await other.load();
      } finally {
        await other.close();
      }
    };
    expect(await store.load()).toEqual([]);
    await Promise.all([store.append([new Uint8Array([7])]), store.append([new Uint8Array([8]), new Uint8Array([9])])]);
    expect(await reread()).toEqual([new Uint8Array([7]), new Uint8Array([8]), new Uint8Array([9])]);
    await store.rewrite([new Uint8Array([1])]);
    await store.append([new Uint8Array([2])]);
    expect(readdirSync(join(dir, 'nested')).sort()).toEqual(['state.bin', 'state.bin.lock']); // no temporary files left; the lock while open
    expect(await reread()).toEqual([new Uint8Array([1]), new Uint8Array([2])]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, 'nested'))).toEqual(['state.bin']); // closed: no lock either
    appendFileSync(path, new Uint8Array([0, 0, 0, 9, 1])); // a record cut by a crash mid-write
    const reopened = fileStateStore(path);
    expect(await reopened.load()).toEqual([new Uint8Array([1]), new Uint8Array([2])]);
    await reopened.append([new Uint8Array([3])]);
    await reopened.close();
    expect(await reread()).toEqual([new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3])]);
    writeFileSync(path, 'garbage');
    await expect(reread()).rejects.toSatisfy((e) => isClientError(e, 'state_corrupt'));
  });

  it('journal: records are sealed (no plaintext on disk), replay is idempotent, a wrong key is state_corrupt', async () => {
    const store = memoryStateStore();
    const stateKey = crypto.randomKey('aead');
    const journal = new Journal(crypto, stateKey, store);
    const out = { t: 'out', id: 'a', to: 'worker-1', msg: { type: 5, content: { task: 'secret-task-name' } }, env: '', hash: 'h', sid: 's', at: 1, exp: 2, reseals: 0 } as const;
    await journal.append([{ t: 'session', id: 's', sealed: 'x' }, { t: 'reserve', id: 's', upTo: 256 }, out, out, { t: 'reserve', id: 's', upTo: 512 }]);
    for (const r of store.records) expect(Buffer.from(r).toString('latin1')).not.toContain('secret-task-name');
    const state = replay(await journal.load());
    expect(state.sessions.get('s')).toEqual({ sealed: 'x', reservedUpTo: 512 });
    expect([...state.outbox.keys()]).toEqual(['a']);
    const other = new Journal(crypto, crypto.randomKey('aead'), store);
    await expect(other.load()).rejects.toSatisfy((e) => isClientError(e, 'state_corrupt'));
  });

  it('journal: keeps the newest trust bundle document recorded (the follower saves each one it accepts)', async () => {
    const store = memoryStateStore();
    const journal = new Journal(crypto, crypto.randomKey('aead'), store);
    expect(replay(await journal.load()).bundle).toBeUndefined();
    await journal.append([
      { t: 'bundle', version: 3, doc: 'AAA' },
      { t: 'bundle', version: 5, doc: 'BBB' },
      { t: 'bundle', version: 4, doc: 'CCC' },
    ]);
    expect(replay(await journal.load()).bundle).toEqual({ version: 5, doc: 'BBB' });
    expect(() => replay([{ t: 'bundle', doc: 'x' } as never])).toThrow(/state_corrupt/);
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
