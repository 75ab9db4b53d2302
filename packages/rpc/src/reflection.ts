/**
 * gRPC server reflection (grpc.reflection.v1, vendored in
 * proto/grpc/reflection/v1/reflection.proto; also served as
 * grpc.reflection.v1alpha, whose messages are wire-identical), implemented from
 * protobuf-es's embedded file descriptors: each generated `file_*` GenFile
 * carries its `FileDescriptorProto`, which is serialized with
 * `toBinary(FileDescriptorProtoSchema, file.proto)` for the client. So
 * `grpcurl -plaintext host:port list` and `describe` work with no .proto files
 * on the client side.
 */
import type { Server } from '@grpc/grpc-js';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { toBinary, type DescEnum, type DescFile, type DescMessage, type DescService, type MessageInitShape } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { ServerReflection, type ServerReflectionRequest, type ServerReflectionResponseSchema } from '@parley/proto';
import { addService, type AddServiceOptions } from './service.js';

/** The older service name that grpcurl and others still try first; same messages. */
export const REFLECTION_V1ALPHA_SERVICE = 'grpc.reflection.v1alpha.ServerReflection';

/** Longest symbol or file name looked up (bounds work on hostile input). */
const MAX_NAME = 512;

/**
 * An index of the schemas a server exposes: files by name, symbols by fully
 * qualified name, and the serialized descriptors.
 */
class DescriptorIndex {
  readonly #files = new Map<string, DescFile>();
  readonly #symbols = new Map<string, DescFile>();
  readonly #encoded = new Map<DescFile, Uint8Array>();

  constructor(files: readonly DescFile[]) {
    for (const file of files) this.#addFile(file);
  }

  #addFile(file: DescFile): void {
    const name = `${file.name}.proto`;
    if (this.#files.has(name)) return;
    this.#files.set(name, file);
    this.#encoded.set(file, toBinary(FileDescriptorProtoSchema, file.proto));
    for (const dep of file.dependencies) this.#addFile(dep);
    const addMessage = (message: DescMessage): void => {
      this.#symbols.set(message.typeName, file);
      for (const nested of message.nestedMessages) addMessage(nested);
      for (const nested of message.nestedEnums) this.#symbols.set(nested.typeName, file);
      for (const ext of message.nestedExtensions) this.#symbols.set(ext.typeName, file);
    };
    for (const message of file.messages) addMessage(message);
    for (const e of file.enums as DescEnum[]) this.#symbols.set(e.typeName, file);
    for (const ext of file.extensions) this.#symbols.set(ext.typeName, file);
    for (const service of file.services as DescService[]) {
      this.#symbols.set(service.typeName, file);
      for (const method of service.methods) this.#symbols.set(`${service.typeName}.${method.name}`, file);
    }
  }

  fileByName(name: string): DescFile | undefined {
    return this.#files.get(name);
  }

  fileBySymbol(symbol: string): DescFile | undefined {
    return this.#symbols.get(symbol.startsWith('.') ? symbol.slice(1) : symbol);
  }

  /** The file's descriptor followed by those of its transitive dependencies, each once. */
  withDependencies(file: DescFile): Uint8Array[] {
    const out: Uint8Array[] = [];
    const seen = new Set<DescFile>();
    const visit = (f: DescFile): void => {
      if (seen.has(f)) return;
      seen.add(f);
      out.push(this.#encoded.get(f) ?? toBinary(FileDescriptorProtoSchema, f.proto));
      for (const dep of f.dependencies) visit(dep);
    };
    visit(file);
    return out;
  }
}

type ReflectionResponse = MessageInitShape<typeof ServerReflectionResponseSchema>;

function answer(index: DescriptorIndex, services: readonly string[], request: ServerReflectionRequest): ReflectionResponse {
  const base = { validHost: request.host, originalRequest: request };
  const notFound = (what: string): ReflectionResponse => ({
    ...base,
    messageResponse: { case: 'errorResponse', value: { errorCode: GrpcStatus.NOT_FOUND, errorMessage: `${what} not found` } },
  });
  const files = (file: DescFile): ReflectionResponse => ({
    ...base,
    messageResponse: { case: 'fileDescriptorResponse', value: { fileDescriptorProto: index.withDependencies(file) } },
  });
  const r = request.messageRequest;
  switch (r.case) {
    case 'listServices':
      return { ...base, messageResponse: { case: 'listServicesResponse', value: { service: services.map((name) => ({ name })) } } };
    case 'fileByFilename': {
      const file = r.value.length <= MAX_NAME ? index.fileByName(r.value) : undefined;
      return file === undefined ? notFound(`file '${r.value.slice(0, MAX_NAME)}'`) : files(file);
    }
    case 'fileContainingSymbol': {
      const file = r.value.length <= MAX_NAME ? index.fileBySymbol(r.value) : undefined;
      return file === undefined ? notFound(`symbol '${r.value.slice(0, MAX_NAME)}'`) : files(file);
    }
    case 'fileContainingExtension':
      return notFound(`extension ${r.value.extensionNumber} of '${r.value.containingType.slice(0, MAX_NAME)}'`);
    case 'allExtensionNumbersOfType': {
      const file = r.value.length <= MAX_NAME ? index.fileBySymbol(r.value) : undefined;
      if (file === undefined) return notFound(`type '${r.value.slice(0, MAX_NAME)}'`);
      // Parley's schemas declare no extensions.
      return { ...base, messageResponse: { case: 'allExtensionNumbersResponse', value: { baseTypeName: r.value, extensionNumber: [] } } };
    }
    default:
      return {
        ...base,
        messageResponse: { case: 'errorResponse', value: { errorCode: GrpcStatus.INVALID_ARGUMENT, errorMessage: 'empty reflection request' } },
      };
  }
}

/**
 * Adds server reflection (grpc.reflection.v1 and v1alpha) to a server.
 *
 * @param server a grpc-js Server
 * @param services the services the server exposes (their files, and the files
 *   those import, become fetchable); the reflection service adds itself
 * @param options forwarded to {@link addService}
 * @example
 * addReflectionService(server, [RegistryService, Health]);
 */
export function addReflectionService(server: Server, services: readonly DescService[], options: AddServiceOptions = {}): void {
  const all = [...services, ServerReflection];
  const index = new DescriptorIndex(all.map((s) => s.file));
  const names = [...new Set([...all.map((s) => s.typeName), REFLECTION_V1ALPHA_SERVICE])].sort();
  const implementation = {
    async *serverReflectionInfo(requests: AsyncIterable<ServerReflectionRequest>) {
      for await (const request of requests) yield answer(index, names, request);
    },
  };
  addService(server, ServerReflection, implementation, options);
  addService(server, ServerReflection, implementation, { ...options, typeName: REFLECTION_V1ALPHA_SERVICE });
}
