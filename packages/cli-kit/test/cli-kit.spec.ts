// The shared CLI conventions, exercised through a small real program: parse
// errors in our words with exit 2 and a --help hint, help pages aligned, the
// runner's exit codes, and the error-code table.
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  EXIT_CODES,
  EXIT_CODE_BY_ERROR_CODE,
  Option,
  ProblemList,
  UsageError,
  commandGroup,
  createProgram,
  exitCodeOf,
  helpLayoutProblems,
  internalFailure,
  isUsageError,
  jsonOption,
  printJson,
  runProgram,
  suggestKey,
  type Failure,
} from '../src/index.js';

interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
  readonly ran: string[];
  readonly failures: Failure[];
}

/** A program shaped like parley-registry: global options, a plain command, a group, extra help sections. */
async function run(argv: readonly string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const ran: string[] = [];
  const failures: Failure[] = [];
  const program = createProgram({ name: 'parley-test', description: 'Parley CLI conventions under test', out: (t) => out.push(t), err: (t) => err.push(t) });
  program.option('--data-dir <DIR>', 'data directory (default ./.data/test)').addOption(jsonOption());
  program
    .command('init')
    .summary('create everything')
    .description('Creates everything. '.repeat(12))
    .option('--kdf <STRENGTH>', 'passphrase hashing cost: moderate (default, 256 MiB) or interactive (64 MiB)')
    .addOption(new Option('--database-url <URL>', 'PostgreSQL URL (env DATABASE_URL); without one, PGlite in DATA_DIR/pgdata').helpGroup('Database Options:'))
    .addHelpSection({ heading: 'Settings:', items: [['a_rather_long_setting_name', 'lines up with the options above']] })
    .action(async (_options, command) => {
      ran.push(`init ${JSON.stringify(command.optsWithGlobals())}`);
    });
  const agent = commandGroup(program, 'agent', 'manage agents');
  agent
    .command('register')
    .summary('register an agent')
    .argument('<AGENT_ID>')
    .requiredOption('--type <TYPE>', 'agent type')
    .action(async (id: string) => {
      if (id === 'bad!') throw new UsageError('AGENT_ID must be [a-z0-9-]');
      if (id === 'boom') throw new Error('first line\nsecond line');
      if (id === 'gone') throw Object.assign(new Error('no such agent'), { code: 'not_found' });
      ran.push(`register ${id}`);
    });
  agent
    .command('list')
    .summary('list agents')
    .option('--limit <N>', 'page size, 1..500')
    .option('--all', 'every page')
    .action(async (options: Record<string, unknown>) => {
      ran.push(`list ${JSON.stringify(options)}`);
    });
  program.addHelpSection({ heading: 'Exit codes:', align: 'section', items: [['0', 'success'], ['2', 'usage error']] });
  const code = await runProgram(program, argv, {
    classify: (error) => {
      const errorCode = (error as { code?: unknown }).code;
      return typeof errorCode === 'string' ? { exitCode: exitCodeOf(errorCode), code: errorCode, message: (error as Error).message } : internalFailure(error);
    },
    onFailure: (failure) => failures.push(failure),
  });
  return { code, out: out.join('\n'), err: err.join(''), ran, failures };
}

