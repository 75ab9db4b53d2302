// The registry's proof-of-possession layouts (docs/PROTOCOL.md §15.4–§15.5), byte for byte.
import { layout, toHex } from '@parley/crypto-core';
import { describe, expect, it } from 'vitest';
import { registrationProofLayout, rotationAuthorisationLayout, rotationProofLayout } from '../src/index.js';

describe('registry proofs', () => {
  const registryId = new Uint8Array(16).fill(9);

  it('builds the proof-of-possession layouts as documented', () => {
    const f = { registryId, challenge: new Uint8Array(32).fill(1), agentId: 'a-1', identityPublicKey: new Uint8Array(32).fill(2) };
    expect(toHex(registrationProofLayout(f))).toBe(
      toHex(layout('parley/v1/registry-registration').fixed(registryId, 16).fixed(f.challenge, 32).str('a-1').fixed(f.identityPublicKey, 32).bytes()),
    );
    const r = { registryId, challenge: f.challenge, agentId: 'a-1', oldPublicKey: f.identityPublicKey, newPublicKey: new Uint8Array(32).fill(3) };
    const a = rotationAuthorisationLayout(r);
    const p = rotationProofLayout(r);
    expect(toHex(a)).toBe(toHex(layout('parley/v1/registry-rotate-key').fixed(registryId, 16).fixed(r.challenge, 32).str('a-1').fixed(r.oldPublicKey, 32).fixed(r.newPublicKey, 32).bytes()));
    expect(toHex(p)).not.toBe(toHex(a)); // different domain tags
  });
});
