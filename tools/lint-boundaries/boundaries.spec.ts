// Proof that the layering rules in /eslint.config.mjs fire (DESIGN.md "Layers":
// imports only point down; no package imports an app; nothing above crypto-core
// touches libsodium, BLAKE3 or node:crypto).
//
// Each probe is linted through the ESLint Node API with the workspace's real
// config, as a virtual file inside a real project (`lintText` with a `filePath`
// under that project's root; the file does not have to exist, because
// @nx/enforce-module-boundaries finds the owning project from the path alone).
// The expected verdicts come from the LAYERS and EXTERNAL_PACKAGES tables below,
// written from DESIGN.md independently of the config, and every "denied"
// assertion names the rule that must report it, so switching a rule off (or the
// rule silently skipping itself for lack of a project graph) fails this suite.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCachedProjectGraph, type ProjectGraph, type ProjectGraphProjectNode } from '@nx/devkit';
import { ESLint, type Linter } from 'eslint';
import { describe, expect, it } from 'vitest';

const WORKSPACE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const NX_RULE = '@nx/enforce-module-boundaries';
const PROBE_FILE = 'src/__boundary_probe__.ts';

// ---------------------------------------------------------------------------
// Expectations, from DESIGN.md and the lint brief (not from the config).

/** type tag -> the type tags its production code may import. Apps are never importable. */
const LAYERS: Readonly<Record<string, readonly string[]>> = {
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
  'type:tooling': ['type:tooling', 'type:test', 'type:service', 'type:storage', 'type:sdk', 'type:rpc', 'type:protocol', 'type:domain', 'type:crypto', 'type:proto', 'type:lib'],
};

/** Whether production code of `source` may import `target` (an app's src never imports the agent SDK). */
const mayImport = (source: Tags, target: Tags): boolean => {
  const sourceType = source.find((t) => t.startsWith('type:')) ?? '';
  const targetType = target.find((t) => t.startsWith('type:')) ?? '';
  if (targetType === 'type:app') return false;
  if (sourceType === 'type:app' && target.includes('scope:client')) return false;
  return (LAYERS[sourceType] ?? []).includes(targetType);
};

type Tags = readonly string[];
const has = (tags: Tags, tag: string): boolean => tags.includes(tag);

/** An import specifier and which projects may use it. */
interface ExternalPackage {
  readonly packageName: string;
  readonly specifier: string;
  readonly allowed: (tags: Tags) => boolean;
}

const cryptoOnly = (t: Tags): boolean => has(t, 'type:crypto') || has(t, 'type:tooling');
const EXTERNAL_PACKAGES: readonly ExternalPackage[] = [
  { packageName: 'libsodium-wrappers-sumo', specifier: 'libsodium-wrappers-sumo', allowed: cryptoOnly },
  { packageName: 'libsodium-wrappers', specifier: 'libsodium-wrappers', allowed: cryptoOnly },
  { packageName: 'blake3', specifier: 'blake3', allowed: cryptoOnly },
  { packageName: '@noble/hashes', specifier: '@noble/hashes/blake3', allowed: cryptoOnly },
  { packageName: 'hash-wasm', specifier: 'hash-wasm', allowed: cryptoOnly },
  { packageName: '@peculiar/x509', specifier: '@peculiar/x509', allowed: cryptoOnly },
  {
    packageName: 'pg',
    specifier: 'pg',
    allowed: (t) =>
      has(t, 'type:app') ||
      has(t, 'type:service') ||
      has(t, 'type:storage') ||
      has(t, 'type:test') ||
      has(t, 'type:tooling') ||
      (has(t, 'type:domain') && has(t, 'scope:audit')),
  },
  {
    packageName: '@electric-sql/pglite',
    specifier: '@electric-sql/pglite',
    allowed: (t) =>
      has(t, 'type:app') ||
      has(t, 'type:service') ||
      has(t, 'type:storage') ||
      has(t, 'type:test') ||
      has(t, 'type:tooling') ||
      (has(t, 'type:domain') && has(t, 'scope:audit')),
  },
  {
    packageName: '@grpc/grpc-js',
    specifier: '@grpc/grpc-js',
    allowed: (t) => has(t, 'type:app') || has(t, 'type:sdk') || has(t, 'type:rpc') || has(t, 'type:test') || has(t, 'type:tooling'),
  },
];

