/**
 * @parley/rpc — gRPC plumbing shared by Parley's servers (registry, gateway)
 * and clients (CLI, client SDK): the protobuf-es ↔ grpc-js adapter, the one
 * table from Parley error codes to gRPC statuses, health checking, server
 * reflection, operator request signatures, and the registry's signed layouts.
 */

// For users: services and clients
export { addService, createClient, serviceDefinition, methodPath, requestBytesOf } from './service.js';
export type {
  AddServiceOptions,
  CallContext,
  CallOptions,
  CallRecord,
  Client,
  ClientOptions,
  MethodHandler,
  RequestSigner,
  ServiceDefinitionOptions,
  ServiceImplementation,
} from './service.js';
export { RpcError, isRpcError, isRpcErrorCode, RPC_ERROR_CODES, GRPC_STATUS_BY_CODE, ERROR_CODE_METADATA_KEY } from './errors.js';
export type { RpcErrorCode } from './errors.js';
export { ConfigError, ProblemList, suggestKey } from './config-problems.js';
export type { ConfigProblem } from './config-problems.js';
export { addHealthService, ServingStatus } from './health.js';
export type { HealthReporter } from './health.js';
export { addReflectionService, REFLECTION_V1ALPHA_SERVICE } from './reflection.js';

// For the registry and its clients: operator signatures and registry layouts (docs/PROTOCOL.md §15)
export {
  signOperatorRequest,
  operatorRequestSigner,
  parseOperatorMetadata,
  verifyOperatorRequest,
  operatorRequestLayout,
  OPERATOR_METADATA_KEYS,
  OPERATOR_REQUEST_DOMAIN,
  OPERATOR_NONCE_BYTES,
  REGISTRY_ID_BYTES,
} from './operator-auth.js';
export type { OperatorKey, OperatorRequestAuth, OperatorRequestTarget } from './operator-auth.js';
export {
  registrationProofLayout,
  rotationAuthorisationLayout,
  rotationProofLayout,
  revocationEntryHash,
  revocationHeadLayout,
  entryFields,
  reasonString,
  RevocationListFollower,
  CHALLENGE_BYTES,
  CHAIN_HASH_BYTES,
  EMPTY_CHAIN_HASH,
  REGISTRY_DOMAINS,
  REVOCATION_KIND,
} from './registry-protocol.js';
export type { AcceptedBatch, RevocationEntryFields, RevocationHeadFields, RotationFields } from './registry-protocol.js';

// For servers and clients with streams: a small async queue (one producer side, one consumer)
export { Channel } from './channel.js';
