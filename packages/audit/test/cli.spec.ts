// The parley-audit command line in this process (`main` with captured output): help pages and usage
// errors by the @parley/cli-kit conventions. The CLI spawned as a user runs it, every command and exit
// code, is test/load/cli.spec.ts (the test-load target).
import { describe, expect, it } from 'vitest';
import { helpLayoutProblems } from '@parley/cli-kit';
import { AUDIT_EXIT_CODES, main } from '../src/cli.js';

// Usage errors are found before any log is opened or key read: these are never touched.
const logPath = '/nonexistent/audit.log';
const publicKey = 'ab'.repeat(32);

/** The CLI in this process (help and usage errors need no crypto or log). */
async function inProcess(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('') };
}

describe('parley-audit command line (@parley/cli-kit conventions)', () => {
  it('every help page is aligned; every command has one', async () => {
    for (const argv of [['--help'], ...['verify', 'head', 'prove', 'consistency', 'check', 'keygen'].map((c) => [c, '--help'])]) {
      const r = await inProcess(...argv);
      expect(r.code, argv.join(' ')).toBe(AUDIT_EXIT_CODES.ok);
      expect(r.out).toMatch(/^Usage: parley-audit /);
      expect(helpLayoutProblems(r.out), argv.join(' ')).toEqual([]);
    }
  });

  it('usage errors: one line in our words with a --help pointer, exit 2; with --json also JSON on stdout', async () => {
    const cases: [string[], string][] = [
      [['verify', logPath, '--public-key', publicKey, '--size', '3'], "unknown option '--size' (see `parley-audit verify --help`)"],
      [['verify'], 'missing <log> (see `parley-audit verify --help`)'],
      [['prove', '--log'], "option '--log <log>' needs a value (see `parley-audit prove --help`)"],
      [['consistency', '1', '2', '3', '--log', logPath], "unexpected argument '3' (see `parley-audit consistency --help`)"],
      [['keygen'], "option '--out <file>' is required (see `parley-audit keygen --help`)"],
      [['dance'], "unknown command 'dance' (see `parley-audit --help`)"],
    ];
    for (const [argv, message] of cases) {
      const r = await inProcess(...argv);
      expect(r.code, argv.join(' ')).toBe(AUDIT_EXIT_CODES.usage);
      expect(r.err).toBe(`parley-audit: error: ${message}\n`);
      expect(r.out).toBe('');
    }
    const json = await inProcess('verify', '--json');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.out)).toEqual({ ok: false, error: 'usage', message: 'missing <log>' });
  });
});
