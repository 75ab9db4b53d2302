/**
 * The entry point of a CLI file: run `main` when the process was started on
 * the file itself, never when a test imports it.
 */
import { EXIT_CODES } from './exit-codes.js';

/**
 * Runs `main(argv)` and sets the exit code, but only when this process was
 * started on a CLI file (`…/cli.ts`, `…/cli.js`) or on the program's bin name,
 * never when a test imports it. An exception escaping `main` becomes exit
 * code 1 with its first line on stderr.
 * @param program the executable's name (`parley-registry`)
 * @param main the CLI: arguments in, exit code out
 */
export function runWhenExecuted(program: string, main: (argv: readonly string[]) => Promise<number>): void {
  const invokedAs = process.argv[1] ?? '';
  if (!/cli\.(ts|js)$/.test(invokedAs) && !invokedAs.endsWith(program)) return;
  exitQuietlyOnClosedPipe();
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`${program}: error: internal error: ${error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error)}\n`);
      process.exitCode = EXIT_CODES.internal;
    },
  );
}

/**
 * `parley-registry tls issue … | head -2`: the reader goes away, and the next write to stdout fails with
 * EPIPE, which Node.js raises as an unhandled 'error' event (a stack trace, exit 1). Unix tools stop
 * quietly then; so does this: exit 0 at once (the reader asked for no more), nothing on stderr. A closed
 * stderr is ignored (there is nowhere left to report to). Other stream errors keep Node's behaviour.
 */
export function exitQuietlyOnClosedPipe(): void {
  const closed = (error: NodeJS.ErrnoException): boolean => error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED';
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (!closed(error)) throw error;
    process.exit(EXIT_CODES.ok);
  });
  process.stderr.on('error', (error: NodeJS.ErrnoException) => {
    if (!closed(error)) throw error;
  });
}
