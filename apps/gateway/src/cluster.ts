/**
 * Instances sharing one PostgreSQL database (docs/PROTOCOL.md §10.8 "Several instances", §17.6).
 *
 * Presence: each instance records, in the agent directory row it writes when an agent authenticates
 * (`gateway_agents.instance_id`), that the agent's stream is here, and clears it when the stream ends;
 * both statements announce the change on `parley_presence` (payload `<agent id> <instance id>`, or `<agent id>`
 * when it left). Every instance keeps what it hears in
 * memory ({@link Cluster}), bounded, and re-reads it whenever its LISTEN connection is (re)established.
 *
 * Forwarding: an item for a recipient whose stream is on another live instance is sent to that instance
 * in a notification on its own channel ({@link forwardChannel}): an audited item (envelope, handshake
 * frame) in its audit entry's own statement, so that it is sent if and only if the entry commits; any
 * other (a receipt, a reject, a resend) in a statement of notifications, group-committed. The instance
 * that hears it writes it to the recipient's stream exactly as a live item of its own — held in memory
 * until acked, spilled to the mailbox on ack timeout or stream end — or, when the stream cannot take it
 * (gone, backed up), stores it in the mailbox within the quotas. A forward that no instance hears (the
 * holder crashed, its LISTEN connection was down) is lost at the gateways like any live item in a crashed
 * instance's memory: its sender's outbox resends it (§17.2). No mailbox row, read or delete for a message
 * between two connected agents on different instances.
 */
import { BinaryReader, BinaryWriter, WireType } from '@parley/proto';
import { isAgentId } from '@parley/session';
import { ITEM_HASH_BYTES } from '@parley/protocol';
import type { Accepted } from './accepted.js';
import { decodeItem, encodeItem, type EncodedItem, type ItemKind } from './mailbox.js';


/** An instance id: `g<pid>_<time, base 36>_<random, base 36>` — only [a-z0-9_], so its channel name needs no quoting. */
const INSTANCE_ID_RE = /^[a-z0-9_]{1,48}$/;

function assertInstanceId(instanceId: string): void {
  if (!INSTANCE_ID_RE.test(instanceId)) throw new RangeError('an instance id is 1..48 characters of [a-z0-9_]');
}

/** A fresh instance id (one per process start). */
export function newInstanceId(): string {
  return `g${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 10)}`;
}

/** The channel on which an instance hears items forwarded to it. */
export function forwardChannel(instanceId: string): string {
  assertInstanceId(instanceId);
  return `parley_fwd_${instanceId}`;
}

/**
 * Largest notification payload sent, characters. PostgreSQL refuses payloads of 8 000 bytes or more; an item
 * whose forward would be larger is stored in the mailbox instead (and its recipient's instance woken).
 */
export const MAX_FORWARD_PAYLOAD = 7_900;

/** Version of the forward layout (field 1). */
const FORWARD_VERSION = 1;
const KIND_CODE: Readonly<Record<ItemKind, number>> = { handshake: 1, envelope: 2, receipt: 3, sessionReject: 4 };
const KINDS: readonly ItemKind[] = ['handshake', 'envelope', 'receipt', 'sessionReject'];

/**
 * A forwarded item (§10.8): the protobuf wire encoding of
 * `{1 version uint32, 2 recipient_id string, 3 item_kind uint32 (1 handshake, 2 envelope, 3 receipt,
 * 4 session reject), 4 item bytes (the item's protobuf encoding), 5 item_hash bytes (32), 6 sender_id
 * string, 7 sender_serial bytes (16), 8 sender_valid_until_ms uint64, 9 accepted_at_ms uint64, 10 size
 * uint32}`, in base64 (RFC 4648 §4, padded): a notification payload is text.
 * @returns the payload, or undefined when it would exceed {@link MAX_FORWARD_PAYLOAD}
 */
