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
  joinTokenHash,
  enrolmentLayout,
  formatJoinToken,
  parseJoinToken,
  JOIN_TOKEN_ID_BYTES,
  JOIN_TOKEN_SECRET_BYTES,
  JOIN_TOKEN_PREFIX,
} from './registry-protocol.js';
export type { AcceptedBatch, EnrolmentFields, RevocationEntryFields, RevocationHeadFields, RotationFields } from './registry-protocol.js';
export {
  agentRequestLayout,
  signAgentRequest,
  agentRequestSigner,
  parseAgentMetadata,
  verifyAgentRequest,
  AGENT_REQUEST_DOMAIN,
  AGENT_METADATA_KEYS,
} from './agent-auth.js';
export type { AgentRequestAuth, AgentRequestKey } from './agent-auth.js';

// For gateways and agents: following a registry's signed trust bundle (docs/PROTOCOL.md §15.9)
export { TrustBundleFollower } from './trust-bundle-follower.js';
export type { TrustBundleFollowerEvent, TrustBundleFollowerOptions, TrustBundleFollowerState, TrustBundleStore } from './trust-bundle-follower.js';

// For servers and clients with streams: a small async queue (one producer side, one consumer)
export { Channel } from './channel.js';
