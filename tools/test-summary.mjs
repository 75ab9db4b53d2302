#!/usr/bin/env node
// Sums vitest's per-project "Tests  N passed | M failed | K skipped" lines from a
// test log (pytest's and Go's results count through their nx targets), names every failed test
// (vitest's "FAIL" lines, pytest's "FAILED" lines, Go's "--- FAIL:" lines), and
// prints one closing line: "N passed, M failed, K skipped". The names come last
// so that a reader who sees only the end of a long log still sees what failed.
import { readFileSync } from 'node:fs';

const log = readFileSync(process.argv[2] ?? 0, 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = new Set();
for (const raw of log.split('\n')) {
  const line = raw.trim();
  const m = /^\S*:?\s*Tests\s+(.*)\(\d+\)\s*$/.exec(line);
  if (m) {
    passed += Number(/(\d+) passed/.exec(m[1])?.[1] ?? 0);
    failed += Number(/(\d+) failed/.exec(m[1])?.[1] ?? 0);
    skipped += Number(/(\d+) skipped/.exec(m[1])?.[1] ?? 0);
    continue;
  }
  // vitest: "gateway:  FAIL  test/x.spec.ts > suite > test"; pytest: "FAILED tests/x.py::test - why";
  // go: "--- FAIL: TestX (0.01s)".
  const f = /^(\S+:)?\s*(FAIL\s+\S.*|FAILED\s+\S.*|--- FAIL: .*)$/.exec(line);
  if (f) failures.add(`${f[1] ?? ''} ${f[2]}`.trim().slice(0, 300));
}
if (failures.size > 0) {
  console.log(`failed tests (${failures.size}):`);
  for (const f of failures) console.log(`  ${f}`);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
