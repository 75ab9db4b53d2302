// `npm start -- --once` as a real process: the registry and gateway start as
// children, the four handoff steps print with verified receipts, the audit
// chain verifies, and everything exits 0.
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env['DATABASE_URL']; // PGlite: no server needed
  for (const k of Object.keys(env)) if (k.startsWith('PARLEY_')) delete env[k];
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', 'tools/demo.ts', '--once'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

describe('npm start (tools/demo.ts --once)', () => {
  it('runs the handoff conversation with verified receipts, verifies the audit chain and exits 0', async () => {
    const { code, stdout, stderr } = await runDemo();
    const dataDir = /data in (\S+)/.exec(stdout)?.[1];
    try {
      expect(stderr).toBe('');
      expect(code).toBe(0);
      expect(stdout).toMatch(/registry\s+127\.0\.0\.1:\d+/);
      expect(stdout).toMatch(/gateway\s+127\.0\.0\.1:\d+/);
      const steps = [
        ['HandoffRequest', 'planner-1 → worker-1', 'worker-1'],
        ['HandoffApproval', 'worker-1 → planner-1', 'planner-1'],
        ['TaskAssignment', 'planner-1 → worker-1', 'worker-1'],
        ['StatusUpdate', 'worker-1 → planner-1', 'planner-1'],
      ] as const;
      let at = 0;
      for (const [n, [type, route, signer]] of steps.entries()) {
        const heading = new RegExp(`${n + 1}\\. ${type}\\s+${route}`).exec(stdout.slice(at));
        expect(heading, `step ${n + 1} ${type}`).not.toBeNull();
        at += heading!.index;
        const block = stdout.slice(at).split('\n\n')[0]!;
        expect(block).toMatch(/message\s+[0-9a-f]{32}…/);
        expect(block).toMatch(new RegExp(`receipt\\s+✓ verified\\s+signer ${signer}\\s+received_at \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\s+sig [0-9a-f]{16}…`));
      }
      expect(stdout).toMatch(/entries\s+\d+/);
      expect(stdout).toMatch(/root\s+[0-9a-f]{64}/);
      expect(stdout).toMatch(/✓ chain verified/);
      expect(stdout).toMatch(/Parley demo done/);
      // No child log noise on stdout.
      expect(stdout).not.toMatch(/"level":/);
    } finally {
      if (dataDir !== undefined && dataDir.includes(join('.data', 'demo'))) rmSync(resolve(ROOT, dataDir), { recursive: true, force: true });
    }
  }, 90_000);
});
