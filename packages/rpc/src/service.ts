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
import { constants as http2Constants } from 'node:http2';
import { RpcError } from './errors.js';
import { withoutIpServerName } from './tls-server-name.js';

const NGHTTP2_CANCEL = http2Constants.NGHTTP2_CANCEL;

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
      responseSerialize: (value: unknown) =>
        asBuffer(value instanceof Uint8Array ? value : toBinary(method.output, value as MessageShape<DescMessage>)),
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
  /** Aborted when the client cancels or the deadline passes (made on first use: a call that never asks holds none). */
  readonly signal: AbortSignal;
  /** The wire bytes of the request (unary and server-streaming calls). */
  readonly requestBytes: Uint8Array;
  /** TLS details of the connection (peer certificate when mTLS is in use), read from the connection when asked. */
  readonly authContext: ReturnType<ServerUnaryCall<unknown, unknown>['getAuthContext']>;
}

/**
 * Where a handler writes a bidi call's responses when it drives the call itself (a bidi handler that returns
 * nothing): in order, with back-pressure towards grpc-js (queued while the transport is full); then
 * `end()` (status OK) or `fail(error)` (the error's status), each after the responses already pushed.
 */
export interface ResponseSink<O> {
  /** Whether `end()` or `fail()` was called. */
  readonly closed: boolean;
  /** Writes a response; false (and ignored) once closed. After the client went away it is dropped. */
  push(response: O): boolean;
  /**
   * Writes a response that is already encoded: `frame` is the protobuf encoding of one O message (a relay
   * writing bytes it holds as they are, instead of decoding and encoding them again). In order with
   * {@link push}; false (and ignored) once closed. The bytes are written unchecked: the caller vouches for them.
   */
  pushEncoded(frame: Uint8Array): boolean;
  /** Ends the call with status OK after the responses pushed so far. */
  end(): void;
  /** Ends the call with the status of `error` (see errors.ts) after the responses pushed so far. */
  fail(error: unknown): void;
}

/** Takes a bidi call's requests as they arrive (see {@link ServerDuplex.listen}). Its methods are called with the listener as `this`. */
export interface RequestListener<I> {
  /** A request. */
  message(request: I): void;
  /** The client half-closed: no more requests. */
  end(): void;
  /**
   * The request side failed: the client went away (`code` ERR_STREAM_PREMATURE_CLOSE), a request did not
   * decode (RpcError `malformed`), or the stream errored. No more requests.
   */
  error(error: unknown): void;
  /** The responses are over (after `end()` or `fail()`), just before the status is sent. Called once. */
  finished(): void;
}

/**
 * A bidi call as its handler sees it. Its requests are an async iterator (`for await`, or one `next()` at a
 * time), or — after `listen(listener)` — handed to the listener as they arrive (`pause()` stops reading,
 * and with it HTTP/2 flow control pushes back on the client; `resume()` goes on). A handler returns its
 * responses as an async iterable, or returns nothing and writes them through the call's {@link ResponseSink}
 * side. The listener form holds no promise, generator, closure or abort controller per call while it is idle:
 * the shape for many long-lived streams. It is also the call's {@link CallContext} (the handler's second argument).
 */
export interface ServerDuplex<I, O> extends AsyncIterableIterator<I>, ResponseSink<O>, CallContext {
  /** From now on each request goes to `listener` (first those already received); the iterator is no longer used. */
  listen(listener: RequestListener<I>): void;
  /** Stops handing requests to the listener. */
  pause(): void;
  /** Hands requests to the listener again. */
  resume(): void;
  /**
   * Ends the call now: the responses not yet handed to grpc-js are dropped, the listener's `finished` runs, and
   * the HTTP/2 stream is reset (RST_STREAM CANCEL) — for a client that stopped reading, whose call `end()` and
   * `fail()` would hold open for as long as it keeps the connection (the status waits behind unsent data).
   */
  abort(error: unknown): void;
}

type In<M> = M extends { input: infer I extends DescMessage } ? I : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? O : never;

