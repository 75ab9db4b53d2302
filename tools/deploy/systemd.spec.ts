// deploy/systemd: the unit files parse cleanly with systemd's own checker
// (`systemd-analyze verify`: no unknown key, no bad specifier, an executable
// ExecStart), keep their hardening (`systemd-analyze security --offline`:
// exposure at most 2.0 of 10), and run the built programs directly.
// Debian's systemd package provides systemd-analyze on these machines; under
// CI=true its absence is a failure, elsewhere the suite is skipped.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './support.js';

const UNITS = join(ROOT, 'deploy', 'systemd');
const available = spawnSync('systemd-analyze', ['--version']).status === 0;
if (!available && process.env['CI'] === 'true') throw new Error('systemd-analyze is required under CI=true (Debian package systemd)');

const work = mkdtempSync(join(tmpdir(), 'parley-units-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
for (const f of ['parley-registry.service', 'parley-gateway@.service']) copyFileSync(join(UNITS, f), join(work, f));

function analyze(args: readonly string[]): { status: number | null; output: string } {
  const r = spawnSync('systemd-analyze', args, { cwd: work, encoding: 'utf8', env: { ...process.env, SYSTEMD_COLORS: '0', SYSTEMD_LOG_COLOR: '0' } });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe.skipIf(!available)('deploy/systemd unit files', () => {
  it.each(['parley-registry.service', 'parley-gateway@gw1.service'])('%s: systemd-analyze verify reports nothing', (unit) => {
    const r = analyze(['verify', `./${unit}`]);
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });

  it('the checker does fail a broken unit (so the check above can fail)', () => {
    const broken = readFileSync(join(work, 'parley-registry.service'), 'utf8').replace('NoNewPrivileges=yes', 'NoNewPrivilegs=yes').replace('/usr/bin/node ', '/usr/bin/no-such-node ');
    const path = join(work, 'broken.service');
    writeFileSync(path, broken);
    const r = analyze(['verify', './broken.service']);
    expect(r.output).toContain("Unknown key 'NoNewPrivilegs'");
    expect(r.status).not.toBe(0);
  });

  it.each(['parley-registry.service', 'parley-gateway@gw1.service'])('%s: hardened (exposure ≤ 2.0)', (unit) => {
    const r = analyze(['security', '--offline=yes', '--threshold=20', `./${unit}`]);
    expect(r.status).toBe(0);
    const level = Number(/Overall exposure level for \S+: (\d+\.\d)/.exec(r.output)?.[1]);
    expect(level).toBeLessThanOrEqual(2.0);
  });

  it.each([
    ['parley-registry.service', 'apps/registry/dist/cli.js serve', /^ExecReload=/m, false],
    ['parley-gateway@.service', 'apps/gateway/dist/cli.js serve', /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m, true],
  ] as const)('%s runs the built program under node, no npm or tsx; reload only where SIGHUP is handled', (file, program, reload, hasReload) => {
    const text = readFileSync(join(UNITS, file), 'utf8');
    expect(text).toMatch(new RegExp(`^ExecStart=/usr/bin/node /opt/parley/${program.replace(/[./]/g, '\\$&')}`, 'm'));
    expect(text).not.toMatch(/^ExecStart=.*\b(npm|npx|tsx)\b/m);
    expect(reload.test(text)).toBe(hasReload);
    for (const option of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX', 'Restart=on-failure', 'CapabilityBoundingSet=']) {
      expect(text).toMatch(new RegExp(`^${option.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    }
    expect(text).toMatch(/^StateDirectory=parley-/m);
    expect(text).toMatch(/^User=parley$/m);
  });
});
