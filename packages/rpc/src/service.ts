/**
 * The adapter between protobuf-es service descriptors (`GenService`, generated
 * by buf from proto/) and grpc-js: a `ServiceDefinition` whose paths are
 * `/<package>.<Service>/<Method>` and whose (de)serializers are protobuf-es's
 * `toBinary` / `fromBinary`; typed server handlers (`async` functions and
 * async generators instead of callbacks and streams); and a typed client
 * whose unary calls return promises and whose streams are async iterables.
 *
 * Errors cross the boundary in one way only: a handler throws (an RpcError,
 * or anything, which becomes `internal`), the adapter sends the status of
 * errors.ts's table with `parley-error-code` in the trailers, and the client
 * rejects with an RpcError carrying that code.
 */
import {
  Client as GrpcClient,
  Metadata,
  status as GrpcStatus,
  type CallOptions as GrpcCallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type ClientReadableStream,
  type Server,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type ServiceError,
  type sendUnaryData,
} from '@grpc/grpc-js';
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import { RpcError } from './errors.js';

// ---------------------------------------------------------------------------
// Descriptor → grpc-js definition

/** Settings of {@link serviceDefinition}. */
export interface ServiceDefinitionOptions {
  /**
   * Serve the methods under another fully qualified service name with the same
   * messages (grpc.reflection.v1alpha is wire-identical to v1, say).
   */
  readonly typeName?: string;
}

/** The gRPC path of a method: `/<package>.<Service>/<Method>`. */
export function methodPath(method: DescMethod, typeName = method.parent.typeName): string {
  return `/${typeName}/${method.name}`;
}

/** A request that failed to decode; handlers never see it (the adapter answers INVALID_ARGUMENT). */
const UNDECODABLE = Symbol('undecodable request');
interface Undecodable {
  readonly [UNDECODABLE]: true;
  readonly error: unknown;
}

/** The exact bytes each decoded request arrived as (for request signatures over the body). */
const REQUEST_BYTES = new WeakMap<object, Uint8Array>();

/**
 * The bytes a request message was decoded from, on the server side.
 * @param request a request message a handler received
 * @returns its wire bytes, or undefined for a message that did not come off the wire
 */
export function requestBytesOf(request: object): Uint8Array | undefined {
  return REQUEST_BYTES.get(request);
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The grpc-js `ServiceDefinition` of a protobuf-es service: one entry per
 * method, keyed by the method's `localName` (lowerCamelCase), with protobuf-es
 * (de)serializers. Requests may be given to the serializer pre-encoded (a
 * Uint8Array), which is how the client signs exactly the bytes it sends.
 *
 * @param service a generated service descriptor (e.g. `RegistryService`)
 * @param options `typeName` to serve under another service name
 * @returns the definition for `server.addService` or `makeGenericClientConstructor`
 */
export function serviceDefinition(service: DescService, options: ServiceDefinitionOptions = {}): ServiceDefinition {
  const definition: Record<string, ServiceDefinition[string]> = {};
  for (const method of service.methods) {
    if (method.methodKind === 'client_streaming') {
      throw new RpcError('unimplemented', `client-streaming method ${method.name} is not supported by @parley/rpc`);
    }
    definition[method.localName] = {
      path: methodPath(method, options.typeName),
      originalName: method.name,
      requestStream: method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind !== 'unary',
      requestSerialize: (value: unknown) =>
        asBuffer(value instanceof Uint8Array ? value : toBinary(method.input, value as MessageShape<DescMessage>)),
      requestDeserialize: (bytes: Buffer): unknown => {
        const copy = new Uint8Array(bytes);
        try {
          const message = fromBinary(method.input, copy);
          REQUEST_BYTES.set(message, copy);
          return message;
        } catch (error) {
          return { [UNDECODABLE]: true, error } satisfies Undecodable;
        }
      },
      responseSerialize: (value: unknown) => asBuffer(toBinary(method.output, value as MessageShape<DescMessage>)),
      responseDeserialize: (bytes: Buffer) => fromBinary(method.output, new Uint8Array(bytes)),
    };
  }
  return definition as ServiceDefinition;
}

// ---------------------------------------------------------------------------
// Server

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** The method being called. */
  readonly method: DescMethod;
  /** Its gRPC path, `/<package>.<Service>/<Method>`. */
  readonly path: string;
  /** Request metadata (headers). */
  readonly metadata: Metadata;
  /** The peer address as grpc-js reports it (`ipv4:127.0.0.1:5555`). */
  readonly peer: string;
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** The wire bytes of the request (unary and server-streaming calls). */
  readonly requestBytes: Uint8Array;
  /** TLS details of the connection (peer certificate when mTLS is in use). */
  readonly authContext: ReturnType<ServerUnaryCall<unknown, unknown>['getAuthContext']>;
}

