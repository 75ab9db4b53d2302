// The crash-cut sweep on a 4-entry file (target test-load, not the fast loop; test/file-store.spec.ts
// runs it on 2 entries): the file cut at every byte offset reopens at its last whole entry, reports the
// torn tail, and appends on.
import { describe, it } from 'vitest';
import { cutAtEveryOffset } from '../crash-cut.js';
import { tempDir } from '../fixtures.js';

const dir = tempDir();

describe('crash recovery', () => {
  it('a file cut at every byte offset (4 entries) reopens at its last whole entry, says so, and appends on', async () => {
    await cutAtEveryOffset(dir, 4);
  });
});
