// Shared vitest settings: every project resolves sibling packages to their
// TypeScript sources through the "@parley/source" export condition, so tests
// never depend on a previous build.
import { availableParallelism } from 'node:os';
import { configDefaults, defineConfig } from 'vitest/config';

export const SOURCE_CONDITION = '@parley/source';

/**
 * How many test files run at once. `all-cores` (the fast loop's default): one worker per core. vitest's
 * own run-mode default, `one-core-free` (cores − 1, at least 1), keeps a core for its main process, which
 * on a 2-core machine means one worker: every file after the other while a core idles. The load suites
 * keep it (their files start processes and servers of their own).
 */
export type Workers = 'all-cores' | 'one-core-free';

export function projectConfig(overrides: { testTimeout?: number; hookTimeout?: number; include?: string[]; exclude?: string[]; workers?: Workers } = {}) {
  return defineConfig({
    resolve: { conditions: [SOURCE_CONDITION, 'module', 'node', 'default'] },
    ssr: { resolve: { conditions: [SOURCE_CONDITION, 'node', 'default'], externalConditions: [SOURCE_CONDITION] } },
    test: {
      include: overrides.include ?? ['src/**/*.spec.ts', 'test/**/*.spec.ts'],
      exclude: [...configDefaults.exclude, ...(overrides.exclude ?? [])],
      environment: 'node',
      testTimeout: overrides.testTimeout ?? 20_000,
      // Hooks start databases (PGlite is WebAssembly): on a loaded 2-core machine that can take more than 10 s.
      hookTimeout: overrides.hookTimeout ?? 60_000,
      pool: 'forks',
      ...((overrides.workers ?? 'all-cores') === 'all-cores' ? { maxWorkers: availableParallelism() } : {}),
    },
  });
}
