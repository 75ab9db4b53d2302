/**
 * Bounds on what anonymous callers can make the registry hold or write (docs/PROTOCOL.md §12): the open
 * WatchRevocations streams, in all and per network address, and a log line any caller can trigger.
 */

/** Most WatchRevocations streams open at once in one registry process. */
export const DEFAULT_MAX_REVOCATION_WATCHES = 10_000;
/** Most WatchRevocations streams open at once from one network address (the peer's host). */
export const DEFAULT_MAX_REVOCATION_WATCHES_PER_ADDRESS = 100;

/** The network address of a gRPC peer (`ipv4:host:port`, `ipv6:[v6]:port`): the host, without the port. */
export function peerAddress(peer: string): string {
  const m = /^(?:ipv[46]:)?\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m?.[1] ?? peer;
}

/**
 * Counted slots for long-lived calls: at most `total` at once, and at most `perAddress` from one address.
 * The per-address map holds only addresses with an open slot, so it is bounded by `total`.
 */
export class CallSlots {
  readonly #total: number;
  readonly #perAddress: number;
  readonly #byAddress = new Map<string, number>();
  #open = 0;

  constructor(limits: { readonly total: number; readonly perAddress: number }) {
    this.#total = limits.total;
    this.#perAddress = limits.perAddress;
  }

  /** Open slots. */
  get open(): number {
    return this.#open;
  }

  /**
   * Takes a slot for `address`.
   * @returns a release function (idempotent), or why no slot was given
   */
  take(address: string): { release: () => void } | { refused: string } {
    if (this.#open >= this.#total) return { refused: `${this.#open} are open (at most ${this.#total})` };
    const mine = this.#byAddress.get(address) ?? 0;
    if (mine >= this.#perAddress) return { refused: `${mine} are open from this address (at most ${this.#perAddress})` };
    this.#open++;
    this.#byAddress.set(address, mine + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#open--;
        const left = (this.#byAddress.get(address) ?? 1) - 1;
        if (left <= 0) this.#byAddress.delete(address);
        else this.#byAddress.set(address, left);
      },
    };
  }
}

/** The log throttle now lives in @parley/rpc (the memory store and the gateway use it too). */
export { LogThrottle } from '@parley/rpc';
