/**
 * The operator list (docs/PROTOCOL.md §15.3): AddOperator and RemoveOperator (signed by an operator;
 * a removal is a security event) and ListOperators (a directory read).
 */
import { toHex } from '@parley/crypto-core';
import { keyId as computeKeyId } from '@parley/identity';
import type { RegistryService } from '@parley/proto';
import { RpcError, type ServiceImplementation } from '@parley/rpc';
import type { ServiceContext } from './context.js';
import { operatorMessage, requireBytes } from './fields.js';

const OPERATOR_NAME_RE = /^[a-z0-9][a-z0-9._@-]{0,63}$/;

/** AddOperator, RemoveOperator, ListOperators. */
export function operatorHandlers(c: ServiceContext): Pick<ServiceImplementation<typeof RegistryService>, 'addOperator' | 'removeOperator' | 'listOperators'> {
  const { store, crypto } = c;
  return {
    addOperator: async (req, ctx) => {
      if (!OPERATOR_NAME_RE.test(req.name)) throw new RpcError('malformed', 'operator name must be 1..64 characters of [a-z0-9._@-] starting with [a-z0-9]');
      const publicKey = requireBytes(req.publicKey, 32, 'public_key');
      const caller = await c.auth.authorise(ctx, 'write');
      const op = await store.addOperator({ keyId: computeKeyId(crypto, publicKey), publicKey, name: req.name, addedByKeyId: caller?.keyId ?? null, nowMs: Date.now() });
      c.logger.info({ operator_key_id: toHex(op.keyId), name: op.name, by: caller?.name }, 'operator added');
      return { operator: operatorMessage(op) };
    },

    removeOperator: async (req, ctx) => {
      const keyId = requireBytes(req.keyId, 16, 'key_id');
      const caller = await c.auth.authorise(ctx, 'write');
      const op = await store.removeOperator(keyId, caller?.keyId ?? null, Date.now());
      c.logger.warn({ event: 'security', stage: 'registry.RemoveOperator', code: 'operator_removed', key_id: toHex(op.keyId), name: op.name, by: caller?.name, remote: ctx.peer }, 'operator removed');
      return { operator: operatorMessage(op) };
    },

    listOperators: async (_req, ctx) => {
      await c.auth.authorise(ctx, 'operators');
      const ops = await store.operators();
      return {
        operators: ops.map(operatorMessage),
      };
    },
  };
}
