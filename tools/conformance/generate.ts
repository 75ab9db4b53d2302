// Writes (or, with --check, verifies) docs/conformance/parley-v1.json.
//   npm run conformance            regenerate the committed file
//   npm run conformance -- --check exit 1 if regeneration would change it (CI)
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildVectors, renderVectors, VECTOR_FILE } from './vectors.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const target = join(root, VECTOR_FILE);
const text = renderVectors(await buildVectors());
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    // missing: reported below
  }
  if (current !== text) {
    process.stderr.write(`conformance: ${VECTOR_FILE} is not what tools/conformance/generate.ts produces; run \`npm run conformance\` and commit the result\n`);
    process.exit(1);
  }
  process.stdout.write(`conformance: ${VECTOR_FILE} is up to date\n`);
} else {
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, text);
  process.stdout.write(`conformance: wrote ${VECTOR_FILE} (${String(text.length)} bytes)\n`);
}
