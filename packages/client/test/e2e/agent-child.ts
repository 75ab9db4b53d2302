// An @parley/client agent in its own process, for crash tests (SIGKILL at any
// point). Configured by a JSON file (argv[2]); driven by JSON lines on stdin:
//   {"op":"send","to":"worker-1","content":{...},"id":"optional-send-id","timeoutMs":optional}
//   {"op":"burst","to":"worker-1","content":{"n":N,"tag":"…"}}   N sends at once
//   {"op":"pending"}        report how many sends wait for a receipt, and each one's state
//   {"op":"ack"}            acknowledge every message received so far
// and reporting JSON lines on stdout:
//   {"ev":"ready"} {"ev":"received","content":…,"redelivered":bool,"hash":hex}
//   {"ev":"receipt","id":…,"hash":hex,"signer":…} {"ev":"send_failed","id":…,"code":…} {"ev":"event",…}
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { connect, fileStateStore, type ReceivedMessage } from '../../src/index.js';
import { SecretKey, createCrypto, fromBase64Url, toHex } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { AgentCertificateSchema, MessageType, fromBinary } from '@parley/proto';

interface ChildConfig {
  readonly gateway: string;
  readonly gatewayId: string;
  readonly agentId: string;
  readonly signingKey: string;
  readonly certificate: string;
  readonly issuerPublicKey: string;
  readonly stateFile: string;
  readonly stateKey: string;
  readonly autoAck: boolean;
  readonly rekeyThreshold?: number;
}

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildConfig;
const out = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

const crypto = await createCrypto();
const agent = await connect({
  gateway: config.gateway,
  expectedGatewayId: config.gatewayId,
  identity: {
    agentId: config.agentId,
    signingKey: SecretKey.from(fromBase64Url(config.signingKey), 'ed25519'),
    certificate: fromBinary(AgentCertificateSchema, fromBase64Url(config.certificate)),
  },
  trustBundle: TrustBundle.from(crypto, [{ publicKey: fromBase64Url(config.issuerPublicKey) }]),
  crypto,
  stateStore: fileStateStore(config.stateFile),
  stateKey: SecretKey.from(fromBase64Url(config.stateKey), 'aead'),
  reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
  resendIntervalMs: 300,
  ...(config.rekeyThreshold === undefined ? {} : { rekeyThreshold: config.rekeyThreshold }),
  sendTimeoutMs: 60_000,
  onEvent: (e) => {
    if (e.kind === 'send_settled') out({ ev: 'settled', id: e.id, outcome: e.outcome });
    else if (e.kind === 'security' || e.kind === 'state_error' || e.kind === 'resealed') out({ ev: 'event', kind: e.kind, code: 'code' in e ? e.code : undefined });
  },
});
const received: ReceivedMessage[] = [];
void (async () => {
  for await (const m of agent.messages()) {
    received.push(m);
    out({ ev: 'received', content: m.content, redelivered: m.redelivered, hash: toHex(m.messageHash) });
    if (config.autoAck) await m.ack();
  }
})();
out({ ev: 'ready', pending: agent.pendingSends().length });

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { op: string; to?: string; content?: unknown; id?: string; timeoutMs?: number };
  if (cmd.op === 'send') {
    const id = cmd.id;
    agent.send(cmd.to!, MessageType.TASK_ASSIGNMENT, cmd.content as never, { ...(id === undefined ? {} : { id }), ...(cmd.timeoutMs === undefined ? {} : { timeoutMs: cmd.timeoutMs }) }).then(
      (r) => out({ ev: 'receipt', id, hash: toHex(r.messageHash), signer: r.recipientId }),
      (e: { code?: string }) => out({ ev: 'send_failed', id, code: e.code }),
    );
  } else if (cmd.op === 'burst') {
    // Many sends at once, not awaited (a crash test kills the process in the middle).
    const { n, tag } = cmd.content as { n: number; tag: string };
    for (let i = 0; i < n; i++) void agent.send(cmd.to!, MessageType.STATUS_UPDATE, { tag, i }).catch(() => undefined);
  } else if (cmd.op === 'pending') {
    out({ ev: 'pending', n: agent.pendingSends().length, states: agent.pendingSends().map((p) => `${p.id}:${p.state}`) });
  } else if (cmd.op === 'ack') {
    for (const m of received.splice(0)) await m.ack();
    out({ ev: 'acked' });
  }
}
