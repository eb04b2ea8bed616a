// A fast h2c (HTTP/2 with prior knowledge) server: reads each stream's body and answers like a
// gRPC server (`:status 200`, trailer `grpc-status: 0`, no message). It counts streams, with
// the first and last receive time. Plays the bare baseline of h2c intake and the h2c staging
// of HTTP/2 replay. Same IPC as staging.mjs (`{ ready: port }`, 'reset', 'stats').
import { createServer } from 'node:http2';

let count = 0;
let first = 0;
let last = 0;
const now = () => performance.timeOrigin + performance.now();

const server = createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (stream) => {
  const at = now();
  if (count === 0) first = at;
  count += 1;
  stream.on('error', () => undefined);
  stream.on('data', () => undefined);
  stream.on('end', () => {
    last = now();
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end();
  });
});

process.on('message', (cmd) => {
  if (cmd === 'reset') {
    count = 0;
    first = 0;
    last = 0;
    process.send({ ok: true });
  } else {
    process.send({ count, first, last });
  }
});
process.on('SIGTERM', () => {
  server.close();
  process.disconnect?.();
  setTimeout(() => process.exit(0), 200).unref();
});
server.listen(0, '127.0.0.1', () => process.send({ ready: server.address().port }));
