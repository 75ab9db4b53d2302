/** The gateway's record of an item it accepted for a recipient (PROTOCOL §10.3, §17.6). */
import type { RelayItem } from '@parley/protocol';
import type { EncodedItem } from './mailbox.js';

/** An item accepted for a recipient (before it is written anywhere), or read back from the mailbox. */
export interface Accepted {
  readonly recipientId: string;
  readonly item: RelayItem;
  /** Its stored encoding, for an item read from the mailbox: relayed as it is (§10.8). */
  readonly encoded?: EncodedItem;
  readonly itemHash: Uint8Array;
  readonly senderId: string;
  readonly senderSerial: Uint8Array;
  readonly senderValidUntilMs: number;
  readonly acceptedAtMs: number;
  readonly size: number;
}
