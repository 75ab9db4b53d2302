// An agent program shaped like the README's (registry followed, a file state store, a `messages()` loop), in its
// own process, for the permanent-stop test (stop.spec.ts): it reads nothing from stdin and arms no timer of its
// own, so it ends only when the agent lets go of everything. Configured by a JSON file (argv[2]); reports JSON
// lines on stdout: {"ev":"ready"}, {"ev":"event","kind":…,"code":…}, {"ev":"messages_threw","code":…},
// {"ev":"messages_ended"}, {"ev":"ack_failed","code":…}.
import { readFileSync } from 'node:fs';
import { connect, fileStateStore, isClientError } from '../../src/index.js';
import { SecretKey, createCrypto, fromBase64Url } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';

interface StopChildConfig {
  readonly gateway: string;
  readonly gatewayId: string;
  readonly registry: string;
  readonly trustBundleFile: string;
  readonly agentId: string;
  readonly seed: string;
  readonly certificate: string;
  readonly stateFile: string;
  readonly stateKey: string;
}

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as StopChildConfig;
const out = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

const crypto = await createCrypto();
const agent = await connect({
  gateway: config.gateway,
  expectedGatewayId: config.gatewayId,
  identity: {
    agentId: config.agentId,
    signingKey: crypto.ed25519.keyPairFromSeed(fromBase64Url(config.seed)).secretKey,
    certificate: decodeCertificate(fromBase64Url(config.certificate)),
  },
  trustBundle: TrustBundle.fromJSON(crypto, readFileSync(config.trustBundleFile, 'utf8')),
  registry: { address: config.registry },
  stateStore: fileStateStore(config.stateFile),
  stateKey: SecretKey.from(fromBase64Url(config.stateKey), 'aead'),
  crypto,
  onEvent: (e) => {
    if (e.kind === 'disconnected' || e.kind === 'state_error') out({ ev: 'event', kind: e.kind, code: e.error.code });
  },
});
out({ ev: 'ready' });
try {
  for await (const msg of agent.messages()) {
    await msg.ack().catch((error: unknown) => out({ ev: 'ack_failed', code: isClientError(error) ? error.code : String(error) }));
  }
  out({ ev: 'messages_ended' });
} catch (error) {
  out({ ev: 'messages_threw', code: isClientError(error) ? error.code : String(error) });
}
