/**
 * Parley's command-line conventions on top of commander, so every Parley CLI
 * looks and fails the same way:
 *
 * - one help layout: usage, description, arguments, option groups, global
 *   options, commands (the leaves, by their full path), then extra sections
 *   (settings, exit codes); every two-column list of a page starts its
 *   descriptions in one column and wraps them to the terminal width;
 * - parse errors reworded in our own words (`unknown option '--colour'`,
 *   `missing AGENT_ID`, `option '--limit <N>' needs a value`) and thrown as the
 *   one {@link UsageError};
 * - {@link runProgram}: parse, run, and turn the outcome into an exit code and
 *   at most one line on stderr, `<program>: error: <message>`.
 */
import { Command, CommanderError, Help, Option, type Argument, type ErrorOptions as ParseErrorOptions, type HelpContext } from 'commander';
import { EXIT_CODES } from './exit-codes.js';
import { UsageError } from './usage-error.js';

/** A two-column help row: term, description. */
export type HelpItem = readonly [term: string, description: string];

/** An extra help section, printed after the commands. */
export interface HelpSection {
  /** Title line, e.g. `Exit codes:`; none for a plain paragraph. */
  readonly heading?: string;
  /** Two-column rows. */
  readonly items?: readonly HelpItem[];
  /**
   * `page` (default): the rows start their descriptions in the page's one
   * column, with the options and commands. `section`: in their own column,
   * for a table of short terms (exit codes) that would look lost in a wide one.
   */
  readonly align?: 'page' | 'section';
  /** A paragraph, wrapped to the help width. */
  readonly text?: string;
}

/** Where a program writes: normal output (one call per block, no trailing newline) and diagnostics. */
export interface ProgramIo {
  /** stdout: help, results. Default: `process.stdout`, one line per call. */
  readonly out?: (text: string) => void;
  /** stderr: error and warning lines, written as given. Default: `process.stderr`. */
  readonly err?: (text: string) => void;
}

const stdout = (text: string): void => void process.stdout.write(`${text}\n`);
const stderr = (text: string): void => void process.stderr.write(text);

/** A commander `Command` with Parley's help layout and our wording of parse errors. */
export class CliCommand extends Command {
  /** Extra sections printed after the commands in this command's help. */
  readonly helpSections: HelpSection[] = [];
  /** Options made mandatory (`requiredOption`, `makeOptionMandatory`), checked just before the action. */
  readonly requiredOptions: Option[] = [];
  /** On the root: the command being parsed or run, which a usage error's `--help` hint names. */
  current: CliCommand | undefined;
  /** On the root: where the program writes (set by {@link createProgram}). */
  io: Required<ProgramIo> = { out: stdout, err: stderr };

  override createCommand(name?: string): CliCommand {
    return new CliCommand(name).helpCommand(false);
  }

  override createHelp(): Help {
    return Object.assign(new CliHelp(), this.configureHelp());
  }

  /**
   * commander checks mandatory options before it looks for unknown ones, so
   * `keygen --otu key` would say "--out is required" rather than name the typo.
   * Mandatory options are therefore checked by {@link createProgram}'s
   * preAction hook instead, after unknown options and arguments.
   */
  override addOption(option: Option): this {
    if (option.mandatory || MANDATORY.has(option)) {
      MANDATORY.add(option); // still mandatory if this Option object is added to another program
      option.mandatory = false;
      this.requiredOptions.push(option);
    }
    return super.addOption(option);
  }

  /**
   * Adds a section to this command's help, after the commands.
   * @param section heading, rows and/or a paragraph
   * @returns this command
   */
  addHelpSection(section: HelpSection): this {
    this.helpSections.push(section);
    return this;
  }

  /** commander reports every parse mistake here: reworded, as a UsageError. */
  override error(message: string, options?: ParseErrorOptions): never {
    rootOf(this).current = this;
    throw new UsageError(reword(this, message, options?.code));
  }

  /** commander asks for help "as an error" when a command that has subcommands is given none. */
  override help(context?: HelpContext | ((text: string) => string)): never {
    if (typeof context === 'object' && context.error) this.error('', { code: MISSING_COMMAND });
    return super.help(context as HelpContext);
  }
}

const MISSING_COMMAND = 'parley.missingCommand';

/** Options made mandatory by their creator, whose `mandatory` flag {@link CliCommand.addOption} cleared. */
const MANDATORY = new WeakSet<Option>();

function rootOf(command: Command): CliCommand {
  let c = command;
  while (c.parent !== null) c = c.parent;
  return c as CliCommand;
}

