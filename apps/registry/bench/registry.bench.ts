// Registry benchmark: registrations/s (CreateChallenge + RegisterAgent with
// proof of possession and an operator signature: two calls) and GetAgent
// lookups/s (operator-signed reads: directory reads are authenticated by default), over real gRPC on loopback against a spawned `serve` process,
// PGlite beside PostgreSQL measured in the same run. Rounds alternate
// (PGlite, PostgreSQL, PGlite, …) so machine drift hits both; the median round
// is reported. Calls are issued with a fixed number in flight.
//
// PostgreSQL: DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test (a fresh schema, dropped afterwards).
import type { Sample } from '@parley/bench-harness';
import { printTable } from '@parley/bench-harness';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { ChallengePurpose } from '@parley/proto';
import { registrationProofLayout } from '@parley/protocol';
import { initRegistry, serveRegistry, type RegistryFixture, type RunningRegistry } from '@parley/test-support';
import { operatorClient } from '../test/clients.js';

process.env['DATABASE_URL'] ??= 'postgres://postgres@127.0.0.1:5432/test';
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const ROUND_MS = Number(process.env['BENCH_ROUND_MS'] ?? 2000);
const IN_FLIGHT_REGISTER = 8;
const IN_FLIGHT_GET = 16;

interface Target {
  readonly name: string;
  readonly fixture: RegistryFixture;
  readonly registry: RunningRegistry;
  readonly op: Awaited<ReturnType<typeof operatorClient>>;
  /** Operator-signed: directory reads are authenticated by default (`directory_reads: "authenticated"`). */
  readonly reader: Awaited<ReturnType<typeof operatorClient>>['client'];
  readonly ids: string[];
}

let counter = 0;

async function registerOne(crypto: ParleyCrypto, t: Target): Promise<void> {
  const agentId = `bench-${t.name}-${++counter}`;
  const key = crypto.ed25519.generateKeyPair();
  const { challenge } = await t.op.client.createChallenge({ purpose: ChallengePurpose.REGISTER });
  const proofSignature = crypto.ed25519.sign(registrationProofLayout({ registryId: t.op.registryId, challenge, agentId, identityPublicKey: key.publicKey }), key.secretKey);
  await t.op.client.registerAgent({ agentId, identityPublicKey: key.publicKey, agentType: 'bench', capabilities: ['msg:send'], challenge, proofSignature });
  t.ids.push(agentId);
}

async function getOne(t: Target): Promise<void> {
  const agentId = t.ids[Math.floor(Math.random() * t.ids.length)]!;
  await t.reader.getAgent({ agentId });
}

/** Runs `op` with `inFlight` calls outstanding for `ms`; returns ops/s. */
async function round(op: () => Promise<void>, inFlight: number, ms: number): Promise<number> {
  let done = 0;
  const end = performance.now() + ms;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        await op();
        done++;
      }
    }),
  );
  return (done * 1000) / (performance.now() - start);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

function sample(opsPerSec: number): Sample {
  return { opsPerSec, usPerOp: 1e6 / opsPerSec };
}

async function main(): Promise<void> {
  const crypto = await createCrypto();
  const targets: Target[] = [];
  try {
    for (const backend of ['pglite', 'postgres'] as const) {
      const fixture = await initRegistry(backend, `bench${backend}`);
      const registry = await serveRegistry(fixture, ['--log-level', 'warn']);
      const op = await operatorClient(registry, fixture, crypto);
      targets.push({ name: backend, fixture, registry, op, reader: op.client, ids: [] });
    }
    // Warm-up: JIT, connection pools, and a population to look up.
    for (const t of targets) await round(() => registerOne(crypto, t), IN_FLIGHT_REGISTER, 500);
    const results: Record<string, { register: number[]; get: number[] }> = Object.fromEntries(targets.map((t) => [t.name, { register: [], get: [] }]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const t of targets) results[t.name]!.register.push(await round(() => registerOne(crypto, t), IN_FLIGHT_REGISTER, ROUND_MS));
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const t of targets) results[t.name]!.get.push(await round(() => getOne(t), IN_FLIGHT_GET, ROUND_MS));
    }
    const pglite = results['pglite']!;
    const postgres = results['postgres']!;
    printTable(
      `Registry over gRPC on loopback (one serve process each; ${ROUNDS} alternating rounds of ${ROUND_MS} ms, median; agents in table: ${targets.map((t) => `${t.name} ${t.ids.length}`).join(', ')})`,
      'PostgreSQL',
      [
        { label: `registrations/s (${IN_FLIGHT_REGISTER} in flight)`, ours: sample(median(pglite.register)), peer: sample(median(postgres.register)), unit: 'ops/s' },
        { label: `GetAgent/s (${IN_FLIGHT_GET} in flight)`, ours: sample(median(pglite.get)), peer: sample(median(postgres.get)), unit: 'ops/s' },
      ],
    );
    console.log('("ours" = PGlite, the embedded default; ratio = PGlite ÷ PostgreSQL)');
  } finally {
    for (const t of targets) {
      t.op.close();
      t.reader.close();
      await t.registry.stop();
      await t.fixture.cleanup();
    }
  }
}

await main();
