import { MemoryClient, isMemoryError, type MemoryClientOptions } from '../src/index.js';

/** A planner shares a plan with a worker; both edit it with compare-and-set. */
export async function sharePlan(planner: MemoryClientOptions, worker: MemoryClientOptions): Promise<string> {
  const p = new MemoryClient(planner); // with @parley/client: `agent.memory`
  const w = new MemoryClient(worker);
  try {
    const { memoryId } = await p.create({ expiresAtMs: Date.now() + 86_400_000 });
    // The member's certificate travels with the grant: a store that has not seen the worker (and has no
    // directory of agents, as the gateway has) could not name its key (`not_found`).
    await p.grant(memoryId, w.agentId, 'write', { expiresAtMs: Date.now() + 3_600_000, certificate: worker.identity.certificate });
    await p.write(memoryId, 'plan', JSON.stringify({ steps: ['gather', 'draft'] }), { previousVersion: 0 });

    // The worker appends a step; update() re-reads and retries when another writer got there first.
    await w.update(memoryId, 'plan', (current) => {
      const plan = JSON.parse(new TextDecoder().decode(current!.data)) as { steps: string[] };
      return JSON.stringify({ steps: [...plan.steps, 'review'] });
    });

    // A plain write names the version it replaces, and fails with a typed conflict otherwise.
    try {
      await p.write(memoryId, 'plan', '{"steps":[]}', { previousVersion: 1 });
    } catch (error) {
      if (!isMemoryError(error, 'conflict')) throw error;
      console.log(`plan is at version ${error.currentVersion}`); // 2: the worker's
    }

    await p.revoke(memoryId, w.agentId); // a new key epoch, sealed to the planner only
    const { data, writerId, version } = await p.read(memoryId, 'plan');
    return `${writerId} wrote v${version}: ${new TextDecoder().decode(data)}`;
  } finally {
    w.close();
    p.close();
  }
}
