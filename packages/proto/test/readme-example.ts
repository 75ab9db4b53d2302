import assert from 'node:assert/strict';
import { create, toBinary, fromBinary, SecureMessageSchema } from '../src/index.js';

const msg = create(SecureMessageSchema, { version: 1, senderId: 'planner-1' });
const bytes = toBinary(SecureMessageSchema, msg);
const back = fromBinary(SecureMessageSchema, bytes);
assert.equal(back.senderId, 'planner-1');