/** Tag sets of every project Parley has or plans (DESIGN.md), for the matcher-level table. */
const PLANNED_PROJECTS: Readonly<Record<string, Tags>> = {
  proto: ['type:proto', 'scope:shared'],
  'crypto-core': ['type:crypto', 'scope:shared'],
  identity: ['type:domain', 'scope:identity'],
  session: ['type:domain', 'scope:session'],
  audit: ['type:domain', 'scope:audit'],
  protocol: ['type:protocol', 'scope:protocol'],
  client: ['type:sdk', 'scope:client'],
  rpc: ['type:rpc', 'scope:rpc'],
  'cli-kit': ['type:lib', 'scope:shared'],
  async: ['type:lib', 'scope:shared'],
  db: ['type:storage', 'scope:storage'],
  memory: ['type:sdk', 'scope:memory'],
  'memory-server': ['type:service', 'scope:memory'],
  ops: ['type:service', 'scope:ops'],
  'test-support': ['type:test', 'scope:test'],
  gateway: ['type:app', 'scope:gateway'],
  registry: ['type:app', 'scope:registry'],
  tools: ['type:tooling', 'scope:shared'],
};

// ---------------------------------------------------------------------------
// Setup: one ESLint instance on the real config, and the project graph the
// Nx rule will use. Loading the config refreshes the cached graph (see
// eslint.config.mjs), so read the graph after it.

const eslint = new ESLint({ cwd: WORKSPACE_ROOT });
const sessionConfig = (await eslint.calculateConfigForFile(
  path.join(WORKSPACE_ROOT, 'packages/session', PROBE_FILE),
)) as Linter.Config;
const graph: ProjectGraph = readCachedProjectGraph();

const projects = Object.values(graph.nodes);
const typeTagOf = (node: ProjectGraphProjectNode): string | undefined =>
  (node.data.tags ?? []).find((tag) => tag.startsWith('type:'));
const packageNameOf = (node: ProjectGraphProjectNode): string | undefined => {
  const fromGraph = (node.data.metadata as { js?: { packageName?: string } } | undefined)?.js?.packageName;
  if (fromGraph) return fromGraph;
  try {
    return (JSON.parse(readFileSync(path.join(WORKSPACE_ROOT, node.data.root, 'package.json'), 'utf8')) as { name?: string })
      .name;
  } catch {
    return undefined;
  }
};
/** Whether the graph already has a dependency path from `from` to `to` (so an import to -> from is circular). */
const reaches = (from: string, to: string): boolean => {
  const seen = new Set<string>();
  const queue = [from];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    if (next === to) return true;
    if (seen.has(next)) continue;
    seen.add(next);
    queue.push(...(graph.dependencies[next] ?? []).map((d) => d.target));
  }
  return false;
};
const nxRequire = createRequire(path.join(WORKSPACE_ROOT, 'node_modules/@nx/eslint-plugin/package.json'));
const { TargetProjectLocator } = nxRequire('@nx/js/internal') as {
  TargetProjectLocator: new (
    nodes: ProjectGraph['nodes'],
    externalNodes: ProjectGraph['externalNodes'],
  ) => { findProjectFromImport(imp: string, file: string): string | null | undefined };
};
const locator = new TargetProjectLocator(graph.nodes, graph.externalNodes);
const projectNamed = (name: string): ProjectGraphProjectNode => {
  const node = graph.nodes[name];
  if (!node) throw new Error(`project "${name}" is not in the Nx project graph`);
  return node;
};

