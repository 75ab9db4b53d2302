// Shared vitest settings: every project resolves sibling packages to their
// TypeScript sources through the "@parley/source" export condition, so tests
// never depend on a previous build.
import { configDefaults, defineConfig } from 'vitest/config';

export const SOURCE_CONDITION = '@parley/source';

export function projectConfig(overrides: { testTimeout?: number; hookTimeout?: number; include?: string[]; exclude?: string[] } = {}) {
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
    },
  });
}
