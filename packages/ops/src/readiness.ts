/**
 * Readiness of a server, as grpc-health-probe and Kubernetes mean it: a set of
 * named checks (the revocation copy is fresh, the database answers, …), each
 * ok or failing with a one-line reason; the server is ready while every check
 * is ok. Liveness is not here (see ./ops-server.ts: `/healthz` only asks
 * whether the process and its event loop respond).
 *
 * A check is either pushed (`set`, by the component that knows: the
 * revocation feed, a trust-bundle follower) or probed (`addProbe`: a function
 * run every `intervalMs`, failing when it throws, answers `ok: false`, or does
 * not answer within `timeoutMs`). A probe that has not answered yet counts as
 * failing: a server is not ready before it has checked (fail closed).
 *
 * `bindHealth` drives grpc.health.v1 statuses from it: SERVING while ready,
 * NOT_SERVING otherwise, for every service given (Health.Watch streams see
 * each transition). `shutdown()` makes it not ready for good.
 */
import { ServingStatus, type HealthReporter } from '@parley/rpc';

/** What a check answers. `detail` is one line for operators (no secrets: it is served on `/readyz`). */
export interface CheckResult {
  readonly ok: boolean;
  readonly detail?: string;
}

/** The state of one check. */
export interface CheckState {
  readonly name: string;
  readonly ok: boolean;
  /** Why it fails, or what it saw (one line). */
  readonly detail: string;
  /** Since when it has had this `ok` value, ms since the epoch. */
  readonly sinceMs: number;
  /** When it was last checked or set, ms since the epoch (0: never). */
  readonly checkedAtMs: number;
}

/** Every check, and the verdict. */
export interface ReadinessReport {
  readonly ready: boolean;
  /** Names of the failing checks, in registration order. */
  readonly failing: readonly string[];
  readonly checks: readonly CheckState[];
}

/** A probed check: run periodically; a throw is a failure with the error's first line as detail. */
export type Probe = () => CheckResult | Promise<CheckResult>;

/** How often a probe runs and how long it may take. */
export interface ProbeOptions {
  /** Default 2 000 ms. */
  readonly intervalMs?: number;
  /** A probe that has not answered after this long fails. Default 5 000 ms. */
  readonly timeoutMs?: number;
}

/** One transition: a check changed its `ok` value (or appeared). */
export interface ReadinessChange {
  readonly check: CheckState;
  /** The verdict after the change. */
  readonly ready: boolean;
  /** Whether the verdict changed with it. */
  readonly readyChanged: boolean;
}

/** Settings of {@link Readiness}. */
export interface ReadinessOptions {
  readonly clock?: () => number;
}

/** The check that {@link Readiness.shutdown} adds. */
export const SHUTDOWN_CHECK = 'shutdown';

/** Longest detail kept (a detail is one line on `/readyz` and in logs). */
const MAX_DETAIL = 300;

interface ProbeEntry {
  readonly probe: Probe;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  timer: NodeJS.Timeout | undefined;
  running: Promise<void> | undefined;
}

/** Readiness checks of one server; see the module comment. */
export class Readiness {
  readonly #clock: () => number;
  readonly #checks = new Map<string, CheckState>();
  readonly #probes = new Map<string, ProbeEntry>();
  readonly #listeners = new Set<(change: ReadinessChange) => void>();
  #started = false;
  #closed = false;

  constructor(options: ReadinessOptions = {}) {
    this.#clock = options.clock ?? Date.now;
  }

  /**
   * Sets a pushed check (creating it on first use).
   * @param name a short stable name (`revocation`, `storage`, `trust_bundle`): the `check` label and the `/readyz` key
   * @param result ok, and a one-line detail
   */
  set(name: string, result: CheckResult): void {
    assertName(name);
    this.#record(name, result);
  }