/** Lints `code` as if it were the file `relativeFile` inside `project`. */
async function lintAs(project: string, code: string, relativeFile = PROBE_FILE): Promise<Linter.LintMessage[]> {
  const filePath = path.join(WORKSPACE_ROOT, projectNamed(project).data.root, relativeFile);
  const [result] = await eslint.lintText(code, { filePath, warnIgnored: true });
  if (!result) throw new Error('ESLint returned no result');
  return result.messages;
}

const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), 'utf8');
const fromRule = (messages: Linter.LintMessage[], ruleId: string): Linter.LintMessage[] =>
  messages.filter((m) => m.ruleId === ruleId && m.severity === 2);
/** Nx-rule errors about layering (a circular-dependency report is a different concern). */
const layeringErrors = (messages: Linter.LintMessage[]): Linter.LintMessage[] =>
  fromRule(messages, NX_RULE).filter((m) => !m.message.startsWith('Circular dependency'));
/**
 * The Nx rule checks for a cycle before it checks tags, so an upward import
 * whose reverse edge already exists (crypto-core -> session, once session uses
 * crypto-core) is reported as a circular dependency instead. Either way it is
 * an error of that rule; this says which message to expect.
 */
const expectedDenial = (source: ProjectGraphProjectNode, target: ProjectGraphProjectNode): RegExp =>
  reaches(target.name, source.name)
    ? new RegExp(`^Circular dependency between "${source.name}" and "${target.name}"`)
    : typeTagOf(target) === 'type:app'
      ? /^Imports of apps are forbidden$/
      : new RegExp(`^A project tagged with "${typeTagOf(source)}" (can only|cannot|can not) depend`);

// ---------------------------------------------------------------------------

describe('preconditions: the rule can see the workspace', () => {
  it('has the Nx rule switched on, at error level, with depConstraints', () => {
    const entry = sessionConfig.rules?.[NX_RULE] as [unknown, { depConstraints?: unknown[] }] | undefined;
    expect(entry?.[0]).toBe(2);
    expect(entry?.[1].depConstraints?.length).toBeGreaterThan(0);
  });

  it('resolves every Parley project in the graph, each with one type:* tag that LAYERS knows', () => {
    const names = projects.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(['proto', 'crypto-core', 'identity', 'session', 'tools']));
    for (const node of projects) {
      const typeTags = (node.data.tags ?? []).filter((tag) => tag.startsWith('type:'));
      expect(typeTags, `${node.name} tags`).toHaveLength(1);
      expect(Object.keys(LAYERS), `${node.name} type tag`).toContain(typeTags[0]);
    }
  });
  it('resolves every non-tooling project by its package name, so imports of it are checked', () => {
    for (const node of projects.filter((p) => typeTagOf(p) !== 'type:tooling')) {
      const packageName = packageNameOf(node);
      expect(packageName, `${node.name} package name`).toBeDefined();
      expect(locator.findProjectFromImport(packageName ?? '', 'tools/lint-boundaries/x.ts'), packageName).toBe(node.name);
    }
  });
});

