import { describe, expect, it } from 'vitest';
import { CallSlots, LogThrottle, peerAddress } from './limits.js';

describe('bounds on anonymous callers (docs/PROTOCOL.md §12)', () => {
  it('takes the host of a gRPC peer, without the port', () => {
    expect(peerAddress('ipv4:127.0.0.1:5555')).toBe('127.0.0.1');
    expect(peerAddress('ipv6:[::1]:5555')).toBe('::1');
    expect(peerAddress('unix:/tmp/x')).toBe('unix:/tmp/x');
  });

  it('gives slots up to the bound in all and per address; a release frees one (once)', () => {
    const slots = new CallSlots({ total: 3, perAddress: 2 });
    const a1 = slots.take('a');
    const a2 = slots.take('a');
    expect('release' in a1 && 'release' in a2).toBe(true);
    expect(slots.take('a')).toEqual({ refused: expect.stringMatching(/from this address/) });
    const b1 = slots.take('b');
    expect('release' in b1).toBe(true);
    expect(slots.take('c')).toEqual({ refused: expect.stringMatching(/3 are open/) });
    if (!('release' in a1)) throw new Error('unreachable');
    a1.release();
    a1.release(); // idempotent: frees one slot, not two
    expect(slots.open).toBe(2);
    expect('release' in slots.take('a')).toBe(true);
    expect(slots.take('c')).toEqual({ refused: expect.stringMatching(/3 are open/) });
  });

  it('lets one log line through per interval in all, and reports how many it held back', () => {
    const log = new LogThrottle(60_000);
    expect(log.admit(1_000)).toEqual({ suppressed: 0 });
    for (let k = 1; k <= 5; k++) expect(log.admit(1_000 + k)).toBeUndefined();
    expect(log.admit(60_999)).toBeUndefined();
    expect(log.admit(61_000)).toEqual({ suppressed: 6 });
    expect(log.admit(61_001)).toBeUndefined();
  });
});
