import { describe, expect, it } from 'vitest';
import { GatewayMetrics } from './metrics.js';

describe('GatewayMetrics mailbox totals', () => {
  it('reads the totals row once per scrape for both gauges, again a second later, and keeps the last value when the read fails', async () => {
    let now = 1_000_000;
    let reads = 0;
    let fail = false;
    const metrics = new GatewayMetrics({
      connectedAgents: () => 0,
      mailboxDepth: () => Promise.resolve(0),
      mailboxTotals: () => {
        reads++;
        return fail ? Promise.reject(new Error('database down')) : Promise.resolve({ items: reads * 10, bytes: reads * 1000 });
      },
      clock: () => now,
    });
    const scrape = (): Promise<string> => metrics.registry.metrics();
    let text = await scrape();
    expect(reads).toBe(1);
    expect(text).toMatch(/parley_gateway_mailbox_items 10\b/);
    expect(text).toMatch(/parley_gateway_mailbox_bytes 1000\b/);
    now += 999;
    await scrape();
    expect(reads).toBe(1);
    now += 1;
    text = await scrape();
    expect(reads).toBe(2);
    expect(text).toMatch(/parley_gateway_mailbox_items 20\b/);
    fail = true;
    now += 1_000;
    text = await scrape();
    expect(reads).toBe(3);
    expect(text).toMatch(/parley_gateway_mailbox_items 20\b/);
    expect(text).toMatch(/parley_gateway_mailbox_bytes 2000\b/);
  });
});