type In<M> = M extends { input: infer I extends DescMessage } ? I : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? O : never;

/** The handler a method needs, by its kind. */
export type MethodHandler<M> = M extends { methodKind: 'unary' }
  ? (request: MessageShape<In<M>>, context: CallContext) => Promise<MessageInitShape<Out<M>>> | MessageInitShape<Out<M>>
  : M extends { methodKind: 'server_streaming' }
    ? (request: MessageShape<In<M>>, context: CallContext) => AsyncIterable<MessageInitShape<Out<M>>>
    : M extends { methodKind: 'bidi_streaming' }
      ? (requests: AsyncIterable<MessageShape<In<M>>>, context: CallContext) => AsyncIterable<MessageInitShape<Out<M>>>
      : never;

/** An implementation of a whole service: one handler per method, keyed by `localName`. */
export type ServiceImplementation<S extends DescService> = S extends { method: infer Methods }
  ? { [K in keyof Methods]: MethodHandler<Methods[K]> }
  : never;

/** What {@link addService} reports about each finished call (for access logs and metrics). */
export interface CallRecord {
  readonly path: string;
  readonly peer: string;
  /** gRPC status code the call ended with (0 = OK). */
  readonly grpcCode: number;
  /** The Parley code of a failed call. */
  readonly code?: string;
  readonly durationMs: number;
  /** The error a failed call was thrown with (its `cause` holds the original). */
  readonly error?: RpcError;
}

/** Settings of {@link addService}. */
export interface AddServiceOptions extends ServiceDefinitionOptions {
  /** Called once per finished call, after the status is sent. Must not throw. */
  readonly onCallEnd?: (record: CallRecord) => void;
}

/**
 * Registers a protobuf-es service on a grpc-js server with typed handlers.
 * A handler's thrown error becomes the call's status through the table in
 * errors.ts (anything that is not an RpcError is `internal`, its message kept
 * out of the status); an undecodable request is `malformed` (INVALID_ARGUMENT).
 *
 * @param server a grpc-js Server
 * @param service the generated service descriptor
 * @param implementation one handler per method (unary: async function;
 *   server streaming: async generator; bidi: async generator over an async iterable)
 * @param options `onCallEnd` for logging; `typeName` to serve under another name
 * @example
 * addService(server, RegistryService, { async getAgent(req, ctx) { return { agent: … } }, … });
 */
export function addService<S extends DescService>(
  server: Server,
  service: S,
  implementation: ServiceImplementation<S>,
  options: AddServiceOptions = {},
): void {
  const definition = serviceDefinition(service, options);
  const handlers: Record<string, unknown> = {};
  const impl = implementation as Record<string, (...args: unknown[]) => unknown>;
  for (const method of service.methods) {
    const handler = impl[method.localName];
    if (typeof handler !== 'function') throw new RpcError('internal', `no handler for ${service.typeName}.${method.name}`);
    const path = methodPath(method, options.typeName);
    const bound = handler.bind(implementation);
    if (method.methodKind === 'unary') handlers[method.localName] = unaryHandler(method, path, bound, options);
    else if (method.methodKind === 'server_streaming') handlers[method.localName] = serverStreamHandler(method, path, bound, options);
    else handlers[method.localName] = bidiHandler(method, path, bound, options);
  }
  server.addService(definition, handlers as Parameters<Server['addService']>[1]);
}

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>;

/** The requestBytes of a call with no single request (bidi): one shared empty array, not one per stream. */
const NO_REQUEST_BYTES = new Uint8Array(0);

function contextOf(method: DescMethod, path: string, call: AnyCall, requestBytes: Uint8Array): { context: CallContext; done: () => void } {
  const controller = new AbortController();
  const abort = (): void => controller.abort(new RpcError('cancelled', 'call cancelled'));
  const emitter = call as NodeJS.EventEmitter;
  emitter.on('cancelled', abort);
  if (call.cancelled) abort();
  const context: CallContext = {
    method,
    path,
    metadata: call.metadata,
    peer: call.getPeer(),
    signal: controller.signal,
    requestBytes,
    authContext: call.getAuthContext(),
  };
  return { context, done: () => emitter.off('cancelled', abort) };
}

