// Python SDK benchmark (`npm run bench`, project python-client): the cost of one 1 KiB message,
// seal + open, in the Python SDK (clients/python/bench/seal_open.py, run as a child process) beside
// the TypeScript SDK (@parley/session, in this process) in the same run, sampled alternately
// (TS round, Python round, …) so machine drift hits both. Both seal a MessagePayload of the same
// size (content {"data": "x" × 1000}) on a session from a real identity-bound handshake, and open
// (and commit) it on the peer's session.
//
// The Python figure uses whichever BLAKE3 backend is importable; the script also reports the time
// spent inside BLAKE3, and, when the `blake3` package is installed, the pure-Python fallback too.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import { MessageType } from '@parley/proto';
import { InitiatorHandshake, ResponderHandshake, type HandshakeConfig, type Session } from '@parley/session';

const HERE = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env['PARLEY_PYTHON'] ?? '/usr/bin/python3';
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const ROUND_MS = Number(process.env['BENCH_ROUND_MS'] ?? 300);
const PY_ROUND_MS = Math.max(1000, ROUND_MS);
const CONTENT = { data: 'x'.repeat(1000) };

interface PyRound {
  readonly backend: string;
  readonly us_per_op: number;
  readonly ops: number;
  readonly blake3_us_per_op: number;
  readonly payload_bytes: number;
  readonly fallback?: { readonly us_per_op: number; readonly blake3_us_per_op: number };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function tsSessions(): Promise<{ a: Session; b: Session }> {
  const crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  const now = Date.now();
  const config = (agentId: string): HandshakeConfig => {
    const keyPair = crypto.ed25519.generateKeyPair();
    const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType: 'worker', capabilities: [], validFromMs: now - 60_000, validUntilMs: now + 86_400_000 });
    return { identity: { agentId, signingKey: keyPair.secretKey, certificate }, trustBundle };
  };
  const { handshake: i, frame: f1 } = InitiatorHandshake.start(crypto, config('bench-a'), 'bench-b');
  const { handshake: r, frame: f2 } = ResponderHandshake.accept(crypto, config('bench-b'), f1);
  const { frame: f3, session: a } = i.receive(f2);
  return { a, b: r.receive(f3) };
}

/** One TypeScript round: µs per seal + open. */
function tsRound(a: Session, b: Session, ms: number): number {
  const op = (): void => void b.open(a.seal({ type: MessageType.TASK_ASSIGNMENT, content: CONTENT }).envelope);
  for (let i = 0; i < 50; i++) op();
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    for (let i = 0; i < 20; i++) op();
    n += 20;
  }
  return ((performance.now() - start) * 1000) / n;
}

function pyRound(): PyRound {
  const out = execFileSync(PYTHON, [join(HERE, 'seal_open.py'), '--round-ms', String(PY_ROUND_MS)], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!) as PyRound;
}

async function main(): Promise<void> {
  const { a, b } = await tsSessions();
  tsRound(a, b, 100); // warm-up (JIT)
  const ts: number[] = [];
  const py: PyRound[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    ts.push(tsRound(a, b, ROUND_MS));
    py.push(pyRound());
  }
  const tsUs = median(ts);
  const pyUs = median(py.map((p) => p.us_per_op));
  const pyHash = median(py.map((p) => p.blake3_us_per_op));
  const backend = py[0]!.backend;
  const fmt = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`);
  console.log(`\nPython SDK: one 1 KiB message (payload ${py[0]!.payload_bytes} bytes), seal + open, median of ${ROUNDS} alternating rounds`);
  console.log(`${'case'.padEnd(46)}  ${'per message'.padStart(12)}  ${'msg/s'.padStart(8)}  vs TypeScript`);
  const row = (label: string, us: number): void =>
    console.log(`${label.padEnd(46)}  ${fmt(us).padStart(12)}  ${(1e6 / us).toFixed(0).padStart(8)}  ${(us / tsUs).toFixed(1)}× the time`);
  row('TypeScript SDK (@parley/session)', tsUs);
  row(`Python SDK, BLAKE3 ${backend === 'blake3' ? 'package' : 'pure-Python fallback'}`, pyUs);
  console.log(`${'  of which inside BLAKE3'.padEnd(46)}  ${fmt(pyHash).padStart(12)}  (${((pyHash / pyUs) * 100).toFixed(0)} % of the Python figure)`);
  const fallback = py.map((p) => p.fallback).filter((f) => f !== undefined);
  if (fallback.length > 0) row('Python SDK, BLAKE3 pure-Python fallback', median(fallback.map((f) => f.us_per_op)));
  else console.log(`${'Python SDK, BLAKE3 package'.padEnd(46)}  ${'not measured'.padStart(12)}  (the blake3 package is not installed here; Debian has none)`);
}

await main();