/** The handler a method needs, by its kind. */
export type MethodHandler<M> = M extends { methodKind: 'unary' }
  ? (request: MessageShape<In<M>>, context: CallContext) => Promise<MessageInitShape<Out<M>>> | MessageInitShape<Out<M>>
  : M extends { methodKind: 'server_streaming' }
    ? (request: MessageShape<In<M>>, context: CallContext) => AsyncIterable<MessageInitShape<Out<M>>>
    : M extends { methodKind: 'bidi_streaming' }
      ? (
          requests: ServerDuplex<MessageShape<In<M>>, MessageInitShape<Out<M>>>,
          context: CallContext,
        ) => AsyncIterable<MessageInitShape<Out<M>>> | void
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
 *   server streaming: async generator; bidi: async generator over the requests, or a function that
 *   drives the {@link ServerDuplex} itself and returns nothing)
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

/** A handler's CallContext: what is rarely asked for (the abort signal, the TLS details) is made when asked. */
class ServerCallContext implements CallContext {
  readonly method: DescMethod;
  readonly path: string;
  readonly peer: string;
  readonly requestBytes: Uint8Array;
  protected readonly call: AnyCall;
  #controller: AbortController | undefined;
  #onCancelled: (() => void) | undefined;

  constructor(method: DescMethod, path: string, call: AnyCall, requestBytes: Uint8Array) {
    this.method = method;
    this.path = path;
    this.call = call;
    this.peer = call.getPeer();
    this.requestBytes = requestBytes;
  }

  get metadata(): Metadata {
    return this.call.metadata;
  }

  get authContext(): CallContext['authContext'] {
    return this.call.getAuthContext();
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      const abort = (): void => controller.abort(new RpcError('cancelled', 'call cancelled'));
      if (this.call.cancelled) abort();
      else {
        this.#onCancelled = abort;
        (this.call as NodeJS.EventEmitter).on('cancelled', abort);
      }
    }
    return this.#controller.signal;
  }

  /** The handler is done: the cancellation listener (if the signal was asked for) goes. */
  release(): void {
    if (this.#onCancelled === undefined) return;
    (this.call as NodeJS.EventEmitter).off('cancelled', this.#onCancelled);
    this.#onCancelled = undefined;
  }
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
      let context: ServerCallContext | undefined;
      try {
        const request = checkDecoded(call.request);
        context = new ServerCallContext(method, path, call, REQUEST_BYTES.get(request) ?? NO_REQUEST_BYTES);
        const result = await handler(request, context);
        const response = create(method.output, result as MessageInitShape<DescMessage>);
        callback(null, response);
        report(options, path, peer, start);
      } catch (thrown) {
        const error = RpcError.from(thrown);
        callback(error.toStatus() as ServiceError, null);
        report(options, path, peer, start, error);
      } finally {
        context?.release();
      }
    })();
  };
}

/** Writes a handler's responses with back-pressure, until they end or the call is cancelled or gone. */
async function writeAll(
  method: DescMethod,
  call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  responses: AsyncIterable<unknown>,
): Promise<void> {
  for await (const item of responses) {
    if (call.cancelled || call.destroyed) break;
    const message = create(method.output, item as MessageInitShape<DescMessage>);
    if (!call.write(message)) {
      // Back-pressure: wait until grpc-js drains, or the call is gone (a cancelled call is destroyed: 'close').
      const emitter = call as NodeJS.EventEmitter;
      await new Promise<void>((resolve) => {
        const finish = (): void => {
          emitter.off('drain', finish);
          emitter.off('close', finish);
          resolve();
        };
        emitter.once('drain', finish);
        emitter.once('close', finish);
      });
    }
  }
}

/**
 * Resets a server call's HTTP/2 stream (RST_STREAM CANCEL). grpc-js has no public way to do it: its call object
 * holds the intercepting call chain (`call`, then `nextCall` of each interceptor), whose base holds the
 * `http2.ServerHttp2Stream` (`stream`). Found by shape, not by class; when it is not there (another grpc-js),
 * the call is destroyed instead, which ends it on our side.
 */
