// The README's example is compiled and run: it must be test/readme-example.ts
// verbatim, except that the example imports the package by name.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');

describe('README', () => {
  it('shows test/readme-example.ts verbatim', () => {
    const block = /```ts\n([\s\S]*?)```/.exec(read('../README.md'))?.[1];
    expect(block, 'README.md has a ```ts block').toBeDefined();
    const example = read('./readme-example.ts').replace("from '../src/index.js'", "from '@parley/protocol'");
    expect(block).toBe(example);
  });

  it('example runs', async () => {
    await expect(import('./readme-example.js')).resolves.toBeDefined();
  });
});
