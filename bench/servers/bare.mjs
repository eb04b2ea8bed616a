// The ingress baseline: a bare node:http server with the ingress's server options that reads
// the whole body and answers 200. With `--xadd <redis-url>` it also appends the body with one
// auto-pipelined XADD before answering (the "raw XADD" baseline: Redis without mirrorplane).
// With `--cork` too, auto-pipelining is off and the Redis socket is corked for the rest of the
// event-loop turn instead, as the ingress writes: the technique alone, measured.
import { createServer } from 'node:http';
import { Redis } from 'ioredis';

const xaddAt = process.argv.indexOf('--xadd');
const cork = process.argv.includes('--cork');
const redis = xaddAt === -1 ? null : new Redis(process.argv[xaddAt + 1], { enableAutoPipelining: !cork, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
let corked = null;
const uncork = () => {
  const socket = corked;
  corked = null;
  socket?.uncork();
};
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
    if (cork && corked === null && redis.stream) {
      corked = redis.stream;
      corked.cork();
      setImmediate(uncork);
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