describe('usage errors: our words, exit 2, one line, a pointer to the right --help', () => {
  it.each([
    [['frobnicate'], "unknown command 'frobnicate'", 'parley-test'],
    [['agent'], 'missing subcommand of agent (one of: register, list)', 'parley-test agent'],
    [['agent', 'dance'], "unknown subcommand 'dance' of agent (one of: register, list)", 'parley-test agent'],
    [['--json'], 'missing command', 'parley-test'],
    [['--bogus', 'agent', 'list'], "unknown option '--bogus'", 'parley-test'],
    [['agent', 'list', '--colour'], "unknown option '--colour'", 'parley-test agent list'],
    [['agent', 'list', '--limt', '3'], "unknown option '--limt' (did you mean --limit?)", 'parley-test agent list'],
    [['agent', 'list', '--limit'], "option '--limit <N>' needs a value", 'parley-test agent list'],
    [['agent', 'register', '--type', 'worker'], 'missing AGENT_ID', 'parley-test agent register'],
    [['agent', 'register', 'a-1'], "option '--type <TYPE>' is required", 'parley-test agent register'],
    [['agent', 'register', 'a-1', '--tpye', 'x'], "unknown option '--tpye' (did you mean --type?)", 'parley-test agent register'],
    [['agent', 'register', '--tpye', 'x'], "unknown option '--tpye' (did you mean --type?)", 'parley-test agent register'],
    [['agent', 'register', 'a-1', 'a-2', '--type', 'worker'], "unexpected argument 'a-2'", 'parley-test agent register'],
    [['agent', 'register', 'bad!', '--type', 'worker'], 'AGENT_ID must be [a-z0-9-]', 'parley-test agent register'],
  ])('%j → %s', async (argv, message, command) => {
    const r = await run(argv);
    expect(r.code).toBe(EXIT_CODES.usage);
    expect(r.err).toBe(`parley-test: error: ${message} (see \`${command} --help\`)\n`);
    expect(r.out).toBe('');
    expect(r.failures).toEqual([{ exitCode: 2, code: 'usage', message }]);
  });

  it('a mandatory Option object stays mandatory when a second program reuses it', async () => {
    const shared = new Option('--out <FILE>', 'where').makeOptionMandatory();
    for (let i = 0; i < 2; i++) {
      const err: string[] = [];
      const program = createProgram({ name: 'parley-test', description: 'reuse', out: () => undefined, err: (t) => err.push(t) });
      program.command('keygen').addOption(shared).action(() => undefined);
      expect(await runProgram(program, ['keygen'], { classify: internalFailure })).toBe(EXIT_CODES.usage);
      expect(err.join('')).toBe("parley-test: error: option '--out <FILE>' is required (see `parley-test keygen --help`)\n");
    }
  });

  it('never leaks node:util parseArgs wording', async () => {
    for (const argv of [['agent', 'list', '--limit'], ['agent', 'list', '--all=yes'], ['agent', 'register', '-x']]) {
      const r = await run(argv);
      expect(r.code).toBe(2);
      expect(r.err).not.toMatch(/ambiguous|Did you forget|To specify an option argument|ERR_PARSE_ARGS|^error:/);
    }
  });

  it('an option value that starts with a dash is taken as the value (the command validates it)', async () => {
    const r = await run(['agent', 'list', '--limit', '--all']);
    expect(r.code).toBe(0);
    expect(r.ran).toEqual(['list {"limit":"--all"}']);
  });
});

describe('running', () => {
  it('runs the command with global options given before or after it', async () => {
    const r = await run(['--data-dir', '/d', 'init', '--kdf', 'interactive', '--json']);
    expect(r.code).toBe(0);
    expect(r.ran).toEqual(['init {"kdf":"interactive","dataDir":"/d","json":true}']);
    expect((await run(['agent', 'register', 'a-1', '--type=worker'])).ran).toEqual(['register a-1']);
  });

  it('classifies other failures: exit code and one line (the first), no stack', async () => {
    const gone = await run(['agent', 'register', 'gone', '--type', 'x']);
    expect(gone.code).toBe(EXIT_CODES.notFound);
    expect(gone.err).toBe('parley-test: error: no such agent\n');
    const boom = await run(['agent', 'register', 'boom', '--type', 'x']);
    expect(boom.code).toBe(EXIT_CODES.internal);
    expect(boom.err).toBe('parley-test: error: internal error: first line\n');
  });
});

describe('help', () => {
  const pages = ['--help', '-h', 'init --help', 'agent --help', 'agent register -h', 'agent list --help'];

  it.each(pages)('%s: exit 0 on stdout, aligned', async (words) => {
    const argv = words.split(' ');
    const r = await run(argv);
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/^Usage: parley-test /);
    expect(helpLayoutProblems(r.out)).toEqual([]);
  });

  it('no arguments: the program help on stdout, exit 2', async () => {
    const r = await run([]);
    expect(r.code).toBe(EXIT_CODES.usage);
    expect(r.out).toBe((await run(['--help'])).out);
  });

  it('lists leaf commands by their full path, then the extra sections', async () => {
    const top = (await run(['--help'])).out;
    expect(top).toMatch(/^ {2}agent register {2,}register an agent$/m);
    expect(top).toMatch(/^Exit codes:\n {2}0 {2}success\n {2}2 {2}usage error$/m);
    expect(top).toContain("Run `parley-test <command> --help` for a command's options.");
    expect(top).not.toMatch(/^ {2}help\b/m); // no implicit help command
    const init = (await run(['init', '--help'])).out;
    // Options, the option group, global options and the page-aligned section: one description column.
    expect(init).toMatch(/^Database Options:$/m);
    expect(init).toMatch(/^Global Options:$/m);
    const at = (term: string): number => {
      const line = init.split('\n').find((l) => l.startsWith(`  ${term} `));
      return line === undefined ? -1 : line.length - line.slice(2 + term.length).trimStart().length;
    };
    expect(at('--kdf <STRENGTH>')).toBe(at('a_rather_long_setting_name'));
    expect(at('--database-url <URL>')).toBe(at('a_rather_long_setting_name'));
    expect(at('--data-dir <DIR>')).toBe(at('a_rather_long_setting_name'));
    expect(at('-h, --help')).toBe(at('a_rather_long_setting_name'));
  });

  it('the layout check finds a misaligned page (so it can fail)', () => {
    const bad = 'Usage: x\n\nOptions:\n  --a      one\n  --bb  two\n\nCommands:\n  c        three\n           wrapped\n';
    expect(helpLayoutProblems(bad)).toEqual([
      'Options: description at column 8, not 11:   --bb  two',
      'sections start their descriptions in different columns: Options: 11, Options: 8',
    ]);
    const wrapped = 'Options:\n  --a  one\n    wrapped too far\n';
    expect(helpLayoutProblems(wrapped)).toHaveLength(1);
    const twoColumns = 'Options:\n  --a  one\n\nCommands:\n  c     two\n';
    expect(helpLayoutProblems(twoColumns)).toHaveLength(1);
    expect(helpLayoutProblems('Exit codes:\n  0  ok\n\nOptions:\n  --all  x\n')).toEqual([]);
  });
});

