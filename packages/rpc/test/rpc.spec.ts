// The adapter, status mapping, health and reflection over real gRPC on
// loopback: a grpc-js server with protobuf-es services and the typed client.
import { getEventListeners } from 'node:events';
import { Client as GrpcClient, Metadata, Server, ServerCredentials, credentials, status } from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type DescFile } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import {
  Health,
  RegistryService,
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type MessageInitShape,
  type ServerReflectionRequest,
} from '@parley/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ERROR_CODE_METADATA_KEY,
  GRPC_STATUS_BY_CODE,
  RPC_ERROR_CODES,
  RpcError,
  ServingStatus,
  addHealthService,
  addReflectionService,
  addService,
  createClient,
  isRpcError,
  methodPath,
  requestBytesOf,
  type CallRecord,
  type HealthReporter,
} from '../src/index.js';

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
  );
}

describe('error table', () => {
  it('maps every code to a gRPC status and round-trips through status metadata', () => {
    for (const code of RPC_ERROR_CODES) {
      const error = new RpcError(code, `detail for ${code}\nsecond line`);
      const s = error.toStatus();
      expect(s.code).toBe(GRPC_STATUS_BY_CODE[code]);
      expect(s.details).not.toContain('\n');
      expect(s.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual([code]);
      const back = RpcError.fromStatus(s);
      expect(back.code).toBe(code);
      expect(back.message.startsWith(`[${code}] `)).toBe(true);
    }
  });

  it('falls back to one code per status without the metadata, and hides foreign errors', () => {
    expect(RpcError.fromStatus({ code: status.NOT_FOUND, details: 'x' }).code).toBe('not_found');
    expect(RpcError.fromStatus({ code: status.UNAVAILABLE, details: '' }).code).toBe('unavailable');
    expect(RpcError.fromStatus({ code: status.DATA_LOSS, details: 'x' }).code).toBe('internal');
    // grpc-js's connection failures end in an empty "Resolution note:" that says nothing: dropped; a real note stays.
    const refused = 'No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ';
    expect(RpcError.fromStatus({ code: status.UNAVAILABLE, details: refused }).details).toBe('No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1');
    expect(RpcError.fromStatus({ code: status.UNAVAILABLE, details: 'No addresses resolved. Resolution note: DNS ENOTFOUND' }).details).toBe('No addresses resolved. Resolution note: DNS ENOTFOUND');
    // grpc-js's own "message larger than max" has no trailer: too_large, not rate_limited.
    expect(RpcError.fromStatus({ code: status.RESOURCE_EXHAUSTED, details: 'Received message larger than max' }).code).toBe('too_large');
    const limited = new RpcError('rate_limited', 'slow down').toStatus();
    expect(RpcError.fromStatus(limited).code).toBe('rate_limited');
    const hidden = RpcError.from(new Error('password=hunter2 in a database message'));
    expect(hidden.code).toBe('internal');
    expect(hidden.details).toBe('internal error');
    expect(hidden.cause).toBeInstanceOf(Error);
    const identity = Object.assign(new Error('[revoked] certificate revoked by agent'), { name: 'IdentityError', code: 'revoked' });
    expect(RpcError.from(identity).code).toBe('revoked');
    // The peer gets only the code and a fixed line (PROTOCOL §11); the detail stays local.
    expect(RpcError.from(identity).details).toBe('certificate revoked');
    expect(RpcError.from(identity).localDetails).toBe('certificate revoked by agent');
    expect(RpcError.from(identity).toStatus().details).not.toContain('agent');
    const session = Object.assign(new Error('[malformed] peer sent key 0011aabb for session 7'), { name: 'SessionError', code: 'malformed' });
    expect(RpcError.from(session).toStatus().details).toBe('malformed input');
    expect(RpcError.from(session).localDetails).toContain('0011aabb');
    expect(new RpcError('not_found', 'x').localDetails).toBe('x');
    const cryptoError = Object.assign(new Error('[invalid_length] x must be 32 bytes'), { name: 'CryptoError', code: 'invalid_length' });
    expect(RpcError.from(cryptoError).code).toBe('malformed');
    // @parley/db and @parley/protocol import nothing of gRPC: their errors keep their code and line here.
    const database = Object.assign(new Error('[unavailable] database unreachable at postgres://db/x (ECONNREFUSED)'), { name: 'DbError', code: 'unavailable' });
    expect(RpcError.from(database).code).toBe('unavailable');
    expect(RpcError.from(database).toStatus().details).toBe('database unreachable at postgres://db/x (ECONNREFUSED)');
    const protocol = Object.assign(new Error('[unauthenticated] operator signature metadata: all of … are required'), { name: 'ProtocolError', code: 'unauthenticated' });
    expect(RpcError.from(protocol).code).toBe('unauthenticated');
    expect(RpcError.from(protocol).details).toBe('operator signature metadata: all of … are required');
    const unknownCode = Object.assign(new Error('[weird] x'), { name: 'DbError', code: 'weird' });
    expect(RpcError.from(unknownCode).code).toBe('internal');
  });
});

describe('adapter, health and reflection over gRPC', () => {
  const server = new Server();
  const healthServer = new Server();
  const records: CallRecord[] = [];
  let port = 0;
  let healthPort = 0;
  let health: HealthReporter;

  beforeAll(async () => {
    // A hand-written Health implementation exercises the adapter's error paths.
    addService(
      server,
      Health,
      {
        check(request, context) {
          if (request.service === 'throw-plain') throw new Error('secret detail from a library');
          if (request.service === 'throw-identity') {
            throw Object.assign(new Error('[bad_certificate] certificate field agent_id echoes secret-input'), { name: 'IdentityError', code: 'bad_certificate' });
          }
          if (request.service === 'bytes') {
            return { status: requestBytesOf(request)?.length === context.requestBytes.length ? ServingStatus.SERVING : ServingStatus.UNKNOWN };
          }
          if (request.service === 'meta') return { status: context.metadata.get('x-test')[0] === 'yes' ? ServingStatus.SERVING : ServingStatus.UNKNOWN };
          throw new RpcError('not_found', `no service '${request.service}'`);
        },
        async *watch(request) {
          for (let i = 0; i < 3; i++) yield { status: ServingStatus.SERVING };
          if (request.service === 'fail') throw new RpcError('unavailable', 'database unreachable');
        },
      },
      { onCallEnd: (r) => records.push(r) },
    );
    port = await listen(server);
    health = addHealthService(healthServer, { '': ServingStatus.SERVING, 'parley.v1.RegistryService': ServingStatus.SERVING }, { maxWatches: 2 });
    addReflectionService(healthServer, [RegistryService, Health]);
    healthPort = await listen(healthServer);
  });

  afterAll(() => {
    server.forceShutdown();
    healthServer.forceShutdown();
  });

  it('serves unary calls and maps thrown errors to statuses with the Parley code', async () => {
    const client = createClient(Health, `127.0.0.1:${port}`, credentials.createInsecure());
    try {
      expect((await client.check({ service: 'bytes' })).status).toBe(ServingStatus.SERVING);
      expect((await client.check({ service: 'meta' }, { metadata: { 'x-test': 'yes' } })).status).toBe(ServingStatus.SERVING);
      const notFound = await client.check({ service: 'nope' }).catch((e: unknown) => e);
      expect(isRpcError(notFound, 'not_found')).toBe(true);
      expect((notFound as RpcError).grpcCode).toBe(status.NOT_FOUND);
      expect((notFound as RpcError).details).toBe("no service 'nope'");
      const internal = await client.check({ service: 'throw-plain' }).catch((e: unknown) => e);
      expect(isRpcError(internal, 'internal')).toBe(true);
      expect((internal as RpcError).message).not.toContain('secret');
      const last = records.at(-1)!;
      expect(last.code).toBe('internal');
      expect((last.error?.cause as Error).message).toContain('secret detail');
      // A library error: the peer gets its code and a fixed line; the call record (the log) keeps the detail.
      const identity = await client.check({ service: 'throw-identity' }).catch((e: unknown) => e);
      expect(isRpcError(identity, 'bad_certificate')).toBe(true);
      expect((identity as RpcError).details).toBe('certificate invalid');
      expect((identity as RpcError).message).not.toContain('secret-input');
      expect(records.at(-1)!.error?.localDetails).toContain('secret-input');
    } finally {
      client.close();
    }
  });

  it('answers an undecodable request with INVALID_ARGUMENT', async () => {
    const raw = new GrpcClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const error = await new Promise<unknown>((resolve) => {
      raw.makeUnaryRequest(
        methodPath(Health.method.check),
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from([0x0a, 0xff, 0xff]), // field 1, length 0x3fff, truncated
        new Metadata(),
        {},
        (err) => resolve(err),
      );
    });
    raw.close();
    expect((error as { code: number }).code).toBe(status.INVALID_ARGUMENT);
    expect(RpcError.fromStatus(error as never).code).toBe('malformed');
  });

  it('streams server responses as an async iterable and ends with the thrown status', async () => {
    const client = createClient(Health, `127.0.0.1:${port}`, credentials.createInsecure());
    try {
      const seen: number[] = [];
      for await (const r of client.watch({ service: 'ok' })) seen.push(r.status);
      expect(seen).toEqual([1, 1, 1]);
      const got: number[] = [];
      const error = await (async () => {
        for await (const r of client.watch({ service: 'fail' })) got.push(r.status);
      })().catch((e: unknown) => e);
      expect(got).toEqual([1, 1, 1]);
      expect(isRpcError(error, 'unavailable')).toBe(true);
    } finally {
      client.close();
    }
  });

  it('bounds the Watch calls open at once (unauthenticated, never ending): more are refused with unavailable', async () => {
    const client = createClient(Health, `127.0.0.1:${healthPort}`, credentials.createInsecure());
    const controllers = [new AbortController(), new AbortController()];
    try {
      const first = await Promise.all(
        controllers.map(async (c) => {
          const it = client.watch({ service: '' }, { signal: c.signal })[Symbol.asyncIterator]();
          return (await it.next()).value as { status: number };
        }),
      );
      expect(first.map((r) => r.status)).toEqual([ServingStatus.SERVING, ServingStatus.SERVING]);
      const third = (async () => {
        for await (const r of client.watch({ service: '' })) void r;
      })().catch((e: unknown) => e);
      expect(isRpcError(await third, 'unavailable')).toBe(true);
      controllers[0]!.abort();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const again = new AbortController();
      const it = client.watch({ service: '' }, { signal: again.signal })[Symbol.asyncIterator]();
      expect(((await it.next()).value as { status: number }).status).toBe(ServingStatus.SERVING);
      again.abort();
    } finally {
      controllers[1]!.abort();
      client.close();
    }
  });

  it('implements grpc.health.v1 Check and Watch', async () => {
    const client = createClient(Health, `127.0.0.1:${healthPort}`, credentials.createInsecure());
    try {
      expect((await client.check({ service: '' })).status).toBe(ServingStatus.SERVING);
      await expect(client.check({ service: 'unknown.Service' })).rejects.toMatchObject({ code: 'not_found' });
      const statuses: number[] = [];
      const controller = new AbortController();
      const watching = (async () => {
        for await (const r of client.watch({ service: 'parley.v1.RegistryService' }, { signal: controller.signal })) {
          statuses.push(r.status);
          if (statuses.length === 1) health.setStatus('parley.v1.RegistryService', ServingStatus.NOT_SERVING);
          if (statuses.length === 2) break;
        }
      })();
      await watching;
      expect(statuses).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
      health.setStatus('parley.v1.RegistryService', ServingStatus.SERVING);
    } finally {
      client.close();
    }
  });

  async function reflect(service: string, requests: MessageInitShape<typeof ServerReflectionRequestSchema>[]) {
    const client = createClient(ServerReflection, `127.0.0.1:${healthPort}`, credentials.createInsecure());
    const out = [];
    try {
      async function* source() {
        yield* requests;
      }
      // The v1alpha name is served with the same messages: call it through a raw path.
      const stream = service === 'v1' ? client.serverReflectionInfo(source()) : undefined;
      if (stream !== undefined) for await (const r of stream) out.push(r);
    } finally {
      client.close();
    }
    return out;
  }

  it('answers server reflection: list, file by symbol with dependencies, file by name, not found', async () => {
    const responses = await reflect('v1', [
      { messageRequest: { case: 'listServices', value: '' } },
      { messageRequest: { case: 'fileContainingSymbol', value: 'parley.v1.RegistryService' } },
      { messageRequest: { case: 'fileByFilename', value: 'grpc/health/v1/health.proto' } },
      { messageRequest: { case: 'fileContainingSymbol', value: 'parley.v1.RegistryService.RevokeAgent' } },
      { messageRequest: { case: 'fileContainingSymbol', value: 'no.such.Symbol' } },
    ]);
    expect(responses).toHaveLength(5);
    const list = responses[0]!.messageResponse;
    expect(list.case).toBe('listServicesResponse');
    expect(list.case === 'listServicesResponse' && list.value.service.map((s) => s.name)).toEqual([
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
      'parley.v1.RegistryService',
    ]);
    const files = responses[1]!.messageResponse;
    expect(files.case).toBe('fileDescriptorResponse');
    const protos = files.case === 'fileDescriptorResponse' ? files.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b)) : [];
    expect(protos.map((p) => p.name)).toEqual(['parley/v1/registry.proto', 'parley/v1/identity.proto']);
    expect(protos[0]!.service[0]!.method.map((m) => m.name)).toContain('WatchRevocations');
    const byName = responses[2]!.messageResponse;
    expect(byName.case === 'fileDescriptorResponse' && fromBinary(FileDescriptorProtoSchema, byName.value.fileDescriptorProto[0]!).package).toBe('grpc.health.v1');
    expect(responses[3]!.messageResponse.case).toBe('fileDescriptorResponse');
    const missing = responses[4]!.messageResponse;
    expect(missing.case === 'errorResponse' && missing.value.errorCode).toBe(status.NOT_FOUND);
    expect((responses[4]!.originalRequest as ServerReflectionRequest).messageRequest.case).toBe('fileContainingSymbol');
  });

  it('removes a unary call\'s abort listener when the call ends (no leak on a long-lived signal)', async () => {
    const client = createClient(Health, `127.0.0.1:${port}`, credentials.createInsecure());
    try {
      const controller = new AbortController();
      for (let i = 0; i < 5; i++) await client.check({ service: 'bytes' }, { signal: controller.signal });
      await client.check({ service: 'nope' }, { signal: controller.signal }).catch(() => undefined);
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    } finally {
      client.close();
    }
  });

  it('stops writing a bidi call\'s requests once the call has ended (no wait for a drain that never comes)', async () => {
    const client = createClient(ServerReflection, `127.0.0.1:${healthPort}`, credentials.createInsecure());
    let left = false;
    let written = 0;
    async function* endless() {
      try {
        for (;;) {
          written++;
          yield { messageRequest: { case: 'fileContainingSymbol' as const, value: `no.such.Symbol${'x'.repeat(2000)}` } };
          if (written % 8 === 0) await new Promise((r) => setImmediate(r));
        }
      } finally {
        left = true;
      }
    }
    try {
      for await (const _ of client.serverReflectionInfo(endless())) break; // leaving the loop cancels the call
      const deadline = Date.now() + 3000;
      while (!left && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(left).toBe(true);
    } finally {
      client.close();
    }
  });

  it('answers grpc.reflection.v1alpha on the same stream protocol', async () => {
    const raw = new GrpcClient(`127.0.0.1:${healthPort}`, credentials.createInsecure());
    const call = raw.makeBidiStreamRequest(
      '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
      (b: Buffer) => b,
      (b: Buffer) => b,
      new Metadata(),
      {},
    );
    call.write(Buffer.from(toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, { messageRequest: { case: 'listServices', value: '*' } }))));
    call.end();
    const chunks: Buffer[] = [];
    for await (const chunk of call) chunks.push(chunk as Buffer);
    raw.close();
    expect(chunks).toHaveLength(1);
    const response = fromBinary(ServerReflectionResponseSchema, new Uint8Array(chunks[0]!));
    expect(response.messageResponse.case).toBe('listServicesResponse');
  });

  it('exposes descriptors for every file it was given', () => {
    const files: DescFile[] = [RegistryService.file, Health.file];
    expect(files.map((f) => f.name)).toEqual(['parley/v1/registry', 'grpc/health/v1/health']);
  });
});

