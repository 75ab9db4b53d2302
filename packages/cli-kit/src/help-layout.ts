/**
 * A check of the help layout, for the CLIs' tests: every two-column list
 * starts its descriptions in one column, wrapped lines continue exactly under
 * it, and (apart from sections that keep their own narrow column, such as the
 * exit codes) all lists of a page share that column.
 */

/** Lines of a help page that break the layout, each with the reason; empty when it is aligned. */
export function helpLayoutProblems(text: string, options: { readonly ownColumn?: readonly string[] } = {}): string[] {
  const own = new Set(options.ownColumn ?? ['Exit codes:']);
  const problems: string[] = [];
  const pageColumns = new Map<number, string>();
  let heading: string | undefined;
  let column: number | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      heading = undefined;
      column = undefined;
      continue;
    }
    if (/^\S.*:$/.test(line)) {
      heading = line;
      column = undefined;
      continue;
    }
    if (heading === undefined) continue;
    const item = /^ {2}(\S(?:.*?\S)?) {2,}(\S.*)$/.exec(line);
    if (item !== null && !/^ {3}/.test(line)) {
      const at = line.length - item[2]!.length;
      if (column === undefined) column = at;
      else if (at !== column) problems.push(`${heading} description at column ${at}, not ${column}: ${line}`);
      if (!own.has(heading) && !pageColumns.has(at)) pageColumns.set(at, heading);
    } else if (column !== undefined && /^ {3}/.test(line)) {
      const indent = /^ */.exec(line)![0].length;
      if (indent !== column) problems.push(`${heading} wrapped line indented ${indent}, not ${column}: ${line}`);
    }
  }
  if (pageColumns.size > 1) {
    problems.push(`sections start their descriptions in different columns: ${[...pageColumns].map(([c, h]) => `${h} ${c}`).join(', ')}`);
  }
  return problems;
}