describe('the brief\'s probes', () => {
  it('(a) session importing libsodium-wrappers-sumo is an @nx/enforce-module-boundaries error', async () => {
    const errors = fromRule(await lintAs('session', fixture('import-libsodium.ts')), NX_RULE);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.message).toContain('"type:domain" is not allowed to import "libsodium-wrappers-sumo"');
  });

  it('(b) crypto-core importing @parley/session is an @nx/enforce-module-boundaries error', async () => {
    const errors = fromRule(await lintAs('crypto-core', fixture('import-session.ts')), NX_RULE);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.message).toMatch(expectedDenial(projectNamed('crypto-core'), projectNamed('session')));
  });

  it('(c) a package importing a higher layer (crypto-core -> identity, proto -> session) is an error', async () => {
    const fromCrypto = fromRule(await lintAs('crypto-core', fixture('import-identity.ts')), NX_RULE);
    expect(fromCrypto.map((m) => m.message)).toEqual([
      expect.stringMatching(expectedDenial(projectNamed('crypto-core'), projectNamed('identity'))),
    ]);
    const fromProto = fromRule(await lintAs('proto', fixture('import-session.ts')), NX_RULE);
    expect(fromProto.map((m) => m.message)).toEqual([
      expect.stringMatching(expectedDenial(projectNamed('proto'), projectNamed('session'))),
    ]);
  });

  it('(c) the tag constraints themselves fire where no cycle masks them (proto <-> crypto-core)', async () => {
    const code = (pkg: string): string => `import * as target from '${pkg}';\n\nexport const probe = target;\n`;
    expect(layeringErrors(await lintAs('proto', code('@parley/crypto-core'))).map((m) => m.message)).toEqual([
      'A project tagged with "type:proto" cannot depend on any libs with tags',
    ]);
    expect(layeringErrors(await lintAs('crypto-core', code('@parley/proto'))).map((m) => m.message)).toEqual([
      'A project tagged with "type:crypto" cannot depend on any libs with tags',
    ]);
  });

  const apps = projects.filter((p) => typeTagOf(p) === 'type:app' && packageNameOf(p));
  it.runIf(apps.length > 0)('(c) every package importing every app is an error', async () => {
    const packages = projects.filter((p) => typeTagOf(p) !== 'type:app' && typeTagOf(p) !== 'type:tooling');
    for (const app of apps) {
      for (const pkg of packages) {
        const code = `import * as app from '${packageNameOf(app)}';\n\nexport const probe = app;\n`;
        const errors = fromRule(await lintAs(pkg.name, code), NX_RULE);
        expect(errors.map((m) => m.message), `${pkg.name} -> ${app.name}`).toEqual([
          expect.stringMatching(expectedDenial(pkg, app)),
        ]);
      }
    }
  });

  it('(f) an app\'s src importing the agent SDK is an error; its tests may drive it with the SDK', async () => {
    const code = "import { connect } from '@parley/client';\n\nexport const probe = connect;\n";
    for (const app of ['gateway', 'registry']) {
      expect(fromRule(await lintAs(app, code), NX_RULE).map((m) => m.message), app).toEqual([
        expect.stringMatching(/^A project tagged with "type:app" can not depend on libs tagged with "scope:client"/),
      ]);
      expect(layeringErrors(await lintAs(app, code, 'test/__boundary_probe__.spec.ts')), app).toEqual([]);
    }
  });

  it('(g) the database layer imports nothing of Parley (db -> rpc is an error)', async () => {
    const code = "import { RpcError } from '@parley/rpc';\n\nexport const probe = RpcError;\n";
    expect(fromRule(await lintAs('db', code), NX_RULE).map((m) => m.message)).toEqual([
      'A project tagged with "type:storage" cannot depend on any libs with tags',
    ]);
  });

  it('(h) the test-support package: only tests import it, and it imports no app and not the SDK', async () => {
    const code = "import { startRegistry } from '@parley/test-support';\n\nexport const probe = startRegistry;\n";
    // Production code of any layer (here the SDK, an app and a domain package) may not import it ...
    for (const project of ['client', 'gateway', 'session']) {
      expect(fromRule(await lintAs(project, code), NX_RULE).map((m) => m.message), project).toEqual([
        expect.stringMatching(expectedDenial(projectNamed(project), projectNamed('test-support'))),
      ]);
      // ... their tests may.
      expect(layeringErrors(await lintAs(project, code, 'test/__boundary_probe__.spec.ts')), project).toEqual([]);
    }
    // It locates the apps' programs by resolving their package.json, never by importing them.
    const importApp = "import * as gateway from '@parley/gateway';\n\nexport const probe = gateway;\n";
    expect(fromRule(await lintAs('test-support', importApp), NX_RULE).map((m) => m.message)).toEqual([
      expect.stringMatching(expectedDenial(projectNamed('test-support'), projectNamed('gateway'))),
    ]);
    const importSdk = "import { connect } from '@parley/client';\n\nexport const probe = connect;\n";
    expect(fromRule(await lintAs('test-support', importSdk), NX_RULE).map((m) => m.message)).toEqual([
      expect.stringMatching(expectedDenial(projectNamed('test-support'), projectNamed('client'))),
    ]);
  });

  it('(d) control: crypto-core importing libsodium-wrappers-sumo lints clean', async () => {
    expect(await lintAs('crypto-core', fixture('import-libsodium.ts'))).toEqual([]);
  });

  it('(e) session importing node:crypto is a no-restricted-imports error', async () => {
    const errors = fromRule(await lintAs('session', fixture('import-node-crypto.ts')), 'no-restricted-imports');
    expect(errors).toHaveLength(1);
    expect(errors[0]?.message).toContain("'node:crypto' import is restricted");
  });
});