export function encodeForward(a: Accepted, encoded: EncodedItem = a.encoded ?? encodeItem(a.item)): string | undefined {
  // base64 grows 4/3: an item whose bytes alone would exceed the bound is not encoded at all.
  if (Math.ceil(encoded.bytes.length / 3) * 4 > MAX_FORWARD_PAYLOAD) return undefined;
  const w = new BinaryWriter();
  w.tag(1, WireType.Varint).uint32(FORWARD_VERSION);
  w.tag(2, WireType.LengthDelimited).string(a.recipientId);
  w.tag(3, WireType.Varint).uint32(KIND_CODE[encoded.kind]);
  w.tag(4, WireType.LengthDelimited).bytes(encoded.bytes);
  w.tag(5, WireType.LengthDelimited).bytes(a.itemHash);
  w.tag(6, WireType.LengthDelimited).string(a.senderId);
  w.tag(7, WireType.LengthDelimited).bytes(a.senderSerial);
  w.tag(8, WireType.Varint).uint64(BigInt(a.senderValidUntilMs));
  w.tag(9, WireType.Varint).uint64(BigInt(a.acceptedAtMs));
  w.tag(10, WireType.Varint).uint32(a.size);
  const payload = Buffer.from(w.finish()).toString('base64');
  return payload.length > MAX_FORWARD_PAYLOAD ? undefined : payload;
}

/** A forward that does not decode or check (§10.8): dropped and counted; its sender's outbox resends the item. */
export class ForwardError extends Error {
  override readonly name = 'ForwardError';
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The inverse of {@link encodeForward}, with every field checked: version, lengths, agent ids, kind, ranges.
 * The item is decoded only when read (a live write relays its bytes as they are, like a mailbox row, §10.8).
 * @throws ForwardError
 */
export function decodeForward(payload: string): Accepted {
  if (payload.length > MAX_FORWARD_PAYLOAD || payload.length % 4 !== 0 || !BASE64_RE.test(payload)) throw new ForwardError('forward payload is not base64 of the right size');
  const data = new Uint8Array(Buffer.from(payload, 'base64'));
  const f: {
    version?: number;
    recipientId?: string;
    kind?: number;
    item?: Uint8Array;
    itemHash?: Uint8Array;
    senderId?: string;
    senderSerial?: Uint8Array;
    validUntil?: bigint;
    acceptedAt?: bigint;
    size?: number;
  } = {};
  try {
    const r = new BinaryReader(data);
    while (r.pos < data.length) {
      const [field, wireType] = r.tag();
      switch (field) {
        case 1: f.version = r.uint32(); break;
        case 2: f.recipientId = r.string(); break;
        case 3: f.kind = r.uint32(); break;
        case 4: f.item = r.bytes(); break;
        case 5: f.itemHash = r.bytes(); break;
        case 6: f.senderId = r.string(); break;
        case 7: f.senderSerial = r.bytes(); break;
        case 8: f.validUntil = BigInt(r.uint64()); break;
        case 9: f.acceptedAt = BigInt(r.uint64()); break;
        case 10: f.size = r.uint32(); break;
        default: r.skip(wireType);
      }
    }
  } catch (cause) {
    throw new ForwardError('forward payload does not decode', { cause });
  }
  if (f.version !== FORWARD_VERSION) throw new ForwardError(`forward version ${String(f.version)} is not supported`);
  const kind = f.kind === undefined ? undefined : KINDS[f.kind - 1];
  if (kind === undefined || f.item === undefined || f.item.length === 0) throw new ForwardError('forward has no item of a known kind');
  if (f.recipientId === undefined || !isAgentId(f.recipientId) || f.senderId === undefined || !isAgentId(f.senderId)) throw new ForwardError('forward agent ids are not valid');
  if (f.itemHash?.length !== ITEM_HASH_BYTES || f.senderSerial?.length !== 16) throw new ForwardError('forward item hash or sender serial has the wrong length');
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  if (f.validUntil === undefined || f.validUntil > max || f.acceptedAt === undefined || f.acceptedAt > max || f.size === undefined) throw new ForwardError('forward times or size out of range');
  const encoded: EncodedItem = { kind, bytes: f.item };
  let item: Accepted['item'] | undefined;
  // A handshake frame is read where it is written (a step 1 is recorded for its step 2): decoded now, so that one
  // that does not decode is refused here. Other kinds are relayed as their bytes, as a mailbox row is (§10.8).
  if (kind === 'handshake') {
    try {
      item = decodeItem(encoded);
    } catch (cause) {
      throw new ForwardError('forwarded handshake frame does not decode', { cause });
    }
  }
  return {
    recipientId: f.recipientId,
    get item() {
      return (item ??= decodeItem(encoded));
    },
    encoded,
    itemHash: f.itemHash,
    senderId: f.senderId,
    senderSerial: f.senderSerial,
    senderValidUntilMs: Number(f.validUntil),
    acceptedAtMs: Number(f.acceptedAt),
    size: f.size,
  };
}

/** Most agents whose instance is remembered (beyond it, items for the others go through the mailbox). */
export const MAX_PRESENCE_ENTRIES = 200_000;

/**
 * What this instance knows of the others: which are alive (heartbeats) and where agents are connected
 * (presence notifications). In memory, bounded; read by routing on every item, so it never queries.
 */
export class Cluster {
  readonly instanceId: string;
  readonly #where = new Map<string, string>();
  #live: ReadonlySet<string> = new Set();
  /** Announcements heard while a full read is under way: applied after it, in order (bounded). */
  #heardDuringLoad: string[] | undefined;
  /**
   * Called for every agent announced connected on an instance (a notification, or a row of a full read): routing
   * drops what it cached about that agent (a "never seen" entry above all, §10.8), since the row the announcing
   * statement wrote is newer.
   */
  onConnected: (agentId: string) => void = () => undefined;

