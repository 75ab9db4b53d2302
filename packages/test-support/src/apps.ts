/**
 * Where the apps' command-line programs are, found by resolving the workspace
 * packages (`@parley/registry/package.json`, `@parley/gateway/package.json`)
 * the way Node resolves any dependency — never by importing an app's code, which
 * a package may not do (eslint.config.mjs: no package imports an app).
 *
 * Two builds of each program:
 * - `source`: `src/cli.ts`, run as `node --conditions=@parley/source --import tsx src/cli.ts`
 *   (no build needed; sibling packages resolve to their TypeScript sources);
 * - `built`: the package.json `bin` entry (`dist/cli.js`), run as `node dist/cli.js`
 *   exactly as an operator's supervisor runs it (`npm run build` first).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The two programs. */
export type AppName = 'registry' | 'gateway';

/** `source`: the TypeScript sources through tsx; `built`: the compiled `bin` (dist/cli.js). */
export type AppBuild = 'source' | 'built';

/** The export condition under which workspace packages resolve to their sources (vitest.shared.ts). */
export const SOURCE_CONDITION = '@parley/source';

const require = createRequire(import.meta.url);

/** The app's package directory (apps/<app>). */
export function appDir(app: AppName): string {
  // Resolves a path, never loads the app's code. The specifier is built rather than written out: the
  // module-boundary rule reads a literal `require.resolve('@parley/gateway/…')` as an import of the app
  // (an edge test-support -> gateway, circular with the apps' tests that import this package).
  return dirname(require.resolve(`@parley/${app}/package.json`));
}

/** The program file: `src/cli.ts` (source) or the package.json `bin` entry `parley-<app>` (built). */
export function appCli(app: AppName, build: AppBuild = 'source'): string {
  const dir = appDir(app);
  if (build === 'source') return join(dir, 'src', 'cli.ts');
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { bin?: Record<string, string> };
  const bin = manifest.bin?.[`parley-${app}`];
  if (bin === undefined) throw new Error(`@parley/${app} has no bin entry parley-${app}`);
  return join(dir, bin);
}

/** The `node` arguments that run the program with `args` (`nodeOptions`, e.g. `--cpu-prof`, go to node itself). */
export function appArgv(app: AppName, args: readonly string[], build: AppBuild = 'source', nodeOptions: readonly string[] = []): string[] {
  const cli = appCli(app, build);
  return build === 'source' ? [`--conditions=${SOURCE_CONDITION}`, ...nodeOptions, '--import', 'tsx', cli, ...args] : [...nodeOptions, cli, ...args];
}
