// A program started by ../closed-pipe.spec.ts with a stdout nobody reads: it prints many lines (like
// `parley-registry tls issue … | head -2`) after a moment, so that its first write finds the pipe closed.
import { createProgram, internalFailure, runProgram, runWhenExecuted } from '../../src/index.js';

async function main(argv: readonly string[]): Promise<number> {
  const program = createProgram({ name: 'parley-pipe', description: 'prints lines' });
  program
    .command('lines')
    .summary('print lines')
    .action(async () => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (let i = 0; i < 1000; i++) process.stdout.write(`line ${i}\n`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      process.stderr.write('still running\n');
    });
  return runProgram(program, argv, { classify: internalFailure });
}

runWhenExecuted('parley-pipe', main);
