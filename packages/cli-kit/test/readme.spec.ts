// The README's example is compiled and run: it must be test/readme-example.ts
// verbatim, except that the example imports the package by name.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from './readme-example.js';

const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');

describe('README', () => {
  it('shows test/readme-example.ts verbatim', () => {
    const block = /```ts\n([\s\S]*?)```/.exec(read('../README.md'))?.[1];
    expect(block, 'README.md has a ```ts block').toBeDefined();
    expect(block).toBe(read('./readme-example.ts').replace("from '../src/index.js'", "from '@parley/cli-kit'"));
  });

  it('example runs, and its help is the one the README shows', async () => {
    const out: string[] = [];
    expect(await main(['greet', 'planner-1', '--times', '2'], (t) => out.push(t))).toBe(0);
    expect(out).toEqual(['hello, planner-1', 'hello, planner-1']);
    const help: string[] = [];
    expect(await main(['greet', '--help'], (t) => help.push(t))).toBe(0);
    const shown = /```text\n([\s\S]*?)```/.exec(read('../README.md'))?.[1];
    expect(`${help.join('\n')}\n`).toBe(shown);
  });
});