describe('exit codes and errors', () => {
  it('maps error codes to exit codes; anything unknown is internal', () => {
    expect(exitCodeOf('not_found')).toBe(3);
    expect(exitCodeOf('already_exists')).toBe(4);
    expect(exitCodeOf('bad_certificate')).toBe(5);
    expect(exitCodeOf('malformed')).toBe(6);
    expect(exitCodeOf('unavailable')).toBe(7);
    expect(exitCodeOf('revocation_stale')).toBe(8);
    expect(exitCodeOf('internal')).toBe(1);
    expect(exitCodeOf('constructor')).toBe(1);
    expect(exitCodeOf('')).toBe(1);
    expect(new Set(Object.values(EXIT_CODES))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    // 9 (not ready) belongs to the `check` commands: no error code maps to it.
    expect([...EXIT_CODE_BY_ERROR_CODE.values()]).not.toContain(EXIT_CODES.notReady);
  });

  it('collects configuration problems and reports them all at once, with the worst code', () => {
    const problems = new ProblemList();
    expect(problems.check(() => 42)).toBe(42);
    problems.add('failed_precondition', 'refusing plaintext on 0.0.0.0');
    problems.check(() => {
      throw Object.assign(new Error('[not_found] cannot read policy file p.json'), { code: 'not_found' });
    });
    problems.check(() => {
      throw Object.assign(new Error('x'), { code: 'bad_signature', localDetails: 'bundle.json does not verify' });
    });
    expect(() => problems.check(() => {
      throw new TypeError('a bug, not a problem');
    })).toThrow(TypeError);
    expect(problems.size).toBe(3);
    let error: unknown;
    try {
      problems.take('gateway.json');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).toMatchObject({
      name: 'ConfigError',
      code: 'malformed',
      details: '3 problems in gateway.json: refusing plaintext on 0.0.0.0; cannot read policy file p.json; bundle.json does not verify',
    });
    expect(exitCodeOf((error as ConfigError).code)).toBe(EXIT_CODES.invalidArgument);
    expect(new ConfigError([{ code: 'not_found', message: 'cannot read x' }], 'registry.json').message).toBe('[not_found] registry.json: cannot read x');
    expect(suggestKey('rateBurst', ['rate_burst', 'listen'])).toBe(" (did you mean 'rate_burst'?)");
    expect(suggestKey('lisen', ['rate_burst', 'listen'])).toBe(" (did you mean 'listen'?)");
    expect(suggestKey('colour', ['rate_burst', 'listen'])).toBe('');
  });

  it('recognises its usage errors and nothing else', () => {
    expect(isUsageError(new UsageError('missing FILE'))).toBe(true);
    expect(new UsageError('x')).toMatchObject({ name: 'UsageError', code: 'usage' });
    expect(isUsageError(new Error('boom'))).toBe(false);
    expect(isUsageError(null)).toBe(false);
    expect(isUsageError({ code: 'usage' })).toBe(false);
  });

  it('prints JSON the same way everywhere', () => {
    const out: string[] = [];
    printJson((t) => out.push(t), { ok: true, n: 1 });
    expect(out).toEqual(['{\n  "ok": true,\n  "n": 1\n}']);
    expect(jsonOption().flags).toBe('--json');
  });
});
