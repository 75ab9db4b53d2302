// Reading a gateway's /metrics from a load test (the gateway runs in its own process).

/** What the batching tests read: parley_gateway_deliveries_per_frame's sum and count, and the mailbox depth (all recipients). */
export interface FrameMetrics {
  readonly sum: number;
  readonly count: number;
  readonly depth: number;
}

/** One scrape of `metricsUrl`. */
export async function scrapeFrames(metricsUrl: string): Promise<FrameMetrics> {
  const text = await (await fetch(metricsUrl)).text();
  const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { sum: value('parley_gateway_deliveries_per_frame_sum'), count: value('parley_gateway_deliveries_per_frame_count'), depth: value('parley_gateway_mailbox_depth') };
}

/** Scrapes until `check` holds (every 50 ms, at most `ms`); the last scrape. */
export async function scrapeFramesUntil(metricsUrl: string, check: (m: FrameMetrics) => boolean, ms: number, what: string): Promise<FrameMetrics> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = await scrapeFrames(metricsUrl);
    if (check(m)) return m;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(m)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
