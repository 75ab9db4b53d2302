// @parley/proto: generated protobuf-es code for the Parley v1 wire schemas.
// Everything under ./gen is produced by `npm run generate` (buf + protoc-gen-es)
// and never edited by hand; this file only re-exports it by name.
export * from './gen/parley/v1/identity_pb.js';
export * from './gen/parley/v1/message_pb.js';
export * from './gen/parley/v1/handshake_pb.js';
export * from './gen/parley/v1/audit_pb.js';
export * from './gen/parley/v1/registry_pb.js';
export * from './gen/parley/v1/gateway_pb.js';
export * from './gen/parley/v1/memory_pb.js';
// Standard gRPC services, vendored under proto/grpc (health checking, server reflection).
export * from './gen/grpc/health/v1/health_pb.js';
export * from './gen/grpc/reflection/v1/reflection_pb.js';
export { create, toBinary, fromBinary, toJson, fromJson, clone, equals } from '@bufbuild/protobuf';
export type { MessageInitShape, JsonValue } from '@bufbuild/protobuf';
// The wire format's reader and writer, for code that frames bytes it already holds (e.g. a relay).
export { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
export { ValueSchema } from '@bufbuild/protobuf/wkt';
export type { Value } from '@bufbuild/protobuf/wkt';
