// Parley lint configuration (ESLint 9 flat config).
//
// What it enforces beyond typescript-eslint's recommended rules is the layering
// of /work/shared/DESIGN.md ("imports only point down"):
//
//   type:app      apps/gateway, apps/registry (their src/ never imports the agent SDK, scope:client;
//                 their tests may drive them with it)
//   type:service  packages/memory-server, packages/ops  (server components shared by the apps: shared
//                                         memory, readiness, /healthz /readyz /metrics)
//   type:sdk      packages/client, packages/memory  (what agents link)
//   type:rpc      packages/rpc            (gRPC plumbing only: the protobuf-es <-> grpc-js adapter, the
//                                         error -> status table, health, reflection, transport addresses)
//   type:protocol packages/protocol       (gateway and registry wire layouts and their signatures)
//   type:domain   packages/identity, packages/session, packages/audit
//   type:storage  packages/db             (pg / PGlite behind one interface: imports nothing of Parley)
//   type:crypto   packages/crypto-core    (the only place that touches libsodium / BLAKE3)
//   type:proto    packages/proto          (generated code only)
//   type:lib      packages/cli-kit, packages/async  (Parley-agnostic support: imports no workspace
//                                         project, no crypto, database or gRPC library; any layer may use it)
//   type:test     packages/test-support   (test-only: starts the apps' CLIs as child processes; only
//                                         tests may import it, and it imports no app)
//   type:tooling  tools/, packages/bench-harness, clients/python (may use anything)
//
// Two mechanisms, because they see different things:
// - @nx/enforce-module-boundaries works on the Nx project graph. It owns
//   project -> project edges (depConstraints) and project -> npm package edges
//   (bannedExternalImports). It cannot see Node built-ins (they are not graph
//   nodes), nor an npm package that is not installed, or that npm installed
//   only under a workspace's own node_modules: such an import passes silently.
// - no-restricted-imports / -globals / -syntax, scoped by file path, own
//   `node:crypto` and WebCrypto, so nothing above crypto-core does crypto itself,
//   and repeat the crypto-library ban as a backstop for that blind spot.
//
// The proof that these rules fire is tools/lint-boundaries/boundaries.spec.ts
// (`npm run lint:boundaries`). Change this file and that test together.
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';
import nx from '@nx/eslint-plugin';
import { createProjectGraphAsync } from '@nx/devkit';

// @nx/enforce-module-boundaries reads the *cached* project graph
// (.nx/workspace-data) and silently skips itself when there is none, and a
// stale cache hides projects added since. `nx run-many -t lint` refreshes the
// graph before it starts tasks (and sets NX_TASK_TARGET_PROJECT in them); a bare
// `npx eslint …` or the ESLint Node API does not, so refresh it here.
// If the graph cannot be built (a malformed project.json, say), fail here:
// a lint run that passes because the boundary rule skipped itself is the one
// outcome this file must not allow.
if (!process.env.NX_TASK_TARGET_PROJECT) {
  process.env.NX_DAEMON ??= 'false';
  try {
    await createProjectGraphAsync({ exitOnError: false });
  } catch (cause) {
    throw new Error('eslint.config.mjs: could not build the Nx project graph that @nx/enforce-module-boundaries needs', { cause });
  }
}

// ---------------------------------------------------------------------------
// External packages, grouped by who may import them. Patterns are matched by
// the Nx rule against the whole import specifier ("*" = any characters), so
// each family lists its root and its subpaths.

/** Cryptographic implementations: only type:crypto (crypto-core). */
export const CRYPTO_PACKAGES = [
  'libsodium*', // libsodium, libsodium-sumo, libsodium-wrappers, libsodium-wrappers-sumo, subpaths
  'sodium-native*',
  'blake3*', // blake3, blake3-wasm, subpaths
  '@noble/*', // @noble/hashes, @noble/curves, @noble/ciphers
  'hash-wasm*',
  'tweetnacl*',
  '@peculiar/*', // X.509 (crypto-core/tls: TLS certificates for a first setup)
];

/** PostgreSQL driver family: apps, and the audit domain package (its PostgreSQL store). */
export const PG_PACKAGES = ['pg', 'pg/*', 'pg-*'];

/** Embedded PostgreSQL: apps, and the audit domain package (its PostgreSQL store is tested on PGlite too). */
export const PGLITE_PACKAGES = ['@electric-sql/pglite*'];

/** gRPC runtime: apps and the client SDK only. */
export const GRPC_PACKAGES = ['@grpc/grpc-js*'];

