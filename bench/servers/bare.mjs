// The ingress baseline: a bare node:http server with the ingress's server options that reads
// the whole body and answers 200. With `--xadd <redis-url>` it also appends the body with one
// auto-pipelined XADD before answering (the "raw XADD" baseline: Redis without mirrorplane).
import { createServer } from 'node:http';
import { Redis } from 'ioredis';

const xaddAt = process.argv.indexOf('--xadd');
const redis = xaddAt === -1 ? null : new Redis(process.argv[xaddAt + 1], { enableAutoPipelining: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
redis?.on('error', () => undefined);
const ACK = { 'content-length': '0' };

const server = createServer({ keepAlive: true, keepAliveTimeout: 75_000, noDelay: true }, (req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    if (redis === null) {
      res.writeHead(200, ACK).end();
      return;
    }
    redis.xadd('bench:raw', '*', 'b', body).then(
      () => res.writeHead(200, ACK).end(),
      () => res.writeHead(503, ACK).end(),
    );
  });
});
process.on('message', async (cmd) => {
  if (cmd === 'reset' && redis) await redis.del('bench:raw');
  process.send?.({ ok: true });
});
process.on('SIGTERM', () => {
  redis?.disconnect();
  server.close();
  server.closeAllConnections();
  process.disconnect?.();
});
if (redis) await new Promise((r) => redis.once('ready', r));
server.listen(0, '127.0.0.1', () => process.send?.({ ready: server.address().port }));
