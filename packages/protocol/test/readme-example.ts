import assert from 'node:assert/strict';
import { createCrypto } from '@parley/crypto-core';
import {
  formatJoinToken,
  isProtocolError,
  parseJoinToken,
  parseOperatorMetadata,
  signOperatorRequest,
  verifyOperatorRequest,
} from '../src/index.js';

const crypto = await createCrypto();
const operator = crypto.ed25519.generateKeyPair();
const registryId = crypto.randomBytes(16); // GetTrustBundle returns it
const target = { registryId, path: '/parley.v1.RegistryService/RevokeAgent', body: new Uint8Array([8, 1]) };

// Client: four metadata entries to send beside the exact request bytes (§15.3).
const metadata = signOperatorRequest(crypto, operator, target);

// Registry: parse them, find the operator by key id, verify over the bytes it received.
const auth = parseOperatorMetadata((key) => metadata[key]);
assert.ok(auth !== undefined);
assert.equal(verifyOperatorRequest(crypto, operator.publicKey, auth, target), true);
assert.equal(verifyOperatorRequest(crypto, operator.publicKey, auth, { ...target, body: new Uint8Array([8, 2]) }), false);

// Join tokens (§15.11): what one side formats the other parses; bad input is a ProtocolError with a stable code.
const token = formatJoinToken(crypto.randomBytes(16), crypto.randomBytes(32));
assert.equal(parseJoinToken(token).tokenSecret.length, 32);
assert.throws(() => formatJoinToken(new Uint8Array(3), crypto.randomBytes(32)), (e) => isProtocolError(e, 'malformed'));