// ---------------------------------------------------------------------------
// Dependency constraints.
//
// How @nx/enforce-module-boundaries (23.2.1, dist/src/rules/enforce-module-
// boundaries.js + utils/runtime-lint-utils.js) combines them:
// - Every constraint whose sourceTag (or all of whose allSourceTags) the
//   importing project has applies, and the project must satisfy all of them.
// - onlyDependOnLibsWithTags: the target needs at least one of the tags.
//   An empty list means "no tagged project" -- and Nx adds npm:public /
//   npm:private to every project, so that means no workspace project at all.
// - bannedExternalImports is a union: an npm import is an error if ANY matching
//   constraint bans it; no constraint can re-allow what another bans. So an
//   exception (pg for scope:audit) is written by not banning it in the first
//   place, i.e. the ban goes on a narrower constraint that audit does not match.
// - A project matched by no constraint may not depend on any workspace project.
// - Importing a project of type "application" is always an error
//   (noImportsOfApps), independent of tags; no constraint below lists type:app
//   as a target either.
/** type tag -> the type tags its production code may import ('*': any). */
export const LAYERS = {
  'type:proto': [],
  'type:crypto': [],
  'type:lib': [],
  'type:storage': [],
  'type:domain': ['type:domain', 'type:crypto', 'type:proto', 'type:lib'],
  'type:protocol': ['type:domain', 'type:crypto', 'type:proto', 'type:lib'],
  'type:rpc': ['type:proto', 'type:lib'],
  'type:sdk': ['type:sdk', 'type:rpc', 'type:protocol', 'type:domain', 'type:crypto', 'type:proto', 'type:lib'],
  'type:service': ['type:service', 'type:storage', 'type:sdk', 'type:rpc', 'type:protocol', 'type:domain', 'type:crypto', 'type:proto', 'type:lib'],
  'type:app': ['type:service', 'type:storage', 'type:sdk', 'type:rpc', 'type:protocol', 'type:domain', 'type:crypto', 'type:proto', 'type:lib'],
  'type:test': ['type:rpc', 'type:protocol', 'type:domain', 'type:crypto', 'type:proto', 'type:lib'],
  'type:tooling': ['*'],
};

/** type tag -> the npm packages it may not import. */
const BANNED = {
  'type:proto': [...CRYPTO_PACKAGES, ...PG_PACKAGES, ...PGLITE_PACKAGES, ...GRPC_PACKAGES],
  'type:crypto': [...PG_PACKAGES, ...PGLITE_PACKAGES, ...GRPC_PACKAGES],
  'type:lib': [...CRYPTO_PACKAGES, ...PG_PACKAGES, ...PGLITE_PACKAGES, ...GRPC_PACKAGES],
  'type:storage': [...CRYPTO_PACKAGES, ...GRPC_PACKAGES],
  // pg and PGlite are banned for domain packages other than audit by a narrower constraint below.
  'type:domain': [...CRYPTO_PACKAGES, ...GRPC_PACKAGES],
  'type:protocol': [...CRYPTO_PACKAGES, ...GRPC_PACKAGES, ...PG_PACKAGES, ...PGLITE_PACKAGES],
  'type:rpc': [...CRYPTO_PACKAGES, ...PG_PACKAGES, ...PGLITE_PACKAGES],
  'type:sdk': [...CRYPTO_PACKAGES, ...PG_PACKAGES, ...PGLITE_PACKAGES],
  'type:service': [...CRYPTO_PACKAGES, ...GRPC_PACKAGES],
  'type:app': [...CRYPTO_PACKAGES],
  'type:test': [...CRYPTO_PACKAGES],
  'type:tooling': [],
};

/**
 * The constraints for production code (`test` false) or for tests and
 * benchmarks (`test` true). Tests may also use the test-support package
 * (type:test), and an app's tests may drive it with the agent SDK as a real
 * agent would; an app's src never imports the SDK (scope:client).
 */
function depConstraints({ test }) {
  return [
    ...Object.entries(LAYERS).map(([tag, allowed]) => ({
      sourceTag: tag,
      onlyDependOnLibsWithTags: test && tag !== 'type:tooling' && tag !== 'type:test' ? [...allowed, 'type:test'] : allowed,
      ...(tag === 'type:app' && !test ? { notDependOnLibsWithTags: ['scope:client'] } : {}),
      ...(BANNED[tag].length > 0 ? { bannedExternalImports: BANNED[tag] } : {}),
    })),
    {
      // pg and PGlite for domain packages other than audit. The regex tag matches any
      // scope:* tag except scope:audit (Nx treats "/…/" tags as regular expressions).
      allSourceTags: ['type:domain', '/^scope:(?!audit$)/'],
      bannedExternalImports: [...PG_PACKAGES, ...PGLITE_PACKAGES],
    },
  ];
}

export const DEP_CONSTRAINTS = depConstraints({ test: false });
export const TEST_DEP_CONSTRAINTS = depConstraints({ test: true });

// ---------------------------------------------------------------------------
// Crypto done by hand above crypto-core: Node's crypto module and WebCrypto.

const NODE_CRYPTO_MESSAGE =
  'Only @parley/crypto-core does cryptography (DESIGN.md "Layers"); use its API. ' +
  'Tests and benchmarks may use node:crypto as a comparison peer.';