describe('node:crypto and WebCrypto above crypto-core', () => {
  const code = fixture('import-node-crypto.ts');

  it.each(['identity', 'session', 'proto'])('%s: bare "crypto" specifier is an error too', async (project) => {
    const errors = fromRule(await lintAs(project, code.replace("'node:crypto'", "'crypto'")), 'no-restricted-imports');
    expect(errors.map((m) => m.message)).toEqual([expect.stringContaining("'crypto' import is restricted")]);
  });

  it('a dynamic import("node:crypto") is an error (no-restricted-syntax)', async () => {
    const errors = fromRule(await lintAs('session', fixture('dynamic-import-node-crypto.ts')), 'no-restricted-syntax');
    expect(errors).toHaveLength(1);
  });

  it('the WebCrypto global is an error (no-restricted-globals)', async () => {
    const errors = fromRule(await lintAs('identity', fixture('webcrypto-global.ts')), 'no-restricted-globals');
    expect(errors.map((m) => m.message)).toEqual([expect.stringContaining("'crypto'")]);
  });

  it.each([
    ['session', 'src/replay-window.spec.ts'],
    ['session', 'test/interop/noise.spec.ts'],
    ['identity', 'test/vectors/load.ts'],
    ['session', 'bench/seal.bench.ts'],
    ['crypto-core', PROBE_FILE],
    ['tools', 'lint-boundaries/__probe__.ts'],
  ])('%s/%s may use node:crypto (comparison peer / owner)', async (project, file) => {
    expect(await lintAs(project, code, file)).toEqual([]);
  });

  it('a spec file above crypto-core still may not import a crypto library', async () => {
    const messages = await lintAs('session', fixture('import-libsodium.ts'), 'src/seal.spec.ts');
    expect(fromRule(messages, NX_RULE).map((m) => m.message)).toEqual([
      expect.stringContaining('not allowed to import "libsodium-wrappers-sumo"'),
    ]);
  });
});

describe('project -> project layering, every pair in the current graph', () => {
  // Targets: every project that can be imported by package name (tools has no
  // "exports", so nothing can import it; the precondition above checks the rest).
  const pairs = projects.flatMap((source) =>
    projects
      .filter((target) => target !== source && typeTagOf(target) !== 'type:tooling')
      .map((target) => [source.name, target.name] as const),
  );

  it.each(pairs)('%s -> %s', async (sourceName, targetName) => {
    const source = projectNamed(sourceName);
    const target = projectNamed(targetName);
    const sourceType = typeTagOf(source) ?? '';
    const targetType = typeTagOf(target) ?? '';
    const allowed = sourceType === 'type:tooling' ? targetType !== 'type:app' : mayImport(source.data.tags ?? [], target.data.tags ?? []);
    const code = `import * as target from '${packageNameOf(target)}';\n\nexport const probe = target;\n`;
    const messages = await lintAs(sourceName, code);
    if (allowed) {
      expect(layeringErrors(messages), `${sourceType} -> ${targetType} should be allowed`).toEqual([]);
    } else {
      expect(fromRule(messages, NX_RULE).map((m) => m.message), `${sourceType} -> ${targetType} should be denied`).toEqual([
        expect.stringMatching(expectedDenial(source, target)),
      ]);
    }
  });
});

