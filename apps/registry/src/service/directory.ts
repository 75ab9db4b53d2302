/**
 * Directory reads (docs/PROTOCOL.md §15.3, §15.5): GetAgent and ListAgents with its opaque page tokens;
 * signed by an operator or the reading agent itself unless `directoryReads` is public.
 */
import { fromBase64Url, toBase64Url, utf8 } from '@parley/crypto-core';
import { assertAgentId, assertAgentType, assertCapability } from '@parley/identity';
import { AgentStatus, type RegistryService } from '@parley/proto';
import { RpcError, type ServiceImplementation } from '@parley/rpc';
import type { ServiceContext } from './context.js';
import { agentRecord, field } from './fields.js';

/** Most agents one ListAgents page returns. */
export const MAX_PAGE_SIZE = 500;
/** Default ListAgents page size. */
export const DEFAULT_PAGE_SIZE = 50;

/** GetAgent, ListAgents. */
export function directoryHandlers(c: ServiceContext): Pick<ServiceImplementation<typeof RegistryService>, 'getAgent' | 'listAgents'> {
  const { store } = c;
  return {
    getAgent: async (req, ctx) => {
      const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
      await c.auth.authorise(ctx, 'directory');
      const agent = await store.agent(agentId, Date.now());
      if (agent === undefined) throw new RpcError('not_found', `unknown agent '${agentId}'`);
      return { agent: agentRecord(agent) };
    },

    listAgents: async (req, ctx) => {
      if (req.pageSize > MAX_PAGE_SIZE) throw new RpcError('malformed', `page_size must be at most ${MAX_PAGE_SIZE}, got ${req.pageSize}`);
      const limit = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
      const agentType = req.agentType === '' ? undefined : field(() => assertAgentType(req.agentType, 'agent_type'));
      const capability = req.capability === '' ? undefined : field(() => assertCapability(req.capability, 'capability'));
      if (AgentStatus[req.status] === undefined) throw new RpcError('malformed', `unknown agent status ${req.status}`);
      const status = req.status === AgentStatus.UNSPECIFIED ? undefined : req.status;
      const afterAgentId = req.pageToken === '' ? undefined : decodePageToken(req.pageToken);
      await c.auth.authorise(ctx, 'directory');
      const page = await store.listAgents({
        limit,
        nowMs: Date.now(),
        ...(afterAgentId === undefined ? {} : { afterAgentId }),
        ...(agentType === undefined ? {} : { agentType }),
        ...(capability === undefined ? {} : { capability }),
        ...(status === undefined ? {} : { status }),
      });
      const last = page.agents.at(-1);
      return { agents: page.agents.map((a) => agentRecord(a)), nextPageToken: page.more && last !== undefined ? encodePageToken(last.agentId) : '' };
    },
  };
}

const PAGE_TOKEN_PREFIX = 'a1.';

function encodePageToken(agentId: string): string {
  return PAGE_TOKEN_PREFIX + toBase64Url(utf8(agentId));
}

function decodePageToken(token: string): string {
  const invalid = (): never => {
    throw new RpcError('malformed', 'page_token is not a token from a previous ListAgents response');
  };
  if (token.length > 256 || !token.startsWith(PAGE_TOKEN_PREFIX)) invalid();
  let agentId = '';
  try {
    agentId = new TextDecoder('utf-8', { fatal: true }).decode(fromBase64Url(token.slice(PAGE_TOKEN_PREFIX.length)));
  } catch {
    invalid();
  }
  try {
    return field(() => assertAgentId(agentId));
  } catch {
    return invalid();
  }
}
