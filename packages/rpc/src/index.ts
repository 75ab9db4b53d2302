/**
 * @parley/rpc — gRPC plumbing shared by Parley's servers (registry, gateway)
 * and clients (CLI, client SDK): the protobuf-es ↔ grpc-js adapter, the one
 * table from Parley error codes to gRPC statuses, health checking, server
 * reflection, and the addresses and plaintext-on-loopback rule of its channels.
 */

// For users: services and clients
export { addService, createClient, serviceDefinition, methodPath, requestBytesOf } from './service.js';
export { withoutIpServerName } from './tls-server-name.js';
export type {
  AddServiceOptions,
  CallContext,
  CallOptions,
  CallRecord,
  Client,
  ClientOptions,
  MethodHandler,
  RequestListener,
  RequestSigner,
  ResponseSink,
  ServerDuplex,
  ServiceDefinitionOptions,
  ServiceImplementation,
} from './service.js';
export { RpcError, isRpcError, isRpcErrorCode, RPC_ERROR_CODES, GRPC_STATUS_BY_CODE, ERROR_CODE_METADATA_KEY } from './errors.js';
export type { RpcErrorCode } from './errors.js';
export { addHealthService, DEFAULT_MAX_WATCHES, ServingStatus } from './health.js';
export type { HealthReporter, HealthServiceOptions } from './health.js';
export { addReflectionService, REFLECTION_V1ALPHA_SERVICE } from './reflection.js';
export { LogThrottle, RateLimiter } from './rate-limit.js';
export type { RateLimitOptions } from './rate-limit.js';

// For servers and clients: addresses, and the one rule for plaintext (loopback only)
export { parseHostPort, formatHostPort, isLoopbackHost, isLoopbackAddress } from './address.js';
export type { HostPort } from './address.js';
