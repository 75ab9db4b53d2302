// deploy/container/Containerfile, built with Debian's buildah and run:
// `parley-registry init`, then `serve` inside the image, then SIGTERM to the
// server: exit 0 and the data-directory lock released inside the image.
//
// No image registry is reachable from these machines, so NODE_IMAGE is a
// stand-in built from this machine's own files (deploy/container/test-base.sh:
// static busybox, the host's node and its libraries, npm, CA certificates).
// The build stage runs `npm ci` against the npm registry, then nx build and
// npm prune: several minutes and ~2 GB of vfs storage, beyond CI's budget,
// so this suite runs only with PARLEY_TEST_CONTAINER=1 where buildah is
// installed (`apt-get install buildah`); otherwise it is skipped, and says so.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support.js';

const wanted = process.env['PARLEY_TEST_CONTAINER'] === '1';
const haveBuildah = spawnSync('buildah', ['--version']).status === 0;
const run = wanted && haveBuildah;
const tag = `localhost/parley-test-${process.pid}`;
const base = `localhost/parley-node-test-${process.pid}`;
const storage = ['--storage-driver', 'vfs'];
const containers: string[] = [];

function buildah(args: readonly string[], timeout = 1_200_000): string {
  return execFileSync('buildah', [...storage, ...args], { cwd: ROOT, encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
}

afterAll(() => {
  if (!run) return;
  for (const c of containers) spawnSync('buildah', [...storage, 'rm', c]);
  spawnSync('buildah', [...storage, 'rmi', '-f', tag, base]);
});

describe.skipIf(!run)(`deploy/container/Containerfile${run ? '' : ' (skipped: needs buildah and PARLEY_TEST_CONTAINER=1)'}`, () => {
  it('builds, and the image runs parley-registry init, serve and a clean SIGTERM as an unprivileged user', async () => {
    execFileSync('sh', ['deploy/container/test-base.sh', base, ...storage], { cwd: ROOT, stdio: 'ignore', timeout: 300_000 });
    buildah(['bud', '--isolation', 'chroot', '--layers=false', '--build-arg', `NODE_IMAGE=${base}`, '-t', tag, '-f', 'deploy/container/Containerfile', '.']);
    const config = JSON.parse(buildah(['inspect', '--type', 'image', tag])) as { OCIv1: { config: { User?: string; StopSignal?: string; Env?: string[] } } };
    expect(config.OCIv1.config.User).toBe('10001:10001');
    expect(config.OCIv1.config.StopSignal).toBe('SIGTERM');
    const container = buildah(['from', tag]).trim();
    containers.push(container);
    const inside = (args: readonly string[]): string => buildah(['run', '--isolation', 'chroot', container, '--', ...args], 120_000);
    expect(inside(['parley-registry', '--help'])).toContain('Usage: parley-registry');
    expect(inside(['parley-gateway', '--help'])).toContain('Usage: parley-gateway');
    expect(inside(['id', '-u']).trim()).toBe('10001');
    inside(['parley-registry', 'init', '--data-dir', '/var/lib/parley/registry']);

    // serve inside the image. `buildah run` does not forward SIGTERM (it kills its child), unlike
    // `podman stop`, which signals PID 1: with chroot isolation the server's PID (in its listening line)
    // is a host PID, so the test signals the server itself, as a container runtime would.
    const serve = spawn('buildah', [...storage, 'run', '--isolation', 'chroot', container, '--', 'parley-registry', 'serve', '--data-dir', '/var/lib/parley/registry', '--listen', '127.0.0.1:0'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((done) => serve.on('exit', (code) => done(code)));
    let out = '';
    const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 120_000);
      serve.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        for (const line of out.split('\n')) {
          if (!line.includes('"msg":"listening"')) continue;
          clearTimeout(timer);
          resolve(JSON.parse(line) as Record<string, unknown>);
        }
      });
    });
    expect(listening['database']).toBe('pglite');
    expect(inside(['ls', '/var/lib/parley/registry'])).toContain('registry.lock');
    expect(typeof listening['pid']).toBe('number');
    process.kill(listening['pid'] as number, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('"msg":"stopped"');
    expect(inside(['ls', '/var/lib/parley/registry'])).not.toContain('registry.lock');
  }, 1_800_000);
});
