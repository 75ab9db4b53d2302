/**
 * @parley/async — small async building blocks with no dependencies, for
 * Parley's streams: {@link Channel}, a queue with producers on one side and
 * one async-iterating consumer on the other (the gateway's per-stream outbox,
 * the SDK's request stream and message queue); {@link sleep}, a wait that an
 * AbortSignal cuts short (backoff between retries); {@link IdleWatchdog}, a
 * signal that aborts when a stream goes silent too long.
 */
export { Channel } from './channel.js';
export { IdleWatchdog } from './idle-watchdog.js';
export { sleep } from './sleep.js';