  constructor(instanceId: string) {
    assertInstanceId(instanceId);
    this.instanceId = instanceId;
  }

  /** The other instances alive at the last heartbeat. */
  setLive(instanceIds: Iterable<string>): void {
    this.#live = new Set(instanceIds);
  }

  /** Agents whose instance is known. */
  get size(): number {
    return this.#where.size;
  }

  /**
   * The live instance (not this one) that holds `agentId`'s stream, as last announced; undefined when it is
   * here, unknown, or on an instance not seen alive.
   */
  holder(agentId: string): string | undefined {
    const at = this.#where.get(agentId);
    return at !== undefined && at !== this.instanceId && this.#live.has(at) ? at : undefined;
  }

  /** A presence notification's payload (`<agent id> <instance id>` or `<agent id>`); malformed ones are ignored. */
  presenceNotified(payload: string): void {
    if (this.#heardDuringLoad !== undefined) {
      if (this.#heardDuringLoad.length < MAX_PRESENCE_ENTRIES) this.#heardDuringLoad.push(payload);
      return;
    }
    const space = payload.indexOf(' ');
    const agentId = space < 0 ? payload : payload.slice(0, space);
    const at = space < 0 ? undefined : payload.slice(space + 1);
    if (!isAgentId(agentId) || (at !== undefined && !INSTANCE_ID_RE.test(at))) return;
    this.#set(agentId, at);
  }

  /**
   * A full read of the directory is about to start (the LISTEN connection is being (re)established): what is heard
   * from now on is applied after it ({@link load}), since the read may or may not include it.
   */
  beginLoad(): void {
    this.#heardDuringLoad ??= [];
  }

  /** Replaces what is known with a full read of the directory, then applies what was heard since {@link beginLoad}. */
  load(rows: Iterable<{ readonly agentId: string; readonly instanceId: string }>): void {
    this.#where.clear();
    for (const r of rows) this.#set(r.agentId, r.instanceId);
    this.endLoad();
  }

  /** Ends a load (also one that failed): what was heard meanwhile is applied. */
  endLoad(): void {
    const heard = this.#heardDuringLoad;
    this.#heardDuringLoad = undefined;
    for (const p of heard ?? []) this.presenceNotified(p);
  }

  #set(agentId: string, at: string | undefined): void {
    if (at === undefined) {
      this.#where.delete(agentId);
      return;
    }
    this.onConnected(agentId);
    if (!this.#where.has(agentId) && this.#where.size >= MAX_PRESENCE_ENTRIES) return;
    this.#where.set(agentId, at);
  }
}
