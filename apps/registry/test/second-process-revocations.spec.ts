// Two registry processes on one database; `issuer rotate` ran against the first, and the second's data
// directory lacks the new key's file. After the activation the second refuses the revocation list too
// (PROTOCOL §15.9: from the activation on only the active key signs revocation heads, and a process without
// it signs nothing), with the message that says to copy the key file — and revoking, which signs nothing,
// still works there. An operator walkthrough found the operations guide listing only register, enrol, key
// rotation and revoke (docs/OPERATIONS.md §6.1 and the README say so now).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { createCrypto, toHex } from '@parley/crypto-core';
import { createIssuerKey, keyId } from '@parley/identity';
import { ChallengePurpose, RegistryService } from '@parley/proto';
import { operatorRequestSigner } from '@parley/protocol';
import { createClient, isRpcError, type Client } from '@parley/rpc';
import { tempDir } from '@parley/test-support';
import { pino } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { IssuerKeyFiles } from '../src/issuer-keys.js';
import { DEFAULT_SETTINGS, RegistryServer, RegistryStore, applyMigrations, openDatabase, writeKeyFile } from '../src/index.js';

const dir = tempDir('registry-second-process');
afterAll(() => dir.remove());

it('a process without the active issuer key refuses GetRevocationList (copy the key file), and still revokes', async () => {
  const crypto = await createCrypto();
  const db = await openDatabase({});
  const servers: RegistryServer[] = [];
  const clients: Client<typeof RegistryService>[] = [];
  try {
    await applyMigrations(db);
    const store = new RegistryStore(db, crypto);
    const k1 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const operator = crypto.ed25519.generateKeyPair();
    const registryId = crypto.randomBytes(16);
    await store.initialise({ registryId, issuer: k1, operator: { publicKey: operator.publicKey, keyId: keyId(crypto, operator.publicKey), name: 'admin' }, nowMs: Date.now() });
    const serve = async (name: string): Promise<Client<typeof RegistryService>> => {
      const path = join(dir.path, name);
      mkdirSync(path, { recursive: true });
      const keyFiles = new IssuerKeyFiles(crypto, path, undefined);
      writeKeyFile(crypto, keyFiles.activePath, 'parley-registry-issuer-key', k1);
      const server = new RegistryServer({ crypto, store: new RegistryStore(db, crypto), keyFiles, logger: pino({ level: 'silent' }), settings: DEFAULT_SETTINGS });
      servers.push(server);
      const { port } = await server.start('127.0.0.1:0');
      const client = createClient(RegistryService, `127.0.0.1:${port}`, credentials.createInsecure(), { signer: operatorRequestSigner(crypto, operator, registryId), defaultTimeoutMs: 15_000 });
      clients.push(client);
      return client;
    };
    const first = await serve('first');
    const second = await serve('second');
    // An agent to revoke later (registered before the rotation, with the key both hold).
    const nowMs = Date.now();
    const challenge = await store.createChallenge(ChallengePurpose.REGISTER, nowMs + 60_000);
    await store.registerAgent(k1, { agentId: 'revoked-on-second', identityPublicKey: crypto.ed25519.generateKeyPair().publicKey, agentType: 'worker', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 3_600_000, challenge, nowMs });

    const rotated = await first.rotateIssuer({ activateAfterMs: 1n });
    const k2 = toHex(rotated.prepared!.keyId);
    const activeOf = async (client: Client<typeof RegistryService>): Promise<string> => toHex((await client.getTrustBundle({})).issuers.find((i) => i.active)?.keyId ?? new Uint8Array());
    const deadline = Date.now() + 15_000;
    // The first activates k2; the second follows the database (within a second).
    while ((await activeOf(first)) !== k2 || (await activeOf(second)) !== k2) {
      if (Date.now() > deadline) throw new Error('k2 not active on both');
      await new Promise((r) => setTimeout(r, 50));
    }
    const head = (await first.getRevocationList({})).head!;
    expect(toHex(head.issuerKeyId)).toBe(k2);

    let refused: unknown;
    try {
      await second.getRevocationList({});
    } catch (error) {
      refused = error;
    }
    expect(isRpcError(refused) && refused.code).toBe('failed_precondition');
    expect((refused as Error).message).toMatch(new RegExp(`does not hold the active issuer key \\(${k2}\\): copy its key file into this process's data directory`));

    // Revoking signs nothing: it works there, and the first serves it under k2.
    await second.revokeAgent({ subject: { case: 'agentId', value: 'revoked-on-second' } });
    const list = await first.getRevocationList({});
    expect(list.entries.map((e) => (e.subject.case === 'agentId' ? e.subject.value : ''))).toContain('revoked-on-second');
  } finally {
    for (const c of clients) c.close();
    for (const s of servers) await s.stop(0);
    await db.close();
  }
});
