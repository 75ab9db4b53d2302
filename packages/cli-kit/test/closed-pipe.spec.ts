// `parley-registry tls issue … | head -2`: a reader that goes away must not turn into "Error: write EPIPE"
// and a stack trace (runWhenExecuted exits quietly, as Unix tools do). A real process: the error is an
// event on the process's own stdout.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

describe('a closed stdout', () => {
  it('ends the program quietly with exit 0, no stack trace', async () => {
    const script = fileURLToPath(new URL('./pipe/cli.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script, 'lines'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader is gone before the program writes
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(stderr).not.toContain('still running'); // it stopped at the closed pipe
    expect(code).toBe(0);
  }, 30_000);
});
