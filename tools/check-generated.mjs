#!/usr/bin/env node
// Regenerates packages/proto/src/gen with buf + protoc-gen-es and fails if the
// committed code differs (generated code is committed, never hand-edited).
import { execFileSync } from 'node:child_process';

const run = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });

run('npx', ['buf', 'generate']);
const status = run('git', ['status', '--porcelain', '--', 'packages/proto/src/gen']);
if (status.trim() !== '') {
  console.error('Generated code differs from what is committed (run `npm run generate` and commit):');
  console.error(status);
  console.error(run('git', ['--no-pager', 'diff', '--stat', '--', 'packages/proto/src/gen']));
  process.exit(1);
}
console.log('generated code is up to date');