function resetStream(call: ServerDuplexStream<unknown, unknown>): void {
  let at: unknown = (call as unknown as { call?: unknown }).call;
  for (let depth = 0; depth < 8 && at !== null && typeof at === 'object'; depth++) {
    const stream = (at as { stream?: { close?: unknown; destroyed?: boolean; closed?: boolean } }).stream;
    if (stream !== undefined && typeof stream.close === 'function') {
      if (stream.destroyed !== true && stream.closed !== true) (stream.close as (code: number) => void)(NGHTTP2_CANCEL);
      return;
    }
    at = (at as { nextCall?: unknown }).nextCall;
  }
  call.destroy();
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
      let context: ServerCallContext | undefined;
      try {
        const request = checkDecoded(call.request);
        context = new ServerCallContext(method, path, call, REQUEST_BYTES.get(request) ?? NO_REQUEST_BYTES);
        await writeAll(method, call, handler(request, context) as AsyncIterable<unknown>);
        if (call.cancelled) {
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
        context?.release();
      }
    })();
  };
}

function bidiHandler(method: DescMethod, path: string, handler: (...args: unknown[]) => unknown, options: AddServiceOptions) {
  return (call: ServerDuplexStream<unknown, unknown>): void => {
    const duplex = new DuplexCall(method, path, call, options);
    let responses: unknown;
    try {
      responses = handler(duplex, duplex);
    } catch (thrown) {
      duplex.fail(thrown);
      return;
    }
    // Nothing returned: the handler drives the call through `duplex` (push, end, fail).
    if (responses !== undefined) void duplex.writeFrom(responses as AsyncIterable<unknown>);
  };
}

/** A premature close, as Node's stream utilities report one (the client went away before it half-closed). */
function prematureClose(): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

// Reading states of a DuplexCall.
const READ_OPEN = 0; // requests may come
const READ_ENDED = 1; // the client half-closed (not reported yet)
const READ_FAILED = 2; // the request side failed (not reported yet)
const READ_DONE = 3; // nothing more to hand over
// Writing states.
const WRITE_OPEN = 0;
const WRITE_ENDING = 1; // end() or fail() called, responses still queued
const WRITE_DONE = 2; // the status is sent (or the call is gone)

/**
 * A bidi call: the CallContext, the requests (an iterator, or pushed to a listener) and the response sink, in
 * one object per call. It reads requests from grpc-js's 'readable' events with `read()` — not through
 * `call.iterator()`, whose async generator and end-of-stream closures cost ~2 KiB per idle stream — and its
 * grpc-js event listeners are functions shared by every call (found through {@link DuplexCall.#of}).
 */
class DuplexCall<I, O> extends ServerCallContext implements ServerDuplex<I, O> {
  /** The DuplexCall of each grpc-js call, for the shared listeners. */
  static readonly #of = new WeakMap<object, DuplexCall<unknown, unknown>>();

  readonly #options: AddServiceOptions;
  readonly #start: number;
  #listener: RequestListener<I> | undefined;
  #paused = false;
  #pulling = false;
  #read = READ_OPEN;
  #readError: unknown;
  #resolve: ((result: IteratorResult<I>) => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;
  #write = WRITE_OPEN;
  #failed = false;
  #failure: unknown;
  /** Responses waiting for 'drain' (defined only while grpc-js's buffer is full). */
  #queue: (O | Uint8Array)[] | undefined;
  /** The call is closed (cancelled or finished): responses are dropped. */
  #gone = false;

  constructor(method: DescMethod, path: string, call: ServerDuplexStream<unknown, unknown>, options: AddServiceOptions) {
    super(method, path, call, NO_REQUEST_BYTES);
    this.#options = options;
    this.#start = performance.now();
    DuplexCall.#of.set(call, this as DuplexCall<unknown, unknown>);
    call.on('readable', DuplexCall.#onReadable);
    call.on('end', DuplexCall.#onEnd);
    call.on('error', DuplexCall.#onError);
    call.on('close', DuplexCall.#onClose);
  }

  get #call(): ServerDuplexStream<unknown, unknown> {
    return this.call as ServerDuplexStream<unknown, unknown>;
  }

  // --- grpc-js events (shared listeners: `this` is the grpc-js call)

  static #onReadable(this: object): void {
    const duplex = DuplexCall.#of.get(this);
    if (duplex !== undefined) duplex.#pull();
  }

  static #onEnd(this: object): void {
    const duplex = DuplexCall.#of.get(this);
    if (duplex === undefined || duplex.#read !== READ_OPEN) return;
    duplex.#read = READ_ENDED;
    duplex.#pull();
  }

  static #onError(this: object, error: unknown): void {
    const duplex = DuplexCall.#of.get(this);
    if (duplex !== undefined) duplex.#requestsFailed(error);
  }

  static #onClose(this: object): void {
    const duplex = DuplexCall.#of.get(this);
    if (duplex === undefined) return;
    duplex.#queue = undefined; // nothing queued will be written: the listener hears of the close even if it waited for a drain
    duplex.#requestsFailed(prematureClose());
    duplex.#gone = true;
    duplex.#queue = undefined;
    if (duplex.#write === WRITE_ENDING) duplex.#finish();
  }

  static #onDrain(this: object): void {
    const duplex = DuplexCall.#of.get(this);
    if (duplex !== undefined) duplex.#drained();
  }

