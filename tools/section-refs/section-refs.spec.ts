// Every "§N" / "§N.N" reference to docs/PROTOCOL.md in the .proto files, in
// code comments (packages/*/src, apps/*/src, tools, examples/go-agent, clients/python), in the
// READMEs and in docs/PROTOCOL.md itself names a heading that exists in
// docs/PROTOCOL.md (issue 14, gap 13: comments had drifted to sections that say
// something else, or to none).
//
// What counts as a reference to PROTOCOL.md: "PROTOCOL.md §N" and "PROTOCOL §N"
// always; a bare "§N" unless, earlier on the same line, another document is
// named ("RFC 9162 §2.1.3.1 and §2.1.4.1", "Noise §4.2, §11.3"), or the file
// follows another document's numbering throughout (EXTERNAL_FILES, with the
// reason). A heading is "## N. Title" or "### N.N Title".
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SPEC = 'docs/PROTOCOL.md';

/** Where references are looked for. */
const ROOTS = ['proto', 'packages', 'apps', 'tools', 'examples/go-agent', 'clients/python', 'examples/python-agent', 'docs/PROTOCOL.md', 'README.md'];
/** Which files: sources, build scripts and documentation (generated code and vendored modules are not read). */
const EXTENSIONS = new Set(['.proto', '.ts', '.mts', '.mjs', '.js', '.go', '.py', '.sh', '.md']);
const SKIP_DIRS = new Set(['node_modules', 'gen', 'third_party', 'bin', 'dist', '.data', 'fixtures']);
/** Files whose bare "§" references are to another document, and which one. */
const EXTERNAL_FILES: Readonly<Record<string, string>> = {
  'packages/session/src/noise/': 'the Noise specification, revision 34 (the Noise code follows its section numbers)',
  'clients/python/parley/noise/': 'the Noise specification, revision 34 (the Python Noise code follows its section numbers)',
  'clients/python/parley/_blake3_fallback.py': 'the BLAKE3 paper (the fallback follows its section numbers)',
};
/** Another document named on the line before a bare reference makes that reference its. */
const OTHER_DOCUMENT = /\b(?:RFC\s*\d+|Noise|DESIGN(?:\.md)?)\b/;
const EXPLICIT = /PROTOCOL(?:\.md)?\s*$/;
const REF = /§(\d+(?:\.\d+)*)/g;

function headings(): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync(path.join(ROOT, SPEC), 'utf8').split('\n')) {
    const m = /^#{2,4} (\d+(?:\.\d+)*)\.? \S/.exec(line);
    if (m !== null) out.add(m[1]!);
  }
  return out;
}

function* files(dir: string): Generator<string> {
  if (!statSync(dir).isDirectory()) {
    yield dir;
    return;
  }
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) {
      if (!SKIP_DIRS.has(name)) yield* files(full);
    } else if (EXTENSIONS.has(path.extname(name))) {
      yield full;
    }
  }
}

interface Reference {
  readonly where: string;
  readonly section: string;
}

/** Every reference to PROTOCOL.md in one file's text. Exported shape for the self-test below. */
function references(rel: string, text: string): Reference[] {
  const external = Object.keys(EXTERNAL_FILES).some((prefix) => rel.startsWith(prefix));
  const out: Reference[] = [];
  text.split('\n').forEach((line, i) => {
    for (const m of line.matchAll(REF)) {
      const before = line.slice(0, m.index);
      const explicit = EXPLICIT.test(before);
      if (!explicit && (external || OTHER_DOCUMENT.test(before))) continue;
      out.push({ where: `${rel}:${String(i + 1)}`, section: m[1]! });
    }
  });
  return out;
}

describe('section references (docs/PROTOCOL.md)', () => {
  it('recognises references and the documents they belong to', () => {
    const refs = references('x.ts', [
      '// PROTOCOL.md §8.1 step 1 and §6.6',
      '// RFC 9162 §2.1.3.1 and §2.1.4.1, then (docs/PROTOCOL.md §9.3)',
      '// Noise §4.2, §11.3',
      '// §15.3–§15.5',
    ].join('\n'));
    expect(refs.map((r) => r.section)).toEqual(['8.1', '6.6', '9.3', '15.3', '15.5']);
    expect(references('packages/session/src/noise/x.ts', '// §5.2 and PROTOCOL.md §7').map((r) => r.section)).toEqual(['7']);
  });

  it('finds the headings of every numbered section', () => {
    const h = headings();
    for (const s of ['2', '5', '5.1', '8.1', '12', '16', '17']) expect(h.has(s), `§${s}`).toBe(true);
  });

  it('every reference in proto/ and code comments names a heading that exists', () => {
    const h = headings();
    const refs: Reference[] = [];
    for (const root of ROOTS) {
      for (const file of files(path.join(ROOT, root))) {
        const rel = path.relative(ROOT, file).split(path.sep).join('/');
        refs.push(...references(rel, readFileSync(file, 'utf8')));
      }
    }
    expect(refs.length).toBeGreaterThan(200);
    const dangling = refs.filter((r) => !h.has(r.section)).map((r) => `${r.where} §${r.section}`);
    expect(dangling).toEqual([]);
  });
});
