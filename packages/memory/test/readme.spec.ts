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
});