  // --- requests

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<I>> {
    if (this.#resolve !== undefined) return Promise.reject(new RpcError('internal', 'one next() at a time on a bidi call\'s requests'));
    return new Promise<IteratorResult<I>>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
      this.#pull();
    });
  }

  return(): Promise<IteratorResult<I>> {
    this.#read = READ_DONE;
    return Promise.resolve({ done: true, value: undefined });
  }

  listen(listener: RequestListener<I>): void {
    this.#listener = listener;
    this.#pull();
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#pull();
  }

  #requestsFailed(error: unknown): void {
    if (this.#read !== READ_OPEN) return;
    this.#read = READ_FAILED;
    this.#readError = error;
    this.#pull();
  }

  /** Hands over what there is to whoever waits: a pending next(), else the listener unless paused. */
  #pull(): void {
    if (this.#pulling) return;
    this.#pulling = true;
    try {
      // The listener is handed requests only while its responses flow: with responses queued (the client does
      // not read them), reading stops and HTTP/2 flow control pushes back on the client, so what a client that
      // writes without reading can make the server hold stays bounded by what its handler has in progress.
      while (this.#resolve !== undefined || (this.#listener !== undefined && !this.#paused && this.#queue === undefined)) {
        if (this.#read === READ_OPEN) {
          // A destroyed call (cancelled) has nothing more to give: its 'close' reports it.
          const request: unknown = this.#call.destroyed ? null : this.#call.read();
          if (request === null) return; // 'readable', 'end' or 'close' pulls again
          this.#hand(request);
        } else {
          this.#handEnd();
          return;
        }
      }
    } finally {
      this.#pulling = false;
    }
  }

  #hand(request: unknown): void {
    let decoded: object;
    try {
      decoded = checkDecoded(request);
    } catch (error) {
      // A request that does not decode ends the requests (as a throwing iterator would).
      this.#read = READ_FAILED;
      this.#readError = error;
      return;
    }
    const resolve = this.#resolve;
    if (resolve !== undefined) {
      this.#resolve = undefined;
      this.#reject = undefined;
      resolve({ done: false, value: decoded as I });
      return;
    }
    try {
      this.#listener!.message(decoded as I);
    } catch (error) {
      this.#read = READ_DONE;
      this.fail(error);
    }
  }

  /** Reports the end (or failure) of the requests once, to a pending next() or the listener. */
  #handEnd(): void {
    const failed = this.#read === READ_FAILED;
    if (this.#read === READ_DONE) {
      // Already reported: a later next() reads as done.
      const resolve = this.#resolve;
      this.#resolve = undefined;
      this.#reject = undefined;
      resolve?.({ done: true, value: undefined });
      return;
    }
    this.#read = READ_DONE;
    const error = this.#readError;
    this.#readError = undefined;
    const resolve = this.#resolve;
    const reject = this.#reject;
    this.#resolve = undefined;
    this.#reject = undefined;
    if (resolve !== undefined) {
      if (failed) reject!(error);
      else resolve({ done: true, value: undefined });
      return;
    }
    const listener = this.#listener!;
    try {
      if (failed) listener.error(error);
      else listener.end();
    } catch (thrown) {
      this.fail(thrown);
    }
  }

  // --- responses

  get closed(): boolean {
    return this.#write !== WRITE_OPEN;
  }

  push(response: O): boolean {
    if (this.#write !== WRITE_OPEN) return false;
    if (this.#queue !== undefined) this.#queue.push(response);
    else if (!this.#gone) this.#send(response);
    return true;
  }

  pushEncoded(frame: Uint8Array): boolean {
    if (!(frame instanceof Uint8Array)) throw new TypeError('pushEncoded takes the bytes of one encoded response');
    if (this.#write !== WRITE_OPEN) return false;
    if (this.#queue !== undefined) this.#queue.push(frame);
    else if (!this.#gone) this.#send(frame);
    return true;
  }

  end(): void {
    if (this.#write !== WRITE_OPEN) return;
    this.#write = WRITE_ENDING;
    if (this.#queue === undefined) this.#finish();
  }

  fail(error: unknown): void {
    if (this.#write !== WRITE_OPEN) return;
    this.#failed = true;
    this.#failure = error;
    this.#write = WRITE_ENDING;
    if (this.#queue === undefined) this.#finish();
  }

  abort(error: unknown): void {
    if (this.#write !== WRITE_DONE) {
      if (this.#write === WRITE_OPEN) {
        this.#failed = true;
        this.#failure = error;
      }
      this.#write = WRITE_ENDING;
      this.#queue = undefined;
      this.#finish();
    }
    // Also after `end()` finished at once (fewer responses waiting than grpc-js buffers): those, and the status,
    // still wait behind a client that does not read, until the stream is reset.
    if (!this.#gone) resetStream(this.#call);
  }

  /**
   * Writes one response; when grpc-js's buffer is full, later ones queue until 'drain'.
   * @returns false when the buffer is full (or the call failed)
   */
  #send(response: O | Uint8Array): boolean {
    const call = this.#call;
    let ok: boolean;
    try {
      // An encoded response goes to the serializer as it is (it passes bytes through).
      ok = call.write(response instanceof Uint8Array ? response : create(this.method.output, response as MessageInitShape<DescMessage>));
    } catch (error) {
      // A response that cannot be encoded ends the call as `internal`, as a throwing response iterable would.
      this.#failed = true;
      this.#failure = error;
      this.#write = WRITE_ENDING;
      this.#queue = undefined;
      this.#finish();
      return false;
    }
    if (!ok) {
      this.#queue = [];
      call.once('drain', DuplexCall.#onDrain);
    }
    return ok;
  }

  #drained(): void {
    const queue = this.#queue;
    this.#queue = undefined;
    if (queue !== undefined) {
      for (let i = 0; i < queue.length && !this.#gone && this.#write !== WRITE_DONE; i++) {
        if (!this.#send(queue[i]!)) {
          // Full again: the rest waits for the next 'drain'.
          (this.#queue as (O | Uint8Array)[] | undefined)?.push(...queue.slice(i + 1));
          return;
        }
      }
    }
    if (this.#write === WRITE_ENDING) this.#finish();
    else this.#pull(); // the responses flow again: so do the requests
  }

  /** The responses are over: the listener's `finished`, then the status (OK, or the failure's), then `onCallEnd`. */
  #finish(): void {
    if (this.#write === WRITE_DONE) return;
    this.#write = WRITE_DONE;
    this.#queue = undefined;
    const listener = this.#listener;
    if (listener !== undefined) {
      try {
        listener.finished();
      } catch {
        // The handler's clean-up never changes the call's outcome.
      }
    }
    this.release();
    const call = this.#call;
    if (this.#failed) {
      const error = RpcError.from(this.#failure);
      this.#failure = undefined;
      endWithError(call, error);
      report(this.#options, this.path, this.peer, this.#start, error);
    } else {
      if (!call.cancelled) call.end();
      report(this.#options, this.path, this.peer, this.#start);
    }
  }

  /** The iterable form: writes the handler's responses, then ends the call (or fails it with what they threw). */
  async writeFrom(responses: AsyncIterable<unknown>): Promise<void> {
    try {
      await writeAll(this.method, this.#call, responses);
      this.end();
    } catch (thrown) {
      this.fail(thrown);
    }
  }
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
 * @param credentials `credentials.createInsecure()` or `credentials.createSsl(...)`; over TLS, an IP
 *   address (the host, or `grpc.ssl_target_name_override`) is not sent as the server name (SNI), and the
 *   certificate is still checked against it (its IP SANs)
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
  // No TLS server name for an IP address (./tls-server-name.ts): Node warns (DEP0123) on stderr otherwise.
  const channel = new GrpcClient(address, withoutIpServerName(credentials), options.channelOptions ?? {});
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