  /**
   * Adds a probed check. It counts as failing ("not checked yet") until its
   * first answer; after {@link start} it runs every `intervalMs`.
   * @throws RangeError on a bad name or interval, or a name already used
   */
  addProbe(name: string, probe: Probe, options: ProbeOptions = {}): void {
    assertName(name);
    if (this.#checks.has(name) || this.#probes.has(name)) throw new RangeError(`readiness check '${name}' already exists`);
    const intervalMs = options.intervalMs ?? 2_000;
    const timeoutMs = options.timeoutMs ?? 5_000;
    if (!Number.isSafeInteger(intervalMs) || intervalMs < 10) throw new RangeError('intervalMs must be an integer ≥ 10');
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) throw new RangeError('timeoutMs must be a positive integer');
    const entry: ProbeEntry = { probe, intervalMs, timeoutMs, timer: undefined, running: undefined };
    this.#probes.set(name, entry);
    this.#checks.set(name, { name, ok: false, detail: 'not checked yet', sinceMs: this.#clock(), checkedAtMs: 0 });
    if (this.#started && !this.#closed) this.#schedule(name, entry);
  }

  /** Runs every probe once (and waits for them), then keeps running each on its interval. Idempotent. */
  async start(): Promise<void> {
    if (this.#started || this.#closed) return;
    this.#started = true;
    await this.runProbes();
    for (const [name, entry] of this.#probes) this.#schedule(name, entry);
  }

  /** Runs every probe now (one at a time per probe: a probe still running is awaited, not started twice). */
  async runProbes(): Promise<void> {
    await Promise.all([...this.#probes].map(([name, entry]) => this.#run(name, entry)));
  }

  /** Whether every check is ok. */
  get ready(): boolean {
    for (const c of this.#checks.values()) if (!c.ok) return false;
    return true;
  }

  /** Every check and the verdict. */
  report(): ReadinessReport {
    const checks = [...this.#checks.values()];
    const failing = checks.filter((c) => !c.ok).map((c) => c.name);
    return { ready: failing.length === 0, failing, checks };
  }

  /**
   * Calls `listener` after every transition (a check's `ok` flips, or a check appears).
   * @returns a function that removes it
   */
  onChange(listener: (change: ReadinessChange) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /**
   * Drives grpc.health.v1 statuses: every name in `services` (use `''` for the
   * whole server) is SERVING while ready and NOT_SERVING otherwise, from now on.
   * After {@link shutdown} the reporter is left alone (its own `shutdown()` ends watches).
   */
  bindHealth(health: HealthReporter, services: readonly string[]): void {
    const apply = (): void => {
      const status = this.ready ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
      for (const s of services) if (health.getStatus(s) !== status) health.setStatus(s, status);
    };
    apply();
    this.onChange((change) => {
      if (change.readyChanged && !this.#closed) apply();
    });
  }

  /** Not ready from now on (check `shutdown`), and stops the probes. */
  shutdown(): void {
    if (this.#closed) return;
    this.#record(SHUTDOWN_CHECK, { ok: false, detail: 'shutting down' });
    this.#closed = true;
    this.#stopTimers();
  }

  /** Stops the probes (the states stay as they were). */
  close(): void {
    this.#closed = true;
    this.#stopTimers();
  }

  #stopTimers(): void {
    for (const entry of this.#probes.values()) {
      clearTimeout(entry.timer);
      entry.timer = undefined;
    }
  }

  #schedule(name: string, entry: ProbeEntry): void {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      void this.#run(name, entry).then(() => {
        if (!this.#closed) this.#schedule(name, entry);
      });
    }, entry.intervalMs);
    entry.timer.unref();
  }

  #run(name: string, entry: ProbeEntry): Promise<void> {
    entry.running ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      let result: CheckResult;
      try {
        const timeout = new Promise<CheckResult>((resolve) => {
          timer = setTimeout(() => resolve({ ok: false, detail: `no answer within ${entry.timeoutMs} ms` }), entry.timeoutMs);
          timer.unref();
        });
        result = await Promise.race([Promise.resolve().then(entry.probe), timeout]);
      } catch (error) {
        // A Parley error's line without its "[code] " prefix (RpcError.localDetails, DbError.details); else the message.
        const e = error as { localDetails?: unknown; details?: unknown } | null;
        const line = typeof e?.localDetails === 'string' ? e.localDetails : typeof e?.details === 'string' ? e.details : error instanceof Error ? error.message : String(error);
        result = { ok: false, detail: line };
      } finally {
        clearTimeout(timer);
      }
      if (!this.#closed || name === SHUTDOWN_CHECK) this.#record(name, result);
    })().finally(() => {
      entry.running = undefined;
    });
    return entry.running;
  }

  #record(name: string, result: CheckResult): void {
    if (this.#closed) return;
    const now = this.#clock();
    const before = this.#checks.get(name);
    const wasReady = this.ready;
    const ok = result.ok === true;
    const detail = oneLine(result.detail ?? (ok ? 'ok' : 'failing'));
    const state: CheckState = { name, ok, detail, sinceMs: before !== undefined && before.ok === ok ? before.sinceMs : now, checkedAtMs: now };
    this.#checks.set(name, state);
    if (before !== undefined && before.ok === ok && before.checkedAtMs !== 0) return;
    const ready = this.ready;
    const change: ReadinessChange = { check: state, ready, readyChanged: ready !== wasReady };
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch {
        // a listener (a log line, a health status) must not break the check
      }
    }
  }
}

function assertName(name: string): void {
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(name)) throw new RangeError(`readiness check name must be 1..63 characters of [a-z0-9_] starting with a letter, got '${name}'`);
}

function oneLine(text: string): string {
  const flat = text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  return flat.length > MAX_DETAIL ? `${flat.slice(0, MAX_DETAIL - 1)}…` : flat;
}

/** The two levels {@link logReadiness} writes at (a pino logger has them). */
export interface ReadinessLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

/**
 * Logs readiness transitions: a check's first state at info (a server starts
 * not ready until its data arrives: that is not an incident), later failures
 * at warn and recoveries at info, and each change of the verdict. The
 * shutdown check is not logged (the server logs its own "stopping").
 */
export function logReadiness(readiness: Readiness, log: ReadinessLog): () => void {
  const seen = new Set<string>();
  return readiness.onChange(({ check, ready, readyChanged }) => {
    if (check.name === SHUTDOWN_CHECK) return;
    const first = !seen.has(check.name);
    seen.add(check.name);
    const fields = { check: check.name, ok: check.ok, detail: check.detail };
    if (check.ok) log.info(fields, first ? 'readiness check passes' : 'readiness check passes again');
    else if (first) log.info(fields, 'readiness check fails (not ready yet)');
    else log.warn(fields, 'readiness check fails');
    if (readyChanged) {
      if (ready) log.info({ ready, failing: [] }, 'ready: gRPC health SERVING');
      else log[first ? 'info' : 'warn']({ ready, failing: readiness.report().failing }, 'not ready: gRPC health NOT_SERVING');
    }
  });
}
