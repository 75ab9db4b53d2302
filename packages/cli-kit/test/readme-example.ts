import { UsageError, createProgram, internalFailure, jsonOption, printJson, runProgram, runWhenExecuted } from '../src/index.js';

/** parley-hello: arguments in, exit code out (tests call it with their own `out`). */
export async function main(argv: readonly string[], out: (text: string) => void = (text) => process.stdout.write(`${text}\n`)): Promise<number> {
  const program = createProgram({ name: 'parley-hello', description: 'Greets agents', out });
  program.addOption(jsonOption());
  program
    .command('greet')
    .summary('greet an agent')
    .usage('<AGENT_ID> [--times <N>] [--json]')
    .argument('<AGENT_ID>')
    .option('--times <N>', 'how many times, 1..3 (default 1)')
    .action(async (agentId: string, options: { times?: string }, command: { optsWithGlobals(): { json?: boolean } }) => {
      const times = Number(options.times ?? '1');
      if (![1, 2, 3].includes(times)) throw new UsageError('--times must be 1, 2 or 3');
      if (command.optsWithGlobals().json === true) printJson(out, { agent_id: agentId, times });
      else for (let i = 0; i < times; i++) out(`hello, ${agentId}`);
    });
  program.addHelpSection({ heading: 'Exit codes:', align: 'section', items: [['0', 'success'], ['1', 'internal error'], ['2', 'usage error']] });
  return runProgram(program, argv, { classify: internalFailure });
}

runWhenExecuted('parley-hello', main);
