/**
 * Output of the operator CLI: human-readable tables by default, stable JSON
 * (snake_case, bytes as hex or base64url, times as ms) with `--json`.
 */
import { toBase64Url, toHex } from '@parley/crypto-core';
import { encodeCertificate, toDidKey } from '@parley/identity';
import { AgentStatus, RevocationReason, type AgentRecord, type Operator, type RevocationListEntry } from '@parley/proto';

/** Renders rows as a left-aligned table with a header; empty cells become "-". */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const cells = rows.map((r) => r.map((c) => (c === '' ? '-' : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

/** Key/value lines, keys aligned. */
export function fields(pairs: readonly (readonly [string, string])[]): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w + 1)}  ${v}`).join('\n');
}

/** ISO 8601 UTC time of ms since the epoch. */
export function time(ms: bigint | number): string {
  const n = Number(ms);
  return n === 0 ? '' : new Date(n).toISOString().replace('.000Z', 'Z');
}

/** `active`, `revoked`, `expired`. */
export function statusName(status: AgentStatus): string {
  return (AgentStatus[status] ?? `status_${status}`).toLowerCase();
}

/** `key_compromise`, … */
export function reasonName(reason: RevocationReason): string {
  return (RevocationReason[reason] ?? `reason_${reason}`).toLowerCase();
}

/** The JSON view of an agent. */
export function agentJson(a: AgentRecord): Record<string, unknown> {
  const c = a.certificate;
  return {
    agent_id: a.agentId,
    agent_type: a.agentType,
    capabilities: a.capabilities,
    status: statusName(a.status),
    revocation_version: Number(a.revocationVersion),
    registered_at_ms: Number(a.registeredAtMs),
    updated_at_ms: Number(a.updatedAtMs),
    certificate:
      c === undefined
        ? null
        : {
            serial: toHex(c.serial),
            identity_public_key: toBase64Url(c.identityPublicKey),
            did_key: toDidKey(c.identityPublicKey),
            valid_from_ms: Number(c.validFromMs),
            valid_until_ms: Number(c.validUntilMs),
            issuer_key_id: toHex(c.issuerKeyId),
            encoded: toBase64Url(encodeCertificate(c)),
          },
  };
}

/** One table row of an agent. */
export function agentRow(a: AgentRecord): string[] {
  return [a.agentId, a.agentType, statusName(a.status), a.capabilities.join(','), time(a.certificate?.validUntilMs ?? 0)];
}

/** Header of {@link agentRow}. */
export const AGENT_HEADERS = ['AGENT ID', 'TYPE', 'STATUS', 'CAPABILITIES', 'VALID UNTIL'] as const;

/** Key/value view of one agent. */
export function agentFields(a: AgentRecord, extra: readonly (readonly [string, string])[] = []): string {
  const c = a.certificate;
  return fields([
    ['agent id', a.agentId],
    ['type', a.agentType],
    ['capabilities', a.capabilities.join(', ') || '-'],
    ['status', statusName(a.status) + (a.revocationVersion > 0n ? ` (revocation version ${a.revocationVersion})` : '')],
    ['serial', c === undefined ? '-' : toHex(c.serial)],
    ['identity key', c === undefined ? '-' : toDidKey(c.identityPublicKey)],
    ['valid from', c === undefined ? '-' : time(c.validFromMs)],
    ['valid until', c === undefined ? '-' : time(c.validUntilMs)],
    ['issuer key id', c === undefined ? '-' : toHex(c.issuerKeyId)],
    ['registered', time(a.registeredAtMs)],
    ['updated', time(a.updatedAtMs)],
    ...extra,
  ]);
}

/** The subject of a revocation entry as text. */
export function subjectText(e: RevocationListEntry): string {
  return e.subject.case === 'agentId' ? `agent ${e.subject.value}` : e.subject.case === 'serial' ? `serial ${toHex(e.subject.value)}` : '?';
}

/** The JSON view of a revocation entry. */
export function entryJson(e: RevocationListEntry): Record<string, unknown> {
  return {
    version: Number(e.version),
    ...(e.subject.case === 'agentId' ? { agent_id: e.subject.value } : e.subject.case === 'serial' ? { serial: toHex(e.subject.value) } : {}),
    reason: reasonName(e.reason),
    reason_text: e.reasonText,
    revoked_at_ms: Number(e.revokedAtMs),
    entry_hash: toHex(e.entryHash),
  };
}

/** One table row of a revocation entry. */
export function entryRow(e: RevocationListEntry): string[] {
  return [String(e.version), subjectText(e), reasonName(e.reason), e.reasonText, time(e.revokedAtMs)];
}

/** Header of {@link entryRow}. */
export const ENTRY_HEADERS = ['VERSION', 'SUBJECT', 'REASON', 'DETAIL', 'REVOKED AT'] as const;

/** The JSON view of an operator. */
export function operatorJson(o: Operator): Record<string, unknown> {
  return {
    key_id: toHex(o.keyId),
    public_key: toBase64Url(o.publicKey),
    name: o.name,
    added_at_ms: Number(o.addedAtMs),
    added_by_key_id: o.addedByKeyId.length === 0 ? null : toHex(o.addedByKeyId),
  };
}

const DURATION_UNITS: Readonly<Record<string, number>> = Object.freeze({ ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 });

/**
 * Parses a duration: a whole number with a unit (`500ms`, `30s`, `10m`, `2h`, `7d`), or plain milliseconds.
 * @returns milliseconds, or undefined for anything else
 */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d{1,12})(ms|s|m|h|d)?$/.exec(text.trim());
  if (m === null) return undefined;
  const ms = Number(m[1]) * DURATION_UNITS[m[2] ?? 'ms']!;
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** A duration for people: `90 s`, `10 min`, `3 h`, `7 d`. */
export function durationText(ms: number): string {
  if (ms % 86_400_000 === 0 && ms >= 86_400_000) return `${ms / 86_400_000} d`;
  if (ms % 3_600_000 === 0 && ms >= 3_600_000) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}