/** Files allowed to use node:crypto wherever they live: tests and benchmarks. */
export const CRYPTO_PEER_FILES = ['**/*.spec.ts', '**/*.test.ts', '**/test/**', '**/bench/**'];

/** Projects that may use node:crypto everywhere: type:crypto and type:tooling. */
export const CRYPTO_OWNER_FILES = ['packages/crypto-core/**', 'tools/**'];

/**
 * Path-based backstop for CRYPTO_PACKAGES. The Nx rule only knows npm packages
 * that its project graph resolves from the root node_modules; a package that is
 * not installed yet, or that npm installed only under a workspace's own
 * node_modules (a version that could not be hoisted), is invisible to it and
 * its ban silently does not fire. This pattern list does not depend on that.
 */
export const CRYPTO_IMPORT_PATTERNS = [
  {
    group: CRYPTO_PACKAGES,
    message: 'Only @parley/crypto-core may import a cryptography library (DESIGN.md "Layers"); use its API.',
  },
];

/** Tests and benchmarks (see TEST_DEP_CONSTRAINTS). */
export const TEST_FILES = ['**/*.spec.ts', '**/*.test.ts', '**/test/**', '**/bench/**'];

// vitest.config.ts files import the shared root helper; the root is not a project.
// bench/ files import the shared benchmark harness.
const MODULE_BOUNDARY_ALLOW = ['^(\\.\\./)+vitest\\.shared\\.js$', '^@parley/bench-harness$'];

const ALL_SOURCE_FILES = ['**/*.ts', '**/*.mts', '**/*.cts', '**/*.js', '**/*.mjs', '**/*.cjs'];

export default defineConfig(
  globalIgnores(
    [
      '**/dist/',
      '**/node_modules/',
      '**/src/gen/**',
      '**/coverage/',
      '**/.nx/',
      // Deliberately bad imports, linted only as virtual files inside real projects.
      'tools/lint-boundaries/fixtures/',
    ],
    'parley/ignores',
  ),

  tseslint.configs.recommended,

  {
    name: 'parley/typescript',
    files: ['**/*.ts', '**/*.mts', '**/*.cts'],
    rules: {
      // `_`-prefixed names are deliberately unused (fixed-arity callbacks, destructuring).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
    },
  },

  {
    name: 'parley/module-boundaries',
    files: ALL_SOURCE_FILES,
    plugins: { '@nx': nx },
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        {
          // vitest.config.ts files import the shared root helper; the root is not a project.
          // bench/ files import the shared benchmark harness from tools.
          allow: MODULE_BOUNDARY_ALLOW,
          // Not banTransitiveDependencies: the Nx locator cannot resolve packages
          // that npm installed under a workspace's own node_modules (e.g.
          // packages/proto/node_modules/@bufbuild/protobuf), so it reports
          // declared dependencies as "unresolvable".
          // Not checkNestedExternalImports: the direct-import bans plus the
          // project constraints already cover every path in this layering.
          depConstraints: DEP_CONSTRAINTS,
        },
      ],
    },
  },

  {
    // Tests and benchmarks: the same layering, plus the test-support package (and, for an app, the SDK).
    name: 'parley/module-boundaries-in-tests',
    files: TEST_FILES,
    plugins: { '@nx': nx },
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        {
          allow: MODULE_BOUNDARY_ALLOW,
          depConstraints: TEST_DEP_CONSTRAINTS,
        },
      ],
    },
  },

  {
    // Outside crypto-core and tools, in production code: no node:crypto, no
    // WebCrypto, and (backstop, see CRYPTO_IMPORT_PATTERNS) no crypto library.
    name: 'parley/no-crypto-above-crypto-core',
    files: ALL_SOURCE_FILES,
    ignores: [...CRYPTO_OWNER_FILES, ...CRYPTO_PEER_FILES],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'node:crypto', message: NODE_CRYPTO_MESSAGE },
            { name: 'crypto', message: NODE_CRYPTO_MESSAGE },
          ],
          patterns: CRYPTO_IMPORT_PATTERNS,
        },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: 'ImportExpression[source.value=/^(node:)?crypto$/]',
          message: NODE_CRYPTO_MESSAGE,
        },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'crypto', message: `WebCrypto (globalThis.crypto): ${NODE_CRYPTO_MESSAGE}` },
      ],
    },
  },

  {
    // Tests and benchmarks outside crypto-core and tools may use node:crypto
    // as a comparison peer, but still no crypto library: that goes through
    // crypto-core like everything else.
    name: 'parley/crypto-peer-in-tests',
    files: CRYPTO_PEER_FILES,
    ignores: CRYPTO_OWNER_FILES,
    rules: {
      'no-restricted-imports': ['error', { patterns: CRYPTO_IMPORT_PATTERNS }],
    },
  },
);
