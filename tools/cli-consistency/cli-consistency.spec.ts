// The three Parley CLIs (parley-registry, parley-gateway, parley-audit) as
// real processes, held to one standard (@parley/cli-kit): the same usage
// mistake gets the same wording, one line on stderr with a pointer to the
// right --help, and the same exit code (2); every root help is aligned and
// lists the exit codes. Also: the error-code → exit-code table names only real
// Parley error codes.
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT_CODES, EXIT_CODE_BY_ERROR_CODE, exitCodeOf, helpLayoutProblems } from '@parley/cli-kit';
import { RPC_ERROR_CODES } from '@parley/rpc';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Cli {
  readonly program: string;
  readonly file: string;
  /** A command without arguments of its own, an option it takes a value for, a command with a required argument. */
  readonly plain: string[];
  readonly withValue: [command: string[], option: string, flags: string];
  readonly withArgument: [command: string[], argument: string];
}

const CLIS: readonly Cli[] = [
  {
    program: 'parley-registry',
    file: 'apps/registry/src/cli.ts',
    plain: ['trust-bundle'],
    withValue: [['agent', 'list'], '--limit', '--limit <N>'],
    withArgument: [['agent', 'show'], 'AGENT_ID'],
  },
  {
    program: 'parley-gateway',
    file: 'apps/gateway/src/cli.ts',
    plain: ['check-config'],
    withValue: [['check-config'], '--config', '-c, --config <FILE>'],
    withArgument: [['policy', 'check'], 'FILE'],
  },
  {
    program: 'parley-audit',
    file: 'packages/audit/src/cli.ts',
    plain: ['keygen'],
    withValue: [['head'], '--log', '--log <log>'],
    withArgument: [['verify'], '<log>'],
  },
];

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cli: Cli, args: readonly string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  for (const k of Object.keys(env)) if (k.startsWith('PARLEY_')) delete env[k];
  return new Promise((resolve) => {
    execFile(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', cli.file, ...args], { cwd: ROOT, env, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

/** The usage mistakes, and the line each CLI must print for them. */
function mistakes(cli: Cli): [args: string[], line: string][] {
  const p = cli.program;
  const [valueCommand, option, flags] = cli.withValue;
  const [argumentCommand, argument] = cli.withArgument;
  return [
    [[...cli.plain, '--bogus'], `${p}: error: unknown option '--bogus' (see \`${p} ${cli.plain.join(' ')} --help\`)`],
    [['frobnicate'], `${p}: error: unknown command 'frobnicate' (see \`${p} --help\`)`],
    [[...valueCommand, option], `${p}: error: option '${flags}' needs a value (see \`${p} ${valueCommand.join(' ')} --help\`)`],
    [argumentCommand, `${p}: error: missing ${argument} (see \`${p} ${argumentCommand.join(' ')} --help\`)`],
  ];
}

describe('the three CLIs behave as one', () => {
  it.each(CLIS.map((c) => [c.program, c] as const))('%s: usage mistakes are one line in the same words, exit 2', async (_name, cli) => {
    const cases = mistakes(cli);
    const results = await Promise.all([...cases.map(([args]) => run(cli, args)), run(cli, [])]);
    cases.forEach(([args, line], i) => {
      const r = results[i]!;
      expect(r.code, `${cli.program} ${args.join(' ')}: ${r.stderr}`).toBe(EXIT_CODES.usage);
      expect(r.stderr).toBe(`${line}\n`);
      expect(r.stderr).not.toMatch(/ambiguous|Did you forget|ERR_PARSE_ARGS|\n\s+at /);
    });
    const none = results.at(-1)!;
    expect(none.code, 'no arguments').toBe(EXIT_CODES.usage);
    expect(none.stdout).toMatch(new RegExp(`^Usage: ${cli.program} <command> \\[options\\]`));
  }, 120_000);

  it.each(CLIS.map((c) => [c.program, c] as const))('%s: --help exits 0, is aligned, and lists exit code 2 as the usage error', async (_name, cli) => {
    const [top, command] = await Promise.all([run(cli, ['--help']), run(cli, [...cli.withValue[0], '--help'])]);
    for (const r of [top, command]) {
      expect(r.code).toBe(EXIT_CODES.ok);
      expect(r.stderr).toBe('');
      expect(helpLayoutProblems(r.stdout)).toEqual([]);
      expect(r.stdout).toMatch(/^ {2}-h, --help +help for the command$/m);
    }
    expect(top.stdout).toMatch(/^Exit codes:\n {2}0 {2}(success|ok)\n(.*\n)*? {2}2 {2}usage error/m);
    expect(command.stdout).toMatch(/^Global Options:\n(?: {2}--data-dir <DIR> .*\n(?: {3,}.*\n)*)? {2}--json +machine-readable JSON output$/m);
  }, 120_000);
});

describe('error codes → exit codes', () => {
  it('names only Parley error codes, and maps every one to a documented exit code', () => {
    for (const code of EXIT_CODE_BY_ERROR_CODE.keys()) expect(RPC_ERROR_CODES, code).toContain(code);
    const documented = new Set<number>(Object.values(EXIT_CODES));
    for (const code of RPC_ERROR_CODES) expect(documented.has(exitCodeOf(code)), code).toBe(true);
  });
});