describe('external packages', () => {
  // End to end through ESLint, for the packages the Nx graph knows (installed and
  // hoisted). The Nx rule cannot see the others; they are covered below.
  const installed = EXTERNAL_PACKAGES.filter((p) => graph.externalNodes?.[`npm:${p.packageName}`]);
  const endToEnd = projects.flatMap((source) => installed.map((pkg) => [source.name, pkg.specifier, pkg] as const));

  it('at least libsodium-wrappers-sumo is installed, so the end-to-end table is not empty', () => {
    expect(installed.map((p) => p.packageName)).toContain('libsodium-wrappers-sumo');
  });

  it.each(endToEnd)('%s importing %s (end to end)', async (sourceName, specifier, pkg) => {
    const tags = projectNamed(sourceName).data.tags ?? [];
    const code = `import * as external from '${specifier}';\n\nexport const probe = external;\n`;
    const errors = fromRule(await lintAs(sourceName, code), NX_RULE);
    if (pkg.allowed(tags)) {
      expect(errors).toEqual([]);
    } else {
      expect(errors.map((m) => m.message)).toEqual([expect.stringContaining(`is not allowed to import "${specifier}"`)]);
    }
  });

  // The same verdicts through Nx's own matcher (hasBannedImport, which the rule
  // calls), fed the depConstraints ESLint actually resolved, for every planned
  // project and every package, installed or not. This is what pins down how
  // several matching constraints combine (a ban by any of them wins).
  const { hasBannedImport } = nxRequire('./dist/src/utils/runtime-lint-utils.js') as {
    hasBannedImport: (source: unknown, target: unknown, depConstraints: unknown[], imp: string) => unknown;
  };
  const depConstraints = (sessionConfig.rules?.[NX_RULE] as [unknown, { depConstraints: unknown[] }])[1].depConstraints;
  const table = Object.entries(PLANNED_PROJECTS).flatMap(([name, tags]) =>
    EXTERNAL_PACKAGES.map((pkg) => [name, pkg.specifier, tags, pkg] as const),
  );

  it.each(table)('%s importing %s (Nx matcher)', (_name, specifier, tags, pkg) => {
    const source = { type: 'lib', name: _name, data: { root: '', tags } };
    const target = { type: 'npm', name: `npm:${pkg.packageName}`, data: { packageName: pkg.packageName, version: '0.0.0' } };
    expect(Boolean(hasBannedImport(source, target, depConstraints, specifier))).toBe(!pkg.allowed(tags));
  });

  // Path-based backstop for the crypto family: fires even when the package is
  // not installed or not hoisted (where the Nx rule sees nothing).
  it.each([
    ['session', '@noble/hashes/blake3', true],
    ['identity', 'blake3', true],
    ['identity', 'hash-wasm', true],
    ['registry', '@peculiar/x509', true],
    ['proto', 'libsodium-wrappers', true],
    ['session', 'libsodium-wrappers-sumo', true],
    ['crypto-core', '@noble/hashes/blake3', false],
    ['tools', 'blake3', false],
  ] as const)('%s importing %s: no-restricted-imports backstop fires = %s', async (project, specifier, fires) => {
    const code = `import * as external from '${specifier}';\n\nexport const probe = external;\n`;
    const errors = fromRule(await lintAs(project, code), 'no-restricted-imports');
    if (fires) {
      expect(errors.map((m) => m.message)).toEqual([expect.stringContaining(`'${specifier}' import is restricted`)]);
    } else {
      expect(errors).toEqual([]);
    }
  });
});
