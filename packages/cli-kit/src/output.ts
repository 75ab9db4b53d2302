/**
 * `--json`: the one option every Parley CLI takes for machine-readable output,
 * and the way it prints.
 */
import { Option } from 'commander';

/**
 * The `--json` option, described the same in every program.
 * @returns a fresh option (commander options belong to one command)
 */
export function jsonOption(): Option {
  return new Option('--json', 'machine-readable JSON output');
}

/**
 * Prints one JSON document, indented, as every `--json` command does.
 * @param out the program's output
 * @param value anything JSON.stringify accepts
 */
export function printJson(out: (text: string) => void, value: unknown): void {
  out(JSON.stringify(value, null, 2));
}
