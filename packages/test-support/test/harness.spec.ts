// The harness's own behaviour, on small `node -e` children (fast): ready lines,
// a clean stop, an unclean stop reported, a child that never gets ready killed,
// one that exits first reported with its output; and where the apps' programs are.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { appArgv, appCli, appDir, childEnv, duplicateKeys, spawnNode, tempDir, waitFor, watchProcess } from '../src/index.js';

const node = (script: string) => spawnNode(['-e', script], { cwd: process.cwd() });
// Signal handlers go first, as in the real servers: a parent may signal the moment it reads the ready line.
const READY = `console.log(JSON.stringify({ ready: true, port: 1234 }));`;

describe('the apps\' programs', () => {
  it('are found through the workspace packages, source and built', () => {
    for (const app of ['registry', 'gateway'] as const) {
      expect(existsSync(appCli(app)), app).toBe(true);
      expect(appCli(app)).toBe(`${appDir(app)}/src/cli.ts`);
      expect(appCli(app, 'built')).toBe(`${appDir(app)}/dist/cli.js`);
      expect(appArgv(app, ['serve'])).toEqual(['--conditions=@parley/source', '--import', 'tsx', appCli(app), 'serve']);
      expect(appArgv(app, ['serve'], 'built')).toEqual([appCli(app, 'built'), 'serve']);
    }
  });
});

describe('a child\'s environment', () => {
  it('drops PARLEY_*, DATABASE_URL and NODE_OPTIONS; extra wins; undefined removes', () => {
    process.env['PARLEY_X_TEST'] = '1';
    process.env['HARNESS_KEEP'] = 'kept';
    try {
      const env = childEnv({ PARLEY_GATEWAY_ID: 'gw', HARNESS_KEEP: undefined, DATABASE_URL: 'postgres://x' });
      expect(env['PARLEY_X_TEST']).toBeUndefined();
      expect(env['HARNESS_KEEP']).toBeUndefined();
      expect(env['PARLEY_GATEWAY_ID']).toBe('gw');
      expect(env['DATABASE_URL']).toBe('postgres://x');
      expect(childEnv()['NODE_OPTIONS']).toBeUndefined();
      expect(childEnv()['PATH']).toBe(process.env['PATH']);
    } finally {
      delete process.env['PARLEY_X_TEST'];
      delete process.env['HARNESS_KEEP'];
    }
  });
});

describe('a long-running child', () => {
  it('is ready at the line the caller accepts, keeps its output, and stops cleanly on SIGTERM', async () => {
    const proc = await watchProcess('clean', node(`process.on('SIGTERM', () => process.exit(0)); console.error('not json'); ${READY} console.log(JSON.stringify({ later: 1 })); setInterval(() => {}, 1000);`), {
      ready: (line, stream) => stream === 'stdout' && line['ready'] === true,
    });
    expect(proc.readyLine).toEqual({ ready: true, port: 1234 });
    expect(await proc.waitFor((l) => l['later'] === 1)).toEqual({ later: 1 });
    expect(proc.stderr).toEqual(['not json']);
    expect(proc.isRunning()).toBe(true);
    expect(await proc.stop()).toBe(0);
    expect(proc.isRunning()).toBe(false);
    expect(await proc.stop()).toBe(0); // already stopped: its code as it was
  });

  it('an exit other than 0 after SIGTERM fails stop() with the last lines', async () => {
    const proc = await watchProcess('unclean', node(`process.on('SIGTERM', () => { console.error('closing badly'); process.exit(3); }); ${READY} setInterval(() => {}, 1000);`), {
      ready: (line) => line['ready'] === true,
    });
    await expect(proc.stop()).rejects.toThrow(/unclean exited 3 after SIGTERM, not cleanly; last lines:\n[^]*closing badly/);
  });

  it('one that ignores SIGTERM is SIGKILLed after the bound and stop() fails', async () => {
    const proc = await watchProcess('stubborn', node(`process.on('SIGTERM', () => console.log('ignoring')); ${READY} setInterval(() => {}, 1000);`), {
      ready: (line) => line['ready'] === true,
    });
    await expect(proc.stop(500)).rejects.toThrow(/stubborn did not exit within 500 ms of SIGTERM \(SIGKILLed\)/);
    expect((await proc.exitStatus).signal).toBe('SIGKILL');
  });

  it('one that never gets ready is killed after the bound', async () => {
    const child = node(`console.log('starting'); setInterval(() => {}, 1000);`);
    await expect(watchProcess('slow', child, { ready: () => true, timeoutMs: 500 })).rejects.toThrow(/slow not ready after 500 ms; last lines:\nstarting/);
    await waitFor(() => child.exitCode !== null || child.signalCode !== null, 10_000, 'the child killed');
    expect(child.signalCode).toBe('SIGKILL');
  });

  it('one that exits before it is ready is reported with its output', async () => {
    await expect(watchProcess('early', node(`console.error('config problem: x'); process.exit(2);`), { ready: () => true })).rejects.toThrow(
      /early exited \(2\) before it was ready; last lines:\nconfig problem: x/,
    );
  });
});

describe('helpers', () => {
  it('duplicateKeys finds a key given twice in one object, not across objects', () => {
    expect(duplicateKeys('{"a":1,"b":{"a":2},"a":3}')).toEqual(['a']);
    expect(duplicateKeys('{"a":1,"b":[{"a":2},{"a":3}]}')).toEqual([]);
  });

  it('waitFor fails naming what it waited for', async () => {
    await expect(waitFor(() => false, 50, 'the impossible')).rejects.toThrow(/timed out waiting for the impossible/);
  });

  it('tempDir makes and removes a directory', () => {
    const dir = tempDir('harness');
    expect(existsSync(dir.path)).toBe(true);
    dir.remove();
    expect(existsSync(dir.path)).toBe(false);
  });
});