function checkDecoded(request: unknown): object {
  if (typeof request === 'object' && request !== null && UNDECODABLE in request) {
    throw new RpcError('malformed', 'request is not a valid protobuf encoding of the method input', { cause: (request as Undecodable).error });
  }
  return request as object;
}

function report(options: AddServiceOptions, path: string, peer: string, start: number, error?: RpcError): void {
  if (options.onCallEnd === undefined) return;
  const durationMs = performance.now() - start;
  try {
    options.onCallEnd(
      error === undefined
        ? { path, peer, grpcCode: GrpcStatus.OK, durationMs }
        : { path, peer, grpcCode: error.grpcCode, code: error.code, durationMs, error },
    );
  } catch {
    // A logging hook never changes a call's outcome.
  }
}

function unaryHandler(method: DescMethod, path: string, handler: (...args: unknown[]) => unknown, options: AddServiceOptions) {
  return (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>): void => {
    const start = performance.now();
    const peer = call.getPeer();
    void (async () => {
      let done = (): void => undefined;
      try {
        const request = checkDecoded(call.request);
        const ctx = contextOf(method, path, call, REQUEST_BYTES.get(request) ?? NO_REQUEST_BYTES);
        done = ctx.done;
        const result = await handler(request, ctx.context);
        const response = create(method.output, result as MessageInitShape<DescMessage>);
        callback(null, response);
        report(options, path, peer, start);
      } catch (thrown) {
        const error = RpcError.from(thrown);
        callback(error.toStatus() as ServiceError, null);
        report(options, path, peer, start, error);
      } finally {
        done();
      }
    })();
  };
}

async function writeAll(
  method: DescMethod,
  call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  responses: AsyncIterable<unknown>,
  signal: AbortSignal,
): Promise<void> {
  for await (const item of responses) {
    if (signal.aborted) break;
    const message = create(method.output, item as MessageInitShape<DescMessage>);
    if (!call.write(message)) {
      // Back-pressure: wait until grpc-js drains, or the call ends.
      const emitter = call as NodeJS.EventEmitter;
      await new Promise<void>((resolve) => {
        const finish = (): void => {
          emitter.off('drain', finish);
          signal.removeEventListener('abort', finish);
          resolve();
        };
        emitter.once('drain', finish);
        signal.addEventListener('abort', finish, { once: true });
      });
    }
  }
}

function endWithError(call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>, error: RpcError): void {
  if (call.cancelled || call.destroyed) return;
  call.emit('error', error.toStatus());
}

function serverStreamHandler(method: DescMethod, path: string, handler: (...args: unknown[]) => unknown, options: AddServiceOptions) {
  return (call: ServerWritableStream<unknown, unknown>): void => {
    const start = performance.now();
    const peer = call.getPeer();
    void (async () => {
      let done = (): void => undefined;
      try {
        const request = checkDecoded(call.request);
        const ctx = contextOf(method, path, call, REQUEST_BYTES.get(request) ?? NO_REQUEST_BYTES);
        done = ctx.done;
        await writeAll(method, call, handler(request, ctx.context) as AsyncIterable<unknown>, ctx.context.signal);
        if (ctx.context.signal.aborted) {
          report(options, path, peer, start, new RpcError('cancelled', 'call cancelled'));
        } else {
          call.end();
          report(options, path, peer, start);
        }
      } catch (thrown) {
        const error = RpcError.from(thrown);
        endWithError(call, error);
        report(options, path, peer, start, error);
      } finally {
        done();
      }
    })();
  };
}

function bidiHandler(method: DescMethod, path: string, handler: (...args: unknown[]) => unknown, options: AddServiceOptions) {
  return (call: ServerDuplexStream<unknown, unknown>): void => {
    const start = performance.now();
    const peer = call.getPeer();
    void (async () => {
      const ctx = contextOf(method, path, call, NO_REQUEST_BYTES);
      try {
        async function* requests(): AsyncGenerator<unknown> {
          // Not `for await (… of call)`: a finished async iterator destroys the stream,
          // and with it the response side of this duplex call.
          for await (const request of call.iterator({ destroyOnReturn: false })) yield checkDecoded(request);
        }
        await writeAll(method, call, handler(requests(), ctx.context) as AsyncIterable<unknown>, ctx.context.signal);
        if (!ctx.context.signal.aborted) call.end();
        report(options, path, peer, start);
      } catch (thrown) {
        const error = RpcError.from(thrown);
        endWithError(call, error);
        report(options, path, peer, start, error);
      } finally {
        ctx.done();
      }
    })();
  };
}

