#!/usr/bin/env node
// Redis memory per backlog entry: 100k entries of a 1 KiB request appended through the real
// codec (as the ingress writes them), measured with INFO memory (used_memory before/after)
// and MEMORY USAGE of the stream (SAMPLES 0: every node counted). The overhead is what an
// entry costs beyond the request's own bytes on the wire.
//
//   node bench/redis-memory.mjs [--json] [--entries=N]
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { startRedis, stopAll } from './support/processes.mjs';
import { parseArgs, table, writeResults } from './support/report.mjs';
import { benchBody, benchRawHeaders, wireBytes } from './support/request.mjs';

const args = parseArgs();
const entries = Number(args.extra.entries ?? 100_000);
const redis = await startRedis();
const client = redis.client();

const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);

try {
  const keys = keysFor('bench-memory');
  const body = benchBody();
  const rawHeaders = benchRawHeaders();
  const request = { method: 'POST', target: '/orders', rawHeaders, body, receivedAt: Date.now(), requestId: null, clientAddress: '127.0.0.1' };
  const requestBytes = wireBytes('POST', '/orders', rawHeaders, body);
  const fields = encodeEntryFields(request);
  const fieldBytes = fields.reduce((n, f) => n + Buffer.byteLength(f), 0);
  // The group exists as in production (the ingress creates it); entries not yet read have no
  // pending-list cost, which is what a backlog is.
  await client.xgroup('CREATE', keys.stream, keys.group, '0', 'MKSTREAM');
  const before = await usedMemory();
  for (let done = 0; done < entries;) {
    const pipeline = client.pipeline();
    const n = Math.min(1000, entries - done);
    for (let i = 0; i < n; i += 1) pipeline.xadd(keys.stream, '*', ...encodeEntryFields({ ...request, receivedAt: Date.now() }));
    await pipeline.exec();
    done += n;
  }
  const after = await usedMemory();
  const usage = Number(await client.call('MEMORY', 'USAGE', keys.stream, 'SAMPLES', '0'));
  const config = await client.config('GET', 'stream-node-max-*');
  const perEntryInfo = (after - before) / entries;
  const perEntryUsage = usage / entries;
  const summary = {
    entries,
    requestBytes,
    fieldBytes,
    perEntryInfo,
    perEntryUsage,
    overheadInfo: perEntryInfo - requestBytes,
    overheadUsage: perEntryUsage - requestBytes,
    streamNodeConfig: Object.fromEntries(config.reduce((a, v, i) => (i % 2 ? a : [...a, [v, config[i + 1]]]), [])),
  };
  console.log(`redis memory — ${entries} backlog entries of a 1 KiB POST (request ${requestBytes} B on the wire, ${fieldBytes} B of stream fields)\n`);
  console.log(
    table([
      ['measure', 'bytes/entry', 'overhead beyond the request'],
      ['INFO memory (used_memory delta)', perEntryInfo, summary.overheadInfo],
      ['MEMORY USAGE stream SAMPLES 0', perEntryUsage, summary.overheadUsage],
    ]),
  );
  summary.overhead = Math.max(summary.overheadInfo, summary.overheadUsage);
  console.log(`\ngoal: ≤ request bytes + 200 B per entry (${summary.overhead.toFixed(0)} B over, the larger of the two measures)`);
  writeResults('redis-memory', { summary }, args);
} finally {
  await client.quit().catch(() => undefined);
  await stopAll();
}
