// Delivery order against a slow database (§17.6): a backlog drain already reading a page must not clear the
// stream's backlog while an item queued at its check has no row yet, or a later, smaller item is written live
// before it. Page reads and inserts are held at gates so that the interleaving is the same on every run.
import { DeliveryStatus, type SecureMessage } from '@parley/proto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RunningGateway } from '../src/server.js';
import { sleep, tempDir, waitFor, type RawStream } from '@parley/test-support';
import { createWorld, deliveredOrder, rawStream, signedFakeEnvelope, type Agent, type World } from './fixtures.js';

let world: World;
beforeAll(async () => { world = await createWorld(); });
const dir = tempDir('delivery-order');
afterAll(() => dir.remove());

it('a drain reading a page keeps the backlog of an item whose row is not inserted yet: a later, smaller item is not delivered before it', async () => {
  const g: RunningGateway = await world.start({ database: { dataDir: dir.path }, maxInFlightBytes: 4_000 });
  try {
    const planner = world.agent('planner-order', { agentType: 'planner' });
    const worker = world.agent('worker-order');
    const raw = (a: Agent): Promise<RawStream> => rawStream(world.crypto, g.address, a);
    const w = await raw(worker);
    const p = await raw(planner);
    const env = (bytes: number): SecureMessage => signedFakeEnvelope(world.crypto, planner, worker.agentId, bytes);
    const sent = [env(2_500), env(2_500), env(64), env(64)];
    const key = (e: SecureMessage): string => Buffer.from(e.sessionId).toString('hex');
    const got = (): number[] => deliveredOrder(w, sent);
    const answer = (id: bigint): string | undefined => {
      for (const r of p.responses) if (r.kind.case === 'accepted' && r.kind.value.requestId === id) return DeliveryStatus[r.kind.value.status];
      return undefined;
    };
    const deliveryId = (n: number): bigint => {
      for (const r of w.responses) if (r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' && key(r.kind.value.item.value) === key(sent[n - 1]!)) return r.kind.value.deliveryId;
      throw new Error(`item ${n} was not delivered`);
    };
    p.send({ case: 'envelope', value: sent[0]! }, 1n);
    await waitFor(() => answer(1n) !== undefined, 5_000, '1');
    p.send({ case: 'envelope', value: sent[1]! }, 2n);
    await waitFor(() => answer(2n) !== undefined, 5_000, '2');
    await sleep(200); // the pump of row 2 stops (does not fit)
    expect([answer(1n), answer(2n)]).toEqual(['DELIVERED', 'QUEUED']);
    // Slow database: page reads and inserts take a while (gates make it deterministic).
    const mb = g.mailbox as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const pendingMany = mb['pendingMany']!.bind(g.mailbox);
    const putMany = mb['putMany']!.bind(g.mailbox);
    let openPage!: () => void; const pageGate = new Promise<void>((r) => (openPage = r));
    let openPut!: () => void; const putGate = new Promise<void>((r) => (openPut = r));
    let pageCalls = 0;
    mb['pendingMany'] = async (...a: unknown[]) => { pageCalls++; const r = await pendingMany(...a); await pageGate; return r; };
    mb['putMany'] = async (...a: unknown[]) => { await putGate; return putMany(...a); };
    w.ack(deliveryId(1)); // pump: reads a page (row 2)
    await waitFor(() => pageCalls > 0, 5_000, 'page read started');
    p.send({ case: 'envelope', value: sent[2]! }, 3n); // checked: backlog true -> Stored path; its row waits for the insert
    await sleep(300);
    openPage(); // the page [row 2] returns: row 2 written, fewer than asked -> backlog = false
    await sleep(200);
    p.send({ case: 'envelope', value: sent[3]! }, 4n); // small, would fit: queued behind 3 all the same
    await sleep(200);
    openPut();
    await waitFor(() => answer(4n) !== undefined, 5_000, '4');
    const acked = new Set<bigint>();
    await waitFor(() => {
      for (const r of w.responses) {
        if (r.kind.case !== 'delivery' || acked.has(r.kind.value.deliveryId)) continue;
        acked.add(r.kind.value.deliveryId);
        w.ack(r.kind.value.deliveryId);
      }
      return got().length === 4;
    }, 5_000, 'every item');
    expect(got()).toEqual([1, 2, 3, 4]);
    w.close(); p.close();
  } finally {
    await g.close();
  }
});
