// The chain-tampering suite on a 10,000-entry chain (target test-load, not the fast loop;
// test/chain.spec.ts runs it on 1,000 entries): every field of a random entry tampered, each
// named `modified` at its index. The seed is in the test names; AUDIT_TAMPER_SEED replays one.
import { describeTamperingAnyField } from '../chain-tampering.js';

describeTamperingAnyField(10_000);
