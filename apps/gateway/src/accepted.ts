/** The gateway's record of an item it accepted for a recipient (PROTOCOL §10.3, §17.6). */
import type { NewMailboxItem } from './mailbox.js';

/**
 * An item accepted for a recipient (before it is written anywhere), or read back from the mailbox: what a
 * mailbox row holds, with when it was first accepted and its encoded size. `encoded`, for an item read from the
 * mailbox, is relayed as it is (§10.8).
 */
export interface Accepted extends NewMailboxItem {
  readonly acceptedAtMs: number;
  /** Encoded item size, bytes (quotas, the held-bytes bounds). */
  readonly size: number;
}
