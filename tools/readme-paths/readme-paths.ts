// Repo-relative paths that the documentation mentions: markdown link targets, and
// code spans that look like a path (`src/db.ts`, `apps/gateway/README.md`,
// `deploy/systemd/`). Used by readme-paths.spec.ts to check that each exists.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** A path as the document wrote it, and where. */
export interface Mention {
  readonly file: string;
  readonly line: number;
  readonly path: string;
  readonly kind: 'link' | 'code';
}

/** Every README.md in the repository (outside node_modules, dist and hidden directories), and docs/*.md. */
export function documents(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith('.') || entry.name === 'node_modules' || entry.name === 'dist') continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name === 'README.md') out.push(relative(root, path));
    }
  };
  walk(root);
  for (const name of readdirSync(join(root, 'docs'))) if (name.endsWith('.md')) out.push(join('docs', name));
  return out.sort();
}

// A code span that is a path: two or more segments of file-name characters, no spaces, not a package
// specifier (@scope/name), not a URL, an address, a placeholder (<id>, …) or a glob.
const PATH_SPAN = /^(?:\.{1,2}\/)?[A-Za-z0-9_][\w.-]*(?:\/[\w.-]+)+\/?$/;
const FILE_LIKE = /\.[a-z]{1,5}$|\/$/;

/**
 * The mentions in one markdown text. Code spans count only when they look like a file (an extension or a
 * trailing slash) or start at a top-level directory of the repository (`topLevel`), so that prose such as
 * `planner/worker` or a gRPC path is not read as a file.
 */
export function mentions(file: string, text: string, topLevel: ReadonlySet<string>): Mention[] {
  const out: Mention[] = [];
  let fenced = false;
  text.split('\n').forEach((line, i) => {
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      return;
    }
    if (fenced) return;
    for (const m of line.matchAll(/\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1]!.split('#')[0]!;
      if (target === '' || /^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // anchor only, or a URL (https:, mailto:)
      out.push({ file, line: i + 1, path: decodeURIComponent(target), kind: 'link' });
    }
    for (const m of line.matchAll(/`([^`\n]+)`/g)) {
      const span = m[1]!.trim();
      if (!PATH_SPAN.test(span)) continue;
      const first = span.replace(/^\.{1,2}\//, '').split('/')[0]!;
      if (/^[A-Z][A-Z0-9_]*$/.test(first)) continue; // a placeholder: DATA_DIR/agents/ID.key.json
      if (!FILE_LIKE.test(span) && !topLevel.has(first)) continue;
      out.push({ file, line: i + 1, path: span, kind: 'code' });
    }
  });
  return out;
}

/**
 * Whether a mention names something that exists: relative to the document's directory (how markdown
 * resolves links), or, for a code span, also relative to the repository root or to the document's project
 * (`apps/gateway/README.md` saying `src/server.ts`). Build outputs (`dist/…`) and the data directories the
 * programs create at run time (`.data/…`) are not in the repository and are not checked, nor is a link
 * that leaves the repository (`../shared/vectors/…`: the workspace around the checkout).
 */
export function exists(root: string, mention: Mention): boolean {
  const path = mention.path;
  if (/(^|\/)(dist|\.data|node_modules)(\/|$)/.test(path)) return true;
  const bases = mention.kind === 'link' ? [dirname(join(root, mention.file))] : [dirname(join(root, mention.file)), root];
  const inside = (full: string): boolean => full === root || full.startsWith(`${root}/`);
  if (bases.some((base) => !inside(resolve(base, path)))) return true;
  return bases.some((base) => {
    const full = resolve(base, path);
    return full.startsWith(root) && existsSync(full) && (!path.endsWith('/') || statSync(full).isDirectory());
  });
}

/** The top-level directories of the repository (what a repo-relative path starts with). */
export function topLevelDirs(root: string): Set<string> {
  return new Set(readdirSync(root, { withFileTypes: true }).filter((e) => e.isDirectory() && !e.name.startsWith('.') && e.name !== 'node_modules').map((e) => e.name));
}

/** Every mention in every document that names nothing. */
export function missingPaths(root: string): Mention[] {
  const top = topLevelDirs(root);
  return documents(root).flatMap((file) => mentions(file, readFileSync(join(root, file), 'utf8'), top).filter((m) => !exists(root, m)));
}
