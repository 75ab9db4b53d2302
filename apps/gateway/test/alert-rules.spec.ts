// The example alert rules (deploy/prometheus/parley-alerts.yml) with Debian's
// promtool: the file is valid (`promtool check rules`), its unit tests pass
// (`promtool test rules`: each rule fires when it should, not before, and
// resolves), and every metric it names is one the servers export (a renamed
// metric must not leave a rule silently matching nothing). A real Prometheus
// scraping real servers evaluates the same file in test/load/observability.spec.ts.
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { appDir } from '@parley/test-support';

const ROOT = join(appDir('gateway'), '..', '..');
const RULES_DIR = join(ROOT, 'deploy', 'prometheus');
const REQUIRE = process.env['CI'] === 'true' || process.env['CI'] === '1';

function promtool(args: readonly string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('promtool', [...args], { cwd: RULES_DIR, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

const available = await promtool(['--version']).then((r) => r.code === 0);
if (!available && REQUIRE) throw new Error('promtool is required under CI=true (Debian package prometheus; .ci/run installs it)');

describe.skipIf(!available)('deploy/prometheus/parley-alerts.yml (promtool)', () => {
  it('is valid, and its unit tests pass', async () => {
    const check = await promtool(['check', 'rules', 'parley-alerts.yml']);
    expect(check.code, check.out).toBe(0);
    expect(check.out).toMatch(/SUCCESS: \d+ rules found/);
    const test = await promtool(['test', 'rules', 'parley-alerts.test.yml']);
    expect(test.code, test.out).toBe(0);
    expect(test.out).toContain('SUCCESS');
  }, 60_000);
});

describe('the metrics the rules name', () => {
  it('are all exported by the servers', () => {
    const rules = readFileSync(join(RULES_DIR, 'parley-alerts.yml'), 'utf8');
    const used = new Set([...rules.matchAll(/\b(parley_[a-z_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, '')));
    const sources = [join(appDir('gateway'), 'src', 'metrics.ts'), join(ROOT, 'apps', 'registry', 'src', 'metrics.ts'), join(ROOT, 'packages', 'ops', 'src', 'server-metrics.ts')];
    const defined = new Set(sources.flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/name: '(parley_[a-z_]+)'/g)].map((m) => m[1]!)));
    expect(used.size).toBeGreaterThan(5);
    for (const name of used) expect(defined, `${name} is used by a rule but no server defines it`).toContain(name);
    expect(readdirSync(RULES_DIR).sort()).toEqual(['parley-alerts.test.yml', 'parley-alerts.yml']);
  });
});
