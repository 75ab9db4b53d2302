// Writes (or, with --check, verifies) the conformance vector files:
// docs/conformance/parley-v1.json, docs/conformance/parley-v1-memory.json (§18) and
// docs/conformance/parley-v1-trust.json (§15.3, §15.9, §15.11).
//   npm run conformance            regenerate the committed files
//   npm run conformance -- --check exit 1 if regeneration would change one (CI)
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildVectors, renderVectors, VECTOR_FILE } from './vectors.js';
import { buildMemoryVectors, MEMORY_VECTOR_FILE } from './memory-vectors.js';
import { buildTrustVectors, TRUST_VECTOR_FILE } from './trust-vectors.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
for (const [file, build] of [
  [VECTOR_FILE, buildVectors],
  [MEMORY_VECTOR_FILE, buildMemoryVectors],
  [TRUST_VECTOR_FILE, buildTrustVectors],
] as const) {
  const target = join(root, file);
  const text = renderVectors(await build());
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(target, 'utf8');
    } catch {
      // missing: reported below
    }
    if (current !== text) {
      process.stderr.write(`conformance: ${file} is not what tools/conformance/generate.ts produces; run \`npm run conformance\` and commit the result\n`);
      process.exit(1);
    }
    process.stdout.write(`conformance: ${file} is up to date\n`);
  } else {
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, text);
    process.stdout.write(`conformance: wrote ${file} (${String(text.length)} bytes)\n`);
  }
}
