/**
 * Benchmark harness shared by every project's `bench` target. These 2-core
 * machines are noisy, so every figure is printed beside a peer measured in the
 * same run, and the two are sampled alternately (A B A B …) so drift hits both.
 * Reported: median over the rounds of ops/s (and MB/s where bytes are given).
 */

export interface Sample {
  /** Median operations per second over the rounds. */
  readonly opsPerSec: number;
  /** Median microseconds per operation. */
  readonly usPerOp: number;
  /** MB/s (10^6 bytes) when bytesPerOp was given. */
  readonly mbPerSec?: number;
}

export interface Case {
  readonly name: string;
  /** One operation. Return anything to keep the optimiser honest. */
  readonly fn: () => unknown;
  /** Bytes processed per operation, for MB/s. */
  readonly bytesPerOp?: number;
}

export interface MeasureOptions {
  /** Rounds per case (median taken). Default 5, or BENCH_ROUNDS. */
  readonly rounds?: number;
  /** Time per round in ms. Default 300, or BENCH_ROUND_MS. */
  readonly roundMs?: number;
}

let sink: unknown;

function round(fn: () => unknown, ms: number): number {
  // Calibrate a batch size so the clock is read rarely.
  let batch = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) sink = fn();
    const dt = performance.now() - t0;
    if (dt >= 5 || batch >= 1 << 20) break;
    batch *= 2;
  }
  let ops = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < batch; i++) sink = fn();
    ops += batch;
    now = performance.now();
  }
  return (ops * 1000) / (now - start);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Measures the cases alternately, round by round; returns one Sample per case. */
export function measure(cases: readonly Case[], options: MeasureOptions = {}): Sample[] {
  const rounds = options.rounds ?? Number(process.env['BENCH_ROUNDS'] ?? 5);
  const roundMs = options.roundMs ?? Number(process.env['BENCH_ROUND_MS'] ?? 300);
  for (const c of cases) round(c.fn, Math.min(100, roundMs)); // warm-up (JIT, caches)
  const results: number[][] = cases.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, c] of cases.entries()) results[i]!.push(round(c.fn, roundMs));
  }
  void sink;
  return cases.map((c, i) => {
    const opsPerSec = median(results[i]!);
    const sample: Sample = { opsPerSec, usPerOp: 1e6 / opsPerSec };
    return c.bytesPerOp === undefined ? sample : { ...sample, mbPerSec: (opsPerSec * c.bytesPerOp) / 1e6 };
  });
}

/** Measures one async operation `count` times sequentially; returns latency percentiles in µs. */
export async function measureLatency(fn: () => Promise<unknown>, count: number): Promise<{ p50: number; p99: number; opsPerSec: number }> {
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) * 1000);
  }
  const total = performance.now() - start;
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(times.length * 0.5)]!, p99: times[Math.min(times.length - 1, Math.floor(times.length * 0.99))]!, opsPerSec: (count * 1000) / total };
}

export interface Row {
  readonly label: string;
  readonly ours: Sample;
  readonly peer: Sample;
  /** Which figure to print: throughput (ops/s or MB/s) or latency (µs/op). */
  readonly unit: 'ops/s' | 'MB/s' | 'µs';
}

function fmt(sample: Sample, unit: Row['unit']): string {
  const v = unit === 'ops/s' ? sample.opsPerSec : unit === 'MB/s' ? (sample.mbPerSec ?? Number.NaN) : sample.usPerOp;
  if (v >= 100_000) return `${(v / 1000).toFixed(0)}k`;
  if (v >= 1000) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/**
 * Prints a table: label, ours, peer, unit, and ratio = ours ÷ peer in speed
 * terms (above 1 means ours is faster; for µs rows it is peer µs ÷ ours µs).
 */
export function printTable(title: string, peerName: string, rows: readonly Row[]): void {
  const w = Math.max(...rows.map((r) => r.label.length), 20);
  console.log(`\n${title}`);
  console.log(`${'case'.padEnd(w)}  ${'ours'.padStart(9)}  ${peerName.padStart(14)}  unit   ratio (speed, ours/peer)`);
  for (const r of rows) {
    const ratio = r.ours.opsPerSec / r.peer.opsPerSec;
    console.log(`${r.label.padEnd(w)}  ${fmt(r.ours, r.unit).padStart(9)}  ${fmt(r.peer, r.unit).padStart(14)}  ${r.unit.padEnd(5)}  ${ratio.toFixed(2)}×`);
  }
}