/**
 * The command's words after the program name (`agent register`), or with it.
 * @param command a command of a program
 * @param withProgram include the program name
 */
export function commandPath(command: Command, withProgram = false): string {
  const names: string[] = [];
  for (let c: Command | null = command; c !== null; c = c.parent) if (c.parent !== null || withProgram) names.unshift(c.name());
  return names.join(' ');
}

/** The first 'quoted' word of a commander message. */
function quoted(message: string): string {
  return /'([^']*)'/.exec(message)?.[1] ?? '';
}

/**
 * Our wording for a commander parse error (its codes are stable; its messages
 * only supply the option or argument named in quotes).
 */
function reword(command: Command, message: string, code: string | undefined): string {
  const subcommands = command.commands.map((c) => c.name()).join(', ');
  switch (code) {
    case 'commander.unknownOption': {
      const suggestion = /Did you mean (?:one of )?([^?]+)\?/.exec(message)?.[1];
      return `unknown option '${quoted(message)}'${suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`}`;
    }
    case 'commander.unknownCommand':
      return command.parent === null
        ? `unknown command '${quoted(message)}'`
        : `unknown subcommand '${quoted(message)}' of ${commandPath(command)} (one of: ${subcommands})`;
    case MISSING_COMMAND:
      return command.parent === null ? 'missing command' : `missing subcommand of ${commandPath(command)} (one of: ${subcommands})`;
    case 'commander.missingArgument':
      return `missing ${placeholder(quoted(message))}`;
    case 'commander.optionMissingArgument':
      return `option '${quoted(message)}' needs a value`;
    case 'commander.missingMandatoryOptionValue':
      return `option '${quoted(message)}' is required`;
    case 'commander.excessArguments':
      return `unexpected argument '${command.args[command.registeredArguments.length] ?? ''}'`;
    default:
      return message.replace(/^error: /, '');
  }
}

/** An argument name as the usage line writes it: `AGENT_ID`, or `<index>` for a lower-case name. */
function placeholder(name: string): string {
  return name === name.toUpperCase() ? name : `<${name}>`;
}

/**
 * The help layout. commander already aligns arguments, options and commands
 * on one column (`padWidth`); this adds the page-aligned extra sections to
 * that width, lists a program's leaf commands by their full path, and prints
 * the extra sections.
 */
class CliHelp extends Help {
  override visibleCommands(cmd: Command): Command[] {
    return super.visibleCommands(cmd).flatMap((sub) => (sub.commands.length > 0 ? this.visibleCommands(sub) : [sub]));
  }

  override subcommandTerm(cmd: Command): string {
    return commandPath(cmd);
  }

  override argumentTerm(argument: Argument): string {
    return placeholder(argument.name());
  }

  /** The command's own "Options:" (at least -h, --help) before its option groups, whatever was added first. */
  override groupItems<T extends Command | Option>(unsortedItems: T[], visibleItems: T[], getGroup: (item: T) => string): Map<string, T[]> {
    const groups = super.groupItems(unsortedItems, visibleItems, getGroup);
    const own = groups.get('Options:');
    if (own === undefined) return groups;
    groups.delete('Options:');
    return new Map([['Options:', own], ...groups]);
  }

  override padWidth(cmd: Command, helper: Help): number {
    const pageTerms = sectionsOf(cmd)
      .filter((s) => (s.align ?? 'page') === 'page')
      .flatMap((s) => s.items ?? [])
      .map(([term]) => helper.displayWidth(term));
    return Math.max(super.padWidth(cmd, helper), ...pageTerms);
  }

  override formatHelp(cmd: Command, helper: Help): string {
    const width = helper.helpWidth ?? 80;
    const pageWidth = helper.padWidth(cmd, helper);
    const lines = [super.formatHelp(cmd, helper)]; // ends with a newline: a blank line before each section
    for (const section of sectionsOf(cmd)) {
      if (section.heading !== undefined) lines.push(helper.styleTitle(section.heading));
      const items = section.items ?? [];
      const termWidth = (section.align ?? 'page') === 'page' ? pageWidth : Math.max(0, ...items.map(([term]) => helper.displayWidth(term)));
      for (const [term, description] of items) lines.push(helper.formatItem(term, termWidth, description, helper));
      if (section.text !== undefined) lines.push(helper.boxWrap(section.text, width));
      lines.push('');
    }
    return lines.join('\n');
  }
}

function sectionsOf(cmd: Command): readonly HelpSection[] {
  return cmd instanceof CliCommand ? cmd.helpSections : [];
}

/** What {@link createProgram} needs. */
export interface ProgramOptions extends ProgramIo {
  /** The executable's name, e.g. `parley-registry`: the usage line and the prefix of every error line. */
  readonly name: string;
  /** One line: what the program is. */
  readonly description: string;
}

/**
 * A program with Parley's conventions: `-h, --help` on every command, no
 * implicit `help` command, errors thrown (never `process.exit`), output
 * through `out`/`err`. Define commands with `.command()` so they inherit them.
 * @param options name, description, where to write
 * @returns the root command
 * @example
 * const program = createProgram({ name: 'parley-demo', description: 'a demo' });
 * program.command('hello').summary('say hello').action(() => console.log('hello'));
 * process.exitCode = await runProgram(program, process.argv.slice(2), { classify: internalFailure });
 */
export function createProgram(options: ProgramOptions): CliCommand {
  const out = options.out ?? stdout;
  const err = options.err ?? stderr;
  const program = new CliCommand(options.name);
  program
    .description(options.description)
    .usage('<command> [options]')
    .helpCommand(false)
    .addHelpOption(new Option('-h, --help', 'help for the command'))
    .configureHelp({ showGlobalOptions: true })
    .configureOutput({
      writeOut: (text) => out(text.replace(/\n$/, '')),
      writeErr: err,
      outputError: () => undefined, // errors become UsageErrors; runProgram prints them
    })
    .exitOverride()
    .hook('preAction', (_program, action) => {
      const command = action as CliCommand;
      program.current = command;
      const missing = command.requiredOptions.find((option) => command.getOptionValue(option.attributeName()) === undefined);
      if (missing !== undefined) command.error(`error: required option '${missing.flags}' not specified`, { code: 'commander.missingMandatoryOptionValue' });
    });
  program.helpSections.push({ text: `Run \`${options.name} <command> --help\` for a command's options.` });
  program.io = { out, err };
  return program;
}

