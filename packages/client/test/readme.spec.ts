// The README's example is compiled (typecheck includes test/) and must be test/readme-example.ts verbatim,
// except that the example imports the package by name. It is run against real gateway and registry
// processes in test/e2e/readme.spec.ts (the test-load target).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');

describe('README', () => {
  it('shows test/readme-example.ts verbatim', () => {
    const block = /```ts\n([\s\S]*?)```/.exec(read('../README.md'))?.[1];
    expect(block, 'README.md has a ```ts block').toBeDefined();
    const example = read('./readme-example.ts').replace("from '../src/index.js'", "from '@parley/client'");
    expect(block).toBe(example);
  });
});
