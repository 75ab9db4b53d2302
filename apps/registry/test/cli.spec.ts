// The operator CLI in this process (`main`): --help on every command, aligned help pages, usage errors
// in our words. Real processes (exit codes, tables and --json, one-line errors, a sealed issuer key, TLS,
// `revocations --watch`) are test/load/cli.spec.ts, the test-load target.
import { describe, expect, it, vi } from 'vitest';
import { helpLayoutProblems } from '@parley/cli-kit';
import { EXIT_CODES, main } from '../src/cli.js';

const COMMANDS = [
  ['init'],
  ['serve'],
  ['check'],
  ['agent', 'register'],
  ['agent', 'enroll'],
  ['agent', 'list'],
  ['agent', 'show'],
  ['agent', 'rotate'],
  ['agent', 'revoke'],
  ['revocations'],
  ['operator', 'add'],
  ['operator', 'remove'],
  ['operator', 'list'],
  ['trust-bundle'],
  ['issuer', 'rotate'],
  ['issuer', 'list'],
  ['join-token', 'create'],
  ['join-token', 'list'],
  ['join-token', 'revoke'],
];

describe('help', () => {
  it('prints --help for every command and the command list, exit 0', async () => {
    for (const words of COMMANDS) {
      const out: string[] = [];
      expect(await main([...words, '--help'], (t) => out.push(t))).toBe(EXIT_CODES.ok);
      expect(out.join('\n')).toContain(`Usage: parley-registry ${words.join(' ')}`);
    }
    const out: string[] = [];
    expect(await main(['--help'], (t) => out.push(t))).toBe(0);
    for (const words of COMMANDS) expect(out.join('\n')).toContain(words.join(' '));
    expect(out.join('\n')).toContain('Exit codes');
    const agent: string[] = [];
    expect(await main(['agent', '--help'], (t) => agent.push(t))).toBe(0);
    expect(agent.join('\n')).toContain('agent register');
  });

  it('every help page is aligned (one description column, wrapped lines under it)', async () => {
    for (const words of [[], ['agent'], ['operator'], ['issuer'], ['join-token'], ...COMMANDS]) {
      const out: string[] = [];
      expect(await main([...words, '--help'], (t) => out.push(t))).toBe(EXIT_CODES.ok);
      expect(helpLayoutProblems(out.join('\n')), words.join(' ')).toEqual([]);
    }
  });

  it('usage errors in our words (no parseArgs wording), with a pointer to the right --help, exit 2', async () => {
    const cases: [string[], string][] = [
      [['agent', 'list', '--limit'], "option '--limit <N>' needs a value (see `parley-registry agent list --help`)"],
      // A value that looks like an option is the value: the command's own check names the option.
      [['agent', 'list', '--limit', '--all'], '--limit must be 1..500 (see `parley-registry agent list --help`)'],
      [['agent', 'list', '--colour'], "unknown option '--colour' (see `parley-registry agent list --help`)"],
      [['agent', 'list', '--al'], "unknown option '--al' (did you mean --all?) (see `parley-registry agent list --help`)"],
      [['agent', 'show'], 'missing AGENT_ID (see `parley-registry agent show --help`)'],
      [['agent', 'show', 'a', 'b'], "unexpected argument 'b' (see `parley-registry agent show --help`)"],
      [['agent', 'register', 'a'], "option '--type <TYPE>' is required (see `parley-registry agent register --help`)"],
      [['agent'], 'missing subcommand of agent (one of: register, enroll, list, show, rotate, revoke) (see `parley-registry agent --help`)'],
      [['agent', 'lsit'], "unknown subcommand 'lsit' of agent (one of: register, enroll, list, show, rotate, revoke) (see `parley-registry agent --help`)"],
      [['frobnicate'], "unknown command 'frobnicate' (see `parley-registry --help`)"],
      [['--data-dir'], "option '--data-dir <DIR>' needs a value (see `parley-registry --help`)"],
    ];
    for (const [argv, message] of cases) {
      const err: string[] = [];
      const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (err.push(String(chunk)), true));
      try {
        expect(await main(argv, () => undefined), argv.join(' ')).toBe(EXIT_CODES.usage);
      } finally {
        spy.mockRestore();
      }
      expect(err.join('')).toBe(`parley-registry: error: ${message}\n`);
    }
  });
});
