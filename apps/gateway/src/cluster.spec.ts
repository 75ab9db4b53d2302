import { BinaryWriter, SecureMessageSchema, WireType, create, toBinary } from '@parley/proto';
import { describe, expect, it } from 'vitest';
import { Cluster, ForwardError, MAX_FORWARD_PAYLOAD, MAX_PRESENCE_ENTRIES, decodeForward, encodeForward, forwardChannel, newInstanceId } from './cluster.js';
import type { Accepted } from './accepted.js';
import { encodeItem } from './mailbox.js';

function accepted(payloadBytes = 100): Accepted {
  const item = { case: 'envelope' as const, value: create(SecureMessageSchema, { version: 1, senderId: 'planner-a', recipientId: 'worker-b', encryptedPayload: new Uint8Array(payloadBytes).fill(7) }) };
  return {
    recipientId: 'worker-b',
    item,
    itemHash: new Uint8Array(32).fill(1),
    senderId: 'planner-a',
    senderSerial: new Uint8Array(16).fill(2),
    senderValidUntilMs: 1_900_000_000_000,
    acceptedAtMs: 1_800_000_000_123,
    size: payloadBytes + 60,
  };
}

/** A forward payload with the given fields (number → varint, string → string, Uint8Array → bytes). */
function payload(fields: Record<number, number | bigint | string | Uint8Array>): string {
  const w = new BinaryWriter();
  for (const [n, v] of Object.entries(fields)) {
    if (typeof v === 'string') w.tag(Number(n), WireType.LengthDelimited).string(v);
    else if (v instanceof Uint8Array) w.tag(Number(n), WireType.LengthDelimited).bytes(v);
    else w.tag(Number(n), WireType.Varint).uint64(BigInt(v));
  }
  return Buffer.from(w.finish()).toString('base64');
}

const good = (): Record<number, number | bigint | string | Uint8Array> => ({
  1: 1,
  2: 'worker-b',
  3: 2,
  4: toBinary(SecureMessageSchema, create(SecureMessageSchema, { version: 1 })),
  5: new Uint8Array(32),
  6: 'planner-a',
  7: new Uint8Array(16),
  8: 1_900_000_000_000,
  9: 1_800_000_000_000,
  10: 100,
});

describe('forwarded items (PROTOCOL §10.8)', () => {
  it('round-trips every field, and carries the item as its encoding (decoded only when read)', () => {
    const a = accepted();
    const text = encodeForward(a)!;
    expect(text).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
    const back = decodeForward(text);
    expect(back.encoded).toEqual(encodeItem(a.item));
    expect(back.item).toEqual(a.item);
    const { item: _1, encoded: _2, ...rest } = back;
    const { item: _3, ...expected } = a;
    expect(rest).toEqual(expected);
  });

  it('is the documented layout: fields 1–10 in order', () => {
    const a = accepted(3);
    const f = good();
    Object.assign(f, { 4: encodeItem(a.item).bytes, 5: a.itemHash, 7: a.senderSerial, 8: a.senderValidUntilMs, 9: a.acceptedAtMs, 10: a.size });
    expect(encodeForward(a)).toBe(payload(f));
  });

  it('refuses to encode an item whose payload would reach PostgreSQL\'s notification limit (the caller stores it)', () => {
    expect(encodeForward(accepted(5_000))!.length).toBeLessThanOrEqual(MAX_FORWARD_PAYLOAD);
    expect(encodeForward(accepted(6_000))).toBeUndefined();
  });

  it('refuses, with a ForwardError, every payload that is not a valid forward', () => {
    const bad: [string, string][] = [
      ['not base64', '@@@@'],
      ['too long', 'A'.repeat(MAX_FORWARD_PAYLOAD + 4)],
      ['not a message', Buffer.from([0xff, 0xff, 0xff]).toString('base64')],
      ['version 2', payload({ ...good(), 1: 2 })],
      ['no version', payload(Object.fromEntries(Object.entries(good()).filter(([k]) => k !== '1')))],
      ['kind 0', payload({ ...good(), 3: 0 })],
      ['kind 5', payload({ ...good(), 3: 5 })],
      ['empty item', payload({ ...good(), 4: new Uint8Array(0) })],
      ['bad recipient id', payload({ ...good(), 2: 'Worker B' })],
      ['bad sender id', payload({ ...good(), 6: '' })],
      ['short hash', payload({ ...good(), 5: new Uint8Array(31) })],
      ['long serial', payload({ ...good(), 7: new Uint8Array(17) })],
      ['time out of range', payload({ ...good(), 9: 2n ** 60n })],
      ['no size', payload(Object.fromEntries(Object.entries(good()).filter(([k]) => k !== '10')))],
    ];
    for (const [why, text] of bad) expect(() => decodeForward(text), why).toThrow(ForwardError);
    expect(decodeForward(payload({ ...good(), 99: 'a later field' })).recipientId).toBe('worker-b');
    // A handshake frame is decoded at once (it is read where it is written): one that does not decode is refused.
    expect(() => decodeForward(payload({ ...good(), 3: 1, 4: new Uint8Array([0xff, 0xff, 0xff]) }))).toThrow(ForwardError);
  });
});