// ---------------------------------------------------------------------------
// Client

/** Per-call settings of a {@link Client} method. */
export interface CallOptions {
  /** Extra request metadata (ASCII values; keys ending in `-bin` take bytes). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Deadline: milliseconds from now. */
  readonly timeoutMs?: number;
  /** Cancels the call. */
  readonly signal?: AbortSignal;
}

/**
 * Adds metadata computed from the exact request bytes (a request signature):
 * called once per call with the method path and the encoded request.
 */
export type RequestSigner = (path: string, requestBytes: Uint8Array) => Readonly<Record<string, string>> | undefined;

/** Settings of {@link createClient}. */
export interface ClientOptions {
  /** grpc-js channel options (e.g. `grpc.max_receive_message_length`). */
  readonly channelOptions?: ChannelOptions;
  /** Signs requests (see {@link RequestSigner}); consulted for every unary and server-streaming call. */
  readonly signer?: RequestSigner;
  /** Default deadline for unary calls, ms. None when omitted. */
  readonly defaultTimeoutMs?: number;
}

type ClientMethod<M> = M extends { methodKind: 'unary' }
  ? (request: MessageInitShape<In<M>>, options?: CallOptions) => Promise<MessageShape<Out<M>>>
  : M extends { methodKind: 'server_streaming' }
    ? (request: MessageInitShape<In<M>>, options?: CallOptions) => AsyncIterable<MessageShape<Out<M>>>
    : M extends { methodKind: 'bidi_streaming' }
      ? (requests: AsyncIterable<MessageInitShape<In<M>>>, options?: CallOptions) => AsyncIterable<MessageShape<Out<M>>>
      : never;

/** A typed client of a service: one method per RPC, keyed by `localName`, plus `close()`. */
export type Client<S extends DescService> = (S extends { method: infer Methods } ? { [K in keyof Methods]: ClientMethod<Methods[K]> } : never) & {
  /** Closes the channel; calls in flight fail with `cancelled` or `unavailable`. */
  close(): void;
  /** Resolves once the channel is connected, or rejects with `unavailable` after `timeoutMs`. */
  waitForReady(timeoutMs: number): Promise<void>;
};

function grpcCallOptions(options: CallOptions | undefined, defaultTimeoutMs: number | undefined): GrpcCallOptions {
  const timeout = options?.timeoutMs ?? defaultTimeoutMs;
  return timeout === undefined ? {} : { deadline: Date.now() + timeout };
}

function metadataOf(extra: Readonly<Record<string, string>> | undefined, signed: Readonly<Record<string, string>> | undefined): Metadata {
  const metadata = new Metadata();
  for (const source of [extra, signed]) {
    if (source === undefined) continue;
    for (const [key, value] of Object.entries(source)) metadata.set(key, value);
  }
  return metadata;
}

/**
 * A typed client of a protobuf-es service over grpc-js. Unary methods return
 * promises; server-streaming and bidi methods return async iterables (breaking
 * out of the loop cancels the call). Every failure is an RpcError.
 *
 * @param service the generated service descriptor
 * @param address `host:port`
 * @param credentials `credentials.createInsecure()` or `credentials.createSsl(...)`
 * @param options channel options, request signer, default deadline
 * @returns the client
 * @example
 * const registry = createClient(RegistryService, '127.0.0.1:50051', credentials.createInsecure());
 * const { agent } = await registry.getAgent({ agentId: 'planner-1' });
 */