describe('bidi calls: the requests as an iterator or pushed to a listener, the responses as an iterable or a sink', () => {
  type Request = ServerReflectionRequest;
  type Response = MessageInitShape<typeof ServerReflectionResponseSchema>;
  const iterServer = new Server();
  const pushServer = new Server();
  const records: CallRecord[] = [];
  /** What the handlers saw, by the call's `x-id` header. */
  const seen = new Map<string, { errors: unknown[]; finished: number; aborted: boolean; ended: boolean; handled?: number }>();
  let iterPort = 0;
  let pushPort = 0;
  const echo = (r: Request): Response => ({ validHost: r.host });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  beforeAll(async () => {
    addService(
      iterServer,
      ServerReflection,
      {
        async *serverReflectionInfo(requests, context) {
          const id = context.metadata.get('x-id')[0] as string;
          const state = { errors: [] as unknown[], finished: 0, aborted: false, ended: false };
          seen.set(id, state);
          context.signal.addEventListener('abort', () => (state.aborted = true));
          try {
            for await (const r of requests) {
              yield echo(r);
              if (r.host === 'stall') await sleep(300); // the client goes away meanwhile
            }
            state.ended = true;
          } catch (error) {
            state.errors.push(error);
            throw error;
          }
        },
      },
      { onCallEnd: (r) => records.push(r) },
    );
    addService(
      pushServer,
      ServerReflection,
      {
        serverReflectionInfo(call, context) {
          const id = context.metadata.get('x-id')[0] as string;
          const mode = context.metadata.get('x-mode')[0] as string;
          const state = { errors: [] as unknown[], finished: 0, aborted: false, ended: false, handled: 0 };
          seen.set(id, state);
          call.listen({
            message(r) {
              state.handled++;
              if (mode === 'big') {
                call.push({ validHost: `${r.host}:${'z'.repeat(16_384)}` });
                return;
              }
              if (mode === 'fail' && r.host === 'fail') {
                call.fail(new RpcError('permission_denied', 'not for you'));
                return;
              }
              if (mode === 'flood') {
                // Far more than grpc-js buffers: the sink queues and writes on 'drain', in order; every other
                // response is pushed already encoded (written as it is), in the same order as the others.
                for (let i = 0; i < 300; i++) {
                  const response = { validHost: `${i}:${'y'.repeat(16_384)}` };
                  if (i % 2 === 0) call.push(response);
                  else call.pushEncoded(toBinary(ServerReflectionResponseSchema, create(ServerReflectionResponseSchema, response)));
                }
                call.end();
                return;
              }
              call.push(echo(r));
              if (mode === 'slow' || r.host === 'stall') {
                // One request at a time, the next after a pause (back-pressure towards the client).
                call.pause();
                setTimeout(() => call.resume(), mode === 'slow' ? 2 : 300);
              }
            },
            end() {
              state.ended = true;
              call.push({ validHost: 'bye' });
              call.end();
            },
            error(error) {
              state.errors.push(error);
              call.end();
            },
            finished() {
              state.finished++;
            },
          });
        },
      },
      { onCallEnd: (r) => records.push(r) },
    );
    iterPort = await listen(iterServer);
    pushPort = await listen(pushServer);
  });

  afterAll(() => {
    iterServer.forceShutdown();
    pushServer.forceShutdown();
  });

  function open(port: number, id: string, mode = '') {
    const raw = new GrpcClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const metadata = new Metadata();
    metadata.set('x-id', id);
    metadata.set('x-mode', mode);
    const call = raw.makeBidiStreamRequest(
      methodPath(ServerReflection.method.serverReflectionInfo),
      (b: Buffer) => b,
      (b: Buffer) => b,
      metadata,
      {},
    );
    const hosts: string[] = [];
    const done = new Promise<{ code: number; details: string; metadata: Metadata }>((resolve) => {
      call.on('data', (chunk: Buffer) => hosts.push(fromBinary(ServerReflectionResponseSchema, new Uint8Array(chunk)).validHost));
      call.on('error', () => undefined);
      call.on('status', resolve);
    });
    const send = (host: string): boolean => call.write(Buffer.from(toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, { host }))));
    return { raw, call, hosts, done, send };
  }

  async function until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 5_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(5);
    }
  }

  it('iterator form: requests in order, the end of the requests ends the call OK', async () => {
    const c = open(iterPort, 'iter-ok');
    for (let i = 0; i < 20; i++) c.send(`h${i}`);
    c.call.end();
    const status = await c.done;
    c.raw.close();
    expect(status.code).toBe(0);
    expect(c.hosts).toEqual(Array.from({ length: 20 }, (_, i) => `h${i}`));
    expect(seen.get('iter-ok')!.ended).toBe(true);
  });

  it('iterator form: an undecodable request throws malformed from the iterator (INVALID_ARGUMENT)', async () => {
    const c = open(iterPort, 'iter-bad');
    c.send('fine');
    c.call.write(Buffer.from([0x0a, 0xff, 0xff]));
    const status = await c.done;
    c.raw.close();
    expect(status.code).toBe(GRPC_STATUS_BY_CODE.malformed);
    expect(c.hosts).toEqual(['fine']);
    expect(isRpcError(seen.get('iter-bad')!.errors[0], 'malformed')).toBe(true);
  });

  it('iterator form: a cancelled call ends the requests (grpc-js half-closes it first)', async () => {
    const c = open(iterPort, 'iter-cancel');
    c.send('a');
    await until(() => c.hosts.length === 1, 'the echo');
    c.call.cancel();
    await until(() => seen.get('iter-cancel')!.ended, 'the requests to end');
    c.raw.close();
    expect(seen.get('iter-cancel')!.errors).toEqual([]);
  });

  it('iterator form: a client gone while requests wait unread is a premature close to the handler', async () => {
    const c = open(iterPort, 'iter-gone');
    c.send('stall');
    for (let i = 0; i < 5; i++) c.send(`unread${i}`);
    await until(() => c.hosts.length === 1, 'the echo');
    c.call.cancel();
    await until(() => seen.get('iter-gone')!.errors.length === 1, 'the handler to see the close');
    c.raw.close();
    expect((seen.get('iter-gone')!.errors[0] as { code?: string }).code).toBe('ERR_STREAM_PREMATURE_CLOSE');
    expect(seen.get('iter-gone')!.aborted).toBe(true);
    expect(c.hosts).toEqual(['stall']);
  });

  it('listener form: requests pushed in order with pause/resume, half-close → end, finished once, OK', async () => {
    const c = open(pushPort, 'push-slow', 'slow');
    for (let i = 0; i < 50; i++) c.send(`p${i}`);
    c.call.end();
    const status = await c.done;
    c.raw.close();
    expect(status.code).toBe(0);
    expect(c.hosts).toEqual([...Array.from({ length: 50 }, (_, i) => `p${i}`), 'bye']);
    const state = seen.get('push-slow')!;
    expect(state).toMatchObject({ ended: true, finished: 1, errors: [] });
    expect(records.find((r) => r.grpcCode === 0 && r.path.endsWith('ServerReflectionInfo') && r.peer !== '')).toBeDefined();
  });

  it('listener form: fail(error) after responses already pushed sends them, then the status with the Parley code', async () => {
    const c = open(pushPort, 'push-fail', 'fail');
    c.send('one');
    c.send('two');
    c.send('fail');
    c.send('never answered');
    const status = await c.done;
    c.raw.close();
    expect(c.hosts).toEqual(['one', 'two']);
    expect(status.code).toBe(GRPC_STATUS_BY_CODE.permission_denied);
    expect(status.metadata.get(ERROR_CODE_METADATA_KEY)[0]).toBe('permission_denied');
    await until(() => seen.get('push-fail')!.finished === 1, 'finished');
  });

  it('listener form: responses beyond what grpc-js buffers (half of them pushed encoded) are queued and written in order on drain', async () => {
    const c = open(pushPort, 'push-flood', 'flood');
    c.send('go');
    const status = await c.done;
    c.raw.close();
    expect(status.code).toBe(0);
    expect(c.hosts).toHaveLength(300);
    expect(c.hosts.map((h) => Number(h.split(':')[0]))).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(seen.get('push-flood')!.finished).toBe(1);
  });

  it('listener form: a client that writes without reading its responses stops being read (bounded), and is read again once it reads', async () => {
    const c = open(pushPort, 'push-unread', 'big');
    c.call.pause(); // reads nothing: its HTTP/2 window and grpc-js's buffer fill with 16 KiB answers
    const N = 2_000;
    for (let i = 0; i < N; i++) c.send(`r${i}`);
    await until(() => (seen.get('push-unread')?.handled ?? 0) > 0, 'the first requests handled');
    await sleep(500);
    const handled = seen.get('push-unread')!.handled!;
    // Without the bound the handler is handed all 2 000 and the server queues 2 000 × 16 KiB for this client.
    expect(handled).toBeLessThan(N / 4);
    await sleep(300);
    expect(seen.get('push-unread')!.handled).toBe(handled); // and it stays there
    c.call.resume();
    await until(() => c.hosts.length === N, 'every answer once the client reads');
    expect(c.hosts.map((h) => h.split(':')[0])).toEqual(Array.from({ length: N }, (_, i) => `r${i}`));
    c.call.end();
    const status = await c.done;
    c.raw.close();
    expect(status.code).toBe(0);
  });

  it('listener form: a client gone while requests wait unread (paused) is a premature close to the listener once it resumes', async () => {
    const before = records.length;
    const c = open(pushPort, 'push-gone');
    c.send('stall');
    for (let i = 0; i < 5; i++) c.send(`unread${i}`);
    await until(() => c.hosts.length === 1, 'the echo');
    c.call.cancel();
    await until(() => seen.get('push-gone')!.finished === 1, 'finished');
    c.raw.close();
    const state = seen.get('push-gone')!;
    expect(state.errors).toHaveLength(1);
    expect((state.errors[0] as { code?: string }).code).toBe('ERR_STREAM_PREMATURE_CLOSE');
    expect(state.ended).toBe(false);
    await until(() => records.length > before, 'the call record');
  });

  it('listener form: a cancelled call ends the requests (grpc-js half-closes it first); the call finishes once', async () => {
    const c = open(pushPort, 'push-cancel');
    c.send('a');
    await until(() => c.hosts.length === 1, 'the echo');
    c.call.cancel();
    await until(() => seen.get('push-cancel')!.finished === 1, 'finished');
    c.raw.close();
    expect(seen.get('push-cancel')).toMatchObject({ ended: true, errors: [] });
  });

  it('listener form: an undecodable request is a malformed error to the listener', async () => {
    const c = open(pushPort, 'push-bad');
    c.send('fine');
    c.call.write(Buffer.from([0x0a, 0xff, 0xff]));
    await until(() => seen.get('push-bad')?.errors.length === 1, 'the error');
    c.call.end();
    await c.done;
    c.raw.close();
    expect(c.hosts[0]).toBe('fine');
    expect(isRpcError(seen.get('push-bad')!.errors[0], 'malformed')).toBe(true);
  });
});