describe('Cluster', () => {
  it('names a live other instance as the holder, never itself, an unknown or a silent one', () => {
    const c = new Cluster('g1_me');
    c.setLive(['g2_peer']);
    c.presenceNotified('worker-b g2_peer');
    c.presenceNotified('worker-c g3_silent');
    c.presenceNotified('worker-d g1_me');
    expect(c.holder('worker-b')).toBe('g2_peer');
    expect(c.holder('worker-c')).toBeUndefined();
    expect(c.holder('worker-d')).toBeUndefined();
    expect(c.holder('worker-e')).toBeUndefined();
    c.setLive(['g2_peer', 'g3_silent']); // heard from again: its agents are reachable again
    expect(c.holder('worker-c')).toBe('g3_silent');
    c.presenceNotified('worker-b'); // left
    expect(c.holder('worker-b')).toBeUndefined();
  });

  it('ignores malformed announcements, and a full read replaces what it knew', () => {
    const c = new Cluster('g1_me');
    c.setLive(['g2_peer']);
    for (const p of ['', ' g2_peer', 'Worker B g2_peer', 'worker-b G2 PEER', 'worker-b g2-peer']) c.presenceNotified(p);
    expect(c.size).toBe(0);
    c.presenceNotified('worker-b g2_peer');
    c.load([{ agentId: 'worker-x', instanceId: 'g2_peer' }]);
    expect(c.holder('worker-b')).toBeUndefined();
    expect(c.holder('worker-x')).toBe('g2_peer');
  });

  it('remembers at most MAX_PRESENCE_ENTRIES agents (the others go through the mailbox), but always follows a known one', () => {
    const c = new Cluster('g1_me');
    c.setLive(['g2_peer', 'g3_peer']);
    c.load(Array.from({ length: MAX_PRESENCE_ENTRIES }, (_, i) => ({ agentId: `agent-${i}`, instanceId: 'g2_peer' })));
    c.presenceNotified('agent-new g2_peer');
    expect(c.size).toBe(MAX_PRESENCE_ENTRIES);
    expect(c.holder('agent-new')).toBeUndefined();
    c.presenceNotified('agent-7 g3_peer');
    expect(c.holder('agent-7')).toBe('g3_peer');
  });

  it('what is heard while the directory is read again is applied after the read, in order', () => {
    const c = new Cluster('g1_me');
    c.setLive(['g2_peer', 'g3_peer']);
    c.beginLoad();
    c.presenceNotified('worker-b g3_peer'); // committed after the read's snapshot: the read has it on g2
    c.presenceNotified('worker-c');
    expect(c.size).toBe(0);
    c.load([
      { agentId: 'worker-b', instanceId: 'g2_peer' },
      { agentId: 'worker-c', instanceId: 'g2_peer' },
    ]);
    expect(c.holder('worker-b')).toBe('g3_peer');
    expect(c.holder('worker-c')).toBeUndefined();
    // A read that failed applies what was heard all the same.
    c.beginLoad();
    c.presenceNotified('worker-d g2_peer');
    c.endLoad();
    expect(c.holder('worker-d')).toBe('g2_peer');
  });

  it('instance ids and channels need no quoting', () => {
    const id = newInstanceId();
    expect(forwardChannel(id)).toMatch(/^parley_fwd_[a-z0-9_]+$/);
    expect(forwardChannel(id).length).toBeLessThanOrEqual(63);
    expect(() => forwardChannel('x; DROP TABLE')).toThrow(RangeError);
    expect(() => new Cluster('A')).toThrow(RangeError);
  });
});