/**
 * A group of subcommands (`agent`, `operator`): no action of its own; called
 * alone it is a usage error naming its subcommands.
 * @param parent the program (or another group)
 * @param name the group's word
 * @param summary one line for the parent's help
 */
export function commandGroup(parent: CliCommand, name: string, summary: string): CliCommand {
  return parent.command(name).summary(summary).description(`${summary}.`).usage('<command> [options]');
}

/** How a run ended, when it did not succeed. */
export interface Failure {
  /** Exit code. */
  readonly exitCode: number;
  /** Stable error code (`usage`, `not_found`, …), for `--json` output. */
  readonly code: string;
  /** One line for the user, in our words. */
  readonly message: string;
}

/** What {@link runProgram} needs besides the program. */
export interface RunOptions {
  /** Turns an error that is not a usage error into an exit code and a message. */
  readonly classify: (error: unknown) => Failure;
  /** Called with every failure after its line went to stderr (parley-audit also prints it as JSON). */
  readonly onFailure?: (failure: Failure) => void;
}

/**
 * The failure of an error nobody expected: exit code 1, `internal error: ` and
 * the first line of its message (never a stack trace).
 * @param error anything caught
 */
export function internalFailure(error: unknown): Failure {
  const text = error instanceof Error ? error.message : String(error);
  return { exitCode: EXIT_CODES.internal, code: 'internal', message: `internal error: ${text.split('\n')[0] ?? ''}` };
}

/**
 * Parses `argv`, runs the command, and returns the exit code: 0 on success
 * and after `--help`; 2 (usage) with the program's help on stdout when called
 * with no arguments; 2 with one line and a `--help` hint for a usage error;
 * otherwise what `classify` says, in one line. Never a stack trace.
 * @param program from {@link createProgram}
 * @param argv arguments after the program name
 * @param options how to classify other failures
 * @returns the exit code
 */
export async function runProgram(program: CliCommand, argv: readonly string[], options: RunOptions): Promise<number> {
  const { err } = program.io;
  const say = (message: string): void => err(`${program.name()}: error: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (argv.length === 0) {
    program.outputHelp();
    return EXIT_CODES.usage;
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_CODES.ok;
  } catch (error) {
    if (error instanceof CommanderError && error.exitCode === 0) return EXIT_CODES.ok; // --help
    let failure: Failure;
    if (error instanceof UsageError || error instanceof CommanderError) {
      failure = { exitCode: EXIT_CODES.usage, code: 'usage', message: error.message.replace(/^error: /, '') };
      say(`${failure.message} (see \`${commandPath(program.current ?? program, true)} --help\`)`);
    } else {
      failure = options.classify(error);
      say(failure.message);
    }
    options.onFailure?.(failure);
    return failure.exitCode;
  }
}
