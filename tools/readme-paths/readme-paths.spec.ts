// Every repo-relative path that a README.md or docs/*.md mentions exists (links,
// and code spans that are paths), so that a reader following one lands somewhere.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { documents, exists, mentions, missingPaths, topLevelDirs } from './readme-paths.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('paths in the documentation', () => {
  it('reads every README and docs/*.md', () => {
    const docs = documents(ROOT);
    expect(docs).toEqual(expect.arrayContaining(['README.md', 'apps/gateway/README.md', 'apps/registry/README.md', 'packages/client/README.md', 'docs/PROTOCOL.md', 'docs/OPERATIONS.md']));
  });

  it('all exist', () => {
    const missing = missingPaths(ROOT).map((m) => `${m.file}:${m.line}: ${m.path}`);
    expect(missing).toEqual([]);
  });

  it('the check finds a stale path, a stale link, and accepts existing ones and non-paths', () => {
    const top = topLevelDirs(ROOT);
    const text = [
      'See `src/db.ts` and [the guide](docs/NOPE.md#x), `src/server.ts`, `apps/registry/src/cli/`,',
      '[ops](../../docs/OPERATIONS.md#monitoring), `planner/worker`, `@parley/client`, `parley.v1.Registry/Get`,',
      '`./.data/registry`, [site](https://example.org/a/b.md), `<data-dir>/registry.json`, `DATA_DIR/agents/ID.key.json`,',
      '```sh',
      'cat src/missing-in-a-fence.ts',
      '```',
    ].join('\n');
    const found = mentions('apps/gateway/README.md', text, top);
    expect(found.map((m) => m.path)).toEqual(['docs/NOPE.md', 'src/db.ts', 'src/server.ts', 'apps/registry/src/cli/', '../../docs/OPERATIONS.md']);
    expect(found.filter((m) => !exists(ROOT, m)).map((m) => m.path)).toEqual(['docs/NOPE.md', 'src/db.ts']);
  });
});
