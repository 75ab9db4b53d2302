// Helpers for the deployment suites that are about the build, not about running
// processes (those come from @parley/test-support with `build: 'built'`: the
// package.json `bin` entries, run as `node apps/*/dist/cli.js` with no tsx, no npm
// and no source condition in between, exactly as an operator's supervisor runs them).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { appCli } from '@parley/test-support';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Builds the two programs and what they import (`nx run-many -t build`; cached
 * when nothing changed, and the `test-load` target already depends on it).
 */
export function buildBins(): void {
  execFileSync('npx', ['nx', 'run-many', '-t', 'build', '-p', 'registry,gateway', '--output-style=static'], { cwd: ROOT, stdio: 'ignore', timeout: 600_000 });
  for (const app of ['registry', 'gateway'] as const) if (!existsSync(appCli(app, 'built'))) throw new Error(`${appCli(app, 'built')} missing after the build`);
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
