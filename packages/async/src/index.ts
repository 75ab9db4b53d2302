/**
 * @parley/async — small async building blocks with no dependencies, for
 * Parley's streams: {@link Channel}, a queue with producers on one side and
 * one async-iterating consumer on the other (the gateway's per-stream outbox,
 * the SDK's request stream and message queue).
 */
export { Channel } from './channel.js';