export function createClient<S extends DescService>(
  service: S,
  address: string,
  credentials: ChannelCredentials,
  options: ClientOptions = {},
): Client<S> {
  const channel = new GrpcClient(address, credentials, options.channelOptions ?? {});
  const definition = serviceDefinition(service);
  const client: Record<string, unknown> = {
    close: () => channel.close(),
    waitForReady: (timeoutMs: number) =>
      new Promise<void>((resolve, reject) => {
        channel.waitForReady(Date.now() + timeoutMs, (error) => {
          if (error === undefined || error === null) resolve();
          else reject(new RpcError('unavailable', `cannot reach ${address}: ${error.message}`, { cause: error }));
        });
      }),
  };
  for (const method of service.methods) {
    const def = definition[method.localName]!;
    const encode = (request: unknown): Uint8Array => toBinary(method.input, create(method.input, request as MessageInitShape<DescMessage>));
    if (method.methodKind === 'unary') {
      client[method.localName] = (request: unknown, callOptions?: CallOptions) => {
        const bytes = encode(request);
        const metadata = metadataOf(callOptions?.metadata, options.signer?.(def.path, bytes));
        return new Promise((resolve, reject) => {
          const call = channel.makeUnaryRequest(
            def.path,
            def.requestSerialize,
            def.responseDeserialize,
            bytes,
            metadata,
            grpcCallOptions(callOptions, options.defaultTimeoutMs),
            (error: ServiceError | null, response?: unknown) => {
              // The listener must not outlive the call: a long-lived signal would otherwise collect one per call.
              signal?.removeEventListener('abort', cancel);
              if (error !== null) reject(RpcError.fromStatus(error));
              else resolve(response);
            },
          );
          const signal = callOptions?.signal;
          const cancel = (): void => call.cancel();
          if (signal?.aborted === true) call.cancel();
          else signal?.addEventListener('abort', cancel, { once: true });
        });
      };
    } else if (method.methodKind === 'server_streaming') {
      client[method.localName] = (request: unknown, callOptions?: CallOptions) => {
        const bytes = encode(request);
        const metadata = metadataOf(callOptions?.metadata, options.signer?.(def.path, bytes));
        return readStream(() =>
          channel.makeServerStreamRequest(
            def.path,
            def.requestSerialize,
            def.responseDeserialize,
            bytes,
            metadata,
            grpcCallOptions(callOptions, undefined),
          ),
          callOptions?.signal,
        );
      };
    } else if (method.methodKind === 'bidi_streaming') {
      client[method.localName] = (requests: AsyncIterable<unknown>, callOptions?: CallOptions) =>
        readStream(() => {
          const call = channel.makeBidiStreamRequest(
            def.path,
            def.requestSerialize,
            def.responseDeserialize,
            metadataOf(callOptions?.metadata, undefined),
            grpcCallOptions(callOptions, undefined),
          );
          void pump(call, requests, method);
          return call;
        }, callOptions?.signal);
    }
  }
  return client as Client<S>;
}

/**
 * Writes a bidi call's requests with back-pressure. Stops (and leaves the
 * request iterable, running its `finally`) as soon as the call has ended, so a
 * wait for 'drain' on a call that will never drain again cannot hang.
 */
async function pump(call: ClientDuplexStream<unknown, unknown>, requests: AsyncIterable<unknown>, method: DescMethod): Promise<void> {
  let ended = false;
  const onEnd = (): void => {
    ended = true;
  };
  const endEvents = ['status', 'error', 'close'] as const;
  for (const event of endEvents) call.once(event, onEnd);
  try {
    for await (const request of requests) {
      if (ended) return;
      if (!call.write(create(method.input, request as MessageInitShape<DescMessage>))) {
        await new Promise<void>((resolve) => {
          const settle = (): void => {
            call.off('drain', settle);
            for (const event of endEvents) call.off(event, settle);
            resolve();
          };
          call.once('drain', settle);
          for (const event of endEvents) call.once(event, settle);
        });
      }
      if (ended) return;
    }
    call.end();
  } catch {
    call.cancel();
  } finally {
    for (const event of endEvents) call.off(event, onEnd);
  }
}

/** Turns a grpc-js client stream into an async iterable whose errors are RpcErrors; leaving the loop cancels the call. */
async function* readStream<T>(
  open: () => ClientReadableStream<T> | ClientDuplexStream<unknown, T>,
  signal: AbortSignal | undefined,
): AsyncGenerator<T> {
  const call = open();
  const cancel = (): void => call.cancel();
  signal?.addEventListener('abort', cancel, { once: true });
  let finished = false;
  try {
    for await (const message of call as AsyncIterable<T>) yield message;
    finished = true;
  } catch (error) {
    finished = true;
    throw RpcError.fromStatus(error as ServiceError);
  } finally {
    signal?.removeEventListener('abort', cancel);
    if (!finished) call.cancel();
  }
}
