// The README's example is compiled (typecheck) and loads: it must be
// test/readme-example.ts verbatim, except that it imports the package by name.
// The same calls run end to end against a gateway process in apps/gateway/test/load/memory-processes.spec.ts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');

describe('README', () => {
  it('shows test/readme-example.ts verbatim', () => {
    const block = /```ts\n([\s\S]*?)```/.exec(read('../README.md'))?.[1];
    expect(block, 'README.md has a ```ts block').toBeDefined();
    expect(block).toBe(read('./readme-example.ts').replace("from '../src/index.js'", "from '@parley/memory'"));
  });

  it('example loads', async () => {
    const mod = await import('./readme-example.js');
    expect(typeof mod.sharePlan).toBe('function');
  });

  // MAX_LISTED_MEMORIES was named here but not exported from the package entry.
  it('every constant it names, and every function it lists for other implementations, is exported by the package', async () => {
    const memory = (await import('../src/index.js')) as Record<string, unknown>;
    const readme = read('../README.md');
    const ticked = (text: string) => [...text.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]!);
    const constants = ticked(readme).filter((name) => /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$/.test(name));
    const forImplementations = ticked(/For other implementations and the store:[\s\S]*?\n\n/.exec(readme)?.[0] ?? '');
    expect(constants).toContain('MAX_LISTED_MEMORIES');
    expect(forImplementations).toContain('verifyMemoryRequest');
    for (const name of [...constants, ...forImplementations]) expect(memory[name], `${name} is named in README.md`).toBeDefined();
  });
});
