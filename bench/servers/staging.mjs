// A fast staging server: reads each request body and answers 200 with no body. It counts
// requests and, when asked, keeps the receive time of every request by its x-request-id
// (milliseconds since the epoch, sub-millisecond: `performance.timeOrigin + performance.now()`).
import { createServer } from 'node:http';

let count = 0;
let first = 0;
let last = 0;
let record = false;
let receipts = new Map();
const now = () => performance.timeOrigin + performance.now();

const server = createServer({ keepAlive: true, keepAliveTimeout: 75_000, noDelay: true }, (req, res) => {
  const at = now();
  if (count === 0) first = at;
  count += 1;
  if (record) {
    const id = req.headers['x-request-id'];
    if (typeof id === 'string' && !receipts.has(id)) receipts.set(id, at);
  }
  req.on('data', () => undefined);
  req.on('end', () => {
    last = now();
    res.writeHead(200, { 'content-length': '0' }).end();
  });
});

process.on('message', (cmd) => {
  switch (cmd) {
    case 'reset':
      count = 0;
      first = 0;
      last = 0;
      receipts = new Map();
      process.send({ ok: true });
      break;
    case 'record':
      record = true;
      receipts = new Map();
      process.send({ ok: true });
      break;
    case 'receipts':
      process.send({ receipts: [...receipts] });
      record = false;
      receipts = new Map();
      break;
    default:
      process.send({ count, first, last });
  }
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.disconnect?.();
});
server.listen(0, '127.0.0.1', () => process.send({ ready: server.address().port }));
