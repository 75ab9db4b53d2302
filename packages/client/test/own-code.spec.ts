// README "Using the SDK from your own code", run as written. New-user walkthrough finding: nothing said how to use
// @parley/client from one's own program (the packages are not published — `npm install @parley/client` would ask
// the public registry), and the README's run line failed outside the checkout ("Top-level await is currently not
// supported with the "cjs" output format"). The section's shell block is run here, in a fresh directory inside the
// checkout (under the git-ignored `tmp/`), as a user would run it from `my-agent/`.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

it('the README section "Using the SDK from your own code" works as written, from a directory inside the checkout', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.split('\n## Using the SDK from your own code\n')[1]?.split('\n## ')[0];
  expect(section, 'README.md has the section').toBeDefined();
  const script = /```sh\n([\s\S]*?)```/.exec(section!)?.[1];
  expect(script, 'the section has a sh block').toBeDefined();
  const lines = script!.split('\n');
  expect(lines).toContain('mkdir my-agent && cd my-agent');
  const expected = lines.filter((l) => l.startsWith('# SDK loaded:')).map((l) => l.slice(2));
  expect(expected).toHaveLength(1);
  const parent = join(ROOT, 'tmp');
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(join(parent, 'own-code-'));
  try {
    const out = execFileSync('bash', ['-euo', 'pipefail', '-c', script!.replace('mkdir my-agent && cd my-agent', 'cd "$AGENT_DIR"')], {
      cwd: ROOT,
      env: { ...process.env, AGENT_DIR: dir, NODE_OPTIONS: '' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(out.trim()).toBe(expected[0]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    try {
      rmdirSync(parent); // only when empty
    } catch {
      // others use it
    }
  }
}, 90_000);
