import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { RequestParser, type ParsedRequest } from '@mirrorplane/ingress';
import { RawRecordingServer, RedisServer, Stack, expectedStagingHeaders, freePort, waitFor, type RawReceived } from '../helpers/index.js';
import { startNginx, type NginxMirror } from '../helpers/nginx.js';

/**
 * The oracle of issue 13: unusual-but-valid requests go through real nginx (`mirror` on, as
 * shipped) to a production server and to the ingress; per request, the bytes staging received
 * must equal the bytes production received, minus hop-by-hop fields and with the documented
 * changes (Host, x-mirrorplane-id/-attempt, framing values true to the body). Production and
 * staging are raw servers (node:http refuses unknown methods and obs-text targets).
 *
 * Shapes nginx itself refuses or alters before production sees them (lower-case and hyphenated
 * method tokens, request trailers, which nginx drops) are sent straight to the ingress as a
 * proxy that forwards them would send them; the reference is then the request as sent.
 */

let redis: RedisServer;
let production: RawRecordingServer;
let staging: RawRecordingServer;
let stack: Stack;
let nginx: NginxMirror;
let adminPort: number;

before(async () => {
  redis = await RedisServer.start();
  production = await RawRecordingServer.start();
  staging = await RawRecordingServer.start();
  adminPort = await freePort();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 1, ingressEnv: { ADMIN_PORT: String(adminPort) } });
  // nginx's default header buffers (4 8k) refuse heads over 32 KiB; production here takes 64 KiB lines.
  nginx = await startNginx({ productionPort: production.port, mirrorPort: stack.ingressPort, largeClientHeaderBuffers: '16 64k' });
});

after(async () => {
  await nginx?.stop();
  await stack?.close();
  await staging?.close();
  await production?.close();
  await redis?.close();
});

/** Writes `bytes` on one connection (the last request closes it) and returns the statuses answered, 100 Continue left out. */
function exchange(port: number, bytes: Buffer, continueWith?: Buffer): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let continued = false;
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      // Expect: 100-continue: the body goes only once the interim answer came.
      if (continueWith && !continued && Buffer.concat(chunks).includes('100 Continue')) {
        continued = true;
        socket.write(continueWith);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      resolve([...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1])).filter((s) => s !== 100));
    });
    socket.write(bytes);
  });
}

function head(method: string, target: string, fields: string[], version = 'HTTP/1.1'): string {
  let h = `${method} ${target} ${version}\r\n`;
  for (let i = 0; i < fields.length; i += 2) h += `${fields[i]}: ${fields[i + 1]}\r\n`;
  return `${h}\r\n`;
}

const b = (s: string) => Buffer.from(s, 'latin1');
const idOf = (raw: readonly string[]) => {
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === 'x-request-id') return raw[i + 1];
  return undefined;
};

/** Asserts that staging received `reference` as the contract says, byte for byte. */
function assertReplayed(name: string, reference: { method: string; target: string; rawHeaders: string[]; body: Buffer; trailers: string[] }, id: string): void {
  const atStaging = staging.received.filter((r) => idOf(r.rawHeaders) === id);
  assert.equal(atStaging.length, 1, `${name}: staging received ${id} once`);
  const s = atStaging[0] as RawReceived;
  assert.equal(s.method, reference.method, `${name}: method`);
  assert.equal(s.target, reference.target, `${name}: request-target, byte for byte`);
  assert.ok(s.body.equals(reference.body), `${name}: body (${s.body.length} vs ${reference.body.length} bytes)`);
  assert.deepEqual(s.trailers, reference.trailers, `${name}: trailers`);
  const entryId = s.rawHeaders[s.rawHeaders.indexOf('x-mirrorplane-id') + 1] as string;
  assert.deepEqual(
    s.rawHeaders,
    expectedStagingHeaders(reference.rawHeaders, { host: `127.0.0.1:${staging.port}`, entryId, bodyLength: reference.body.length }),
    `${name}: fields in received case and order`,
  );
}

const stagingHost = () => `127.0.0.1:${staging.port}`;

test('through nginx: every unusual-but-valid request reaches staging as production received it', async () => {
  const cookie = (n: number) => `c${n}=${'x'.repeat(13_000)}`;
  const many: string[] = [];
  for (let i = 0; i < 2000; i++) many.push(i % 3 === 0 ? `X-Field-${i}` : `x-field-${i}`, `v${i}`);
  const xml = '<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>';
  const cases: { name: string; bytes: Buffer; continueWith?: Buffer; count?: number }[] = [
    { name: 'BAN', bytes: b(head('BAN', '/cache/item-1', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-ban'])) },
    { name: 'PURGE', bytes: b(head('PURGE', '/cache/item-2?all=1', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-purge'])) },
    { name: 'REFRESH', bytes: b(head('REFRESH', '/cache/item-3', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-refresh'])) },
    { name: 'custom token', bytes: b(head('FROBNICATE', '/in-house', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-custom'])) },
    {
      name: 'PROPFIND',
      bytes: b(
        head('PROPFIND', '/dav/files/', [
          'Host',
          'dav.example.com',
          'X-Request-ID',
          'ft-propfind',
          'Depth',
          '1',
          'Content-Type',
          'application/xml',
          'Content-Length',
          String(xml.length),
        ]) + xml,
      ),
    },
    { name: 'MKCOL', bytes: b(head('MKCOL', '/dav/new-folder/', ['Host', 'dav.example.com', 'X-Request-ID', 'ft-mkcol'])) },
    {
      name: 'COPY',
      bytes: b(
        head('COPY', '/dav/a.txt', ['Host', 'dav.example.com', 'X-Request-ID', 'ft-copy', 'Destination', 'http://dav.example.com/dav/b.txt', 'Overwrite', 'F']),
      ),
    },
    { name: 'REPORT', bytes: b(head('REPORT', '/cal/home/', ['Host', 'dav.example.com', 'X-Request-ID', 'ft-report', 'Content-Length', '4']) + 'q=1\n') },
    {
      name: 'obs-text',
      bytes: b(
        head('GET', '/caf\xe9/na\xefve?q=\xff\xfe&r=\xc3\xa9', [
          'Host',
          'shop.example.com',
          'X-Request-ID',
          'ft-obs',
          'X-Latin',
          'caf\xe9 \xff end',
          'X-Invalid-Utf8',
          '\xc3\x28\xa0\xa1',
        ]),
      ),
    },
    // nginx refuses a bad escape in the path (400) and passes it in the query.
    {
      name: 'bad percent-escapes in the query',
      bytes: b(head('GET', '/files/a%2Fb?x=%G1&y=%&z=%zz%', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-percent'])),
    },
    {
      name: '40 KB head',
      bytes: b(
        head('GET', '/big-head', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-bighead', 'Cookie', cookie(1), 'Cookie', cookie(2), 'Cookie', cookie(3)]),
      ),
    },
    // nginx refuses more than about 900 field lines ("too many header lines"); 2,000 go straight to the ingress below.
    { name: '900 fields', bytes: b(head('GET', '/many-fields', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-many', ...many.slice(0, 1800)])) },
    {
      name: 'duplicates differing in case',
      bytes: b(
        head('GET', '/dups', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-dups', 'X-Dup', '1', 'x-dup', '2', 'X-DUP', '3', 'Accept', 'a', 'accept', 'b']),
      ),
    },
    {
      name: 'Expect: 100-continue',
      bytes: b(head('PUT', '/upload', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-expect', 'Expect', '100-continue', 'Content-Length', '11'])),
      continueWith: b('hello world'),
    },
    { name: 'HTTP/1.0 with Host', bytes: b(head('GET', '/old', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-http10-host'], 'HTTP/1.0')) },
    { name: 'HTTP/1.0 without Host', bytes: b(head('GET', '/old-nohost', ['X-Request-ID', 'ft-http10-nohost'], 'HTTP/1.0')) },
    {
      name: 'GET with a body',
      bytes: b(
        head('GET', '/search', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-get-body', 'Content-Type', 'application/json', 'Content-Length', '13']) +
          '{"q":"query"}',
      ),
    },
    {
      name: 'DELETE with a body',
      bytes: b(head('DELETE', '/items', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-delete-body', 'Content-Length', '9']) + '[1, 2, 3]'),
    },
    {
      name: 'pipelined',
      bytes: b(
        head('POST', '/pipe/1', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-pipe-1', 'Content-Length', '3']) +
          'one' +
          head('BAN', '/pipe/2', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-pipe-2']) +
          head('POST', '/pipe/3', ['Host', 'shop.example.com', 'X-Request-ID', 'ft-pipe-3', 'Transfer-Encoding', 'chunked']) +
          '5\r\nthree\r\n0\r\n\r\n',
      ),
      count: 3,
    },
  ];
  const refusedByNginx: string[] = [];
  for (const c of cases) {
    // Each case closes its connection with its last request (Connection: close).
    const bytes = Buffer.concat([c.bytes]);
    const statuses = await exchange(
      nginx.port,
      Buffer.concat([bytes, b(head('GET', '/__close', ['Host', 'x', 'X-Request-ID', `close-${c.name}`, 'Connection', 'close']))]),
      c.continueWith,
    );
    if (statuses[0] !== 200) refusedByNginx.push(`${c.name}: ${statuses.join(',')}`);
  }
  assert.deepEqual(refusedByNginx, [], 'nginx passed every case to production');

  const ids = production.received.map((r) => idOf(r.rawHeaders)).filter((id): id is string => id !== undefined && id.startsWith('ft-'));
  assert.equal(
    ids.length,
    cases.reduce((n, c) => n + (c.count ?? 1), 0),
    'production served each request once',
  );
  await waitFor(`staging to receive ${ids.length} replays`, () => ids.every((id) => staging.received.some((r) => idOf(r.rawHeaders) === id)), 90_000);
  for (const id of ids) {
    const p = production.received.find((r) => idOf(r.rawHeaders) === id) as RawReceived;
    assertReplayed(id, p, id);
  }
  assert.deepEqual(staging.refused, [], 'staging could parse every replay');
});

/** The reference for a request sent straight to the ingress: the request as framed. */
function parsed(bytes: Buffer): ParsedRequest[] {
  const parser = new RequestParser({ maxHeaderBytes: 1024 * 1024, maxBodyBytes: 1024 * 1024 });
  parser.feed(bytes);
  const out: ParsedRequest[] = [];
  for (let e = parser.next(); e !== null; e = parser.next()) if (e.kind === 'request') out.push(e.request);
  return out;
}

async function metric(name: string, reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{reason="${reason}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

test('straight to the ingress: shapes nginx refuses or alters are replayed as received', async () => {
  const many: string[] = [];
  for (let i = 0; i < 2000; i++) many.push(i % 3 === 0 ? `X-Field-${i}` : `x-field-${i}`, `v${i}`);
  // Each of these nginx refuses (400) before production sees it; a proxy that forwards them sends them so.
  const cases: { name: string; bytes: Buffer }[] = [
    { name: '2,000 fields', bytes: b(head('GET', '/many-fields', ['Host', 'a.example', 'X-Request-ID', 'in-many', ...many])) },
    { name: 'bad percent-escapes in the path', bytes: b(head('GET', '/files/%zz/%/a%2?x=%G1', ['Host', 'a.example', 'X-Request-ID', 'in-percent'])) },
    { name: 'token with a digit', bytes: b(head('FROBNICATE_V2', '/in-house', ['Host', 'a.example', 'X-Request-ID', 'in-digit'])) },
    { name: 'lower-case token', bytes: b(head('m-search', '/upnp', ['Host', '239.255.255.250:1900', 'X-Request-ID', 'in-msearch', 'MAN', '"ssdp:discover"'])) },
    { name: 'token with symbols', bytes: b(head("X-CUSTOM!#$%&'*+.^_`|~", '/x', ['Host', 'a.example', 'X-Request-ID', 'in-symbols'])) },
    {
      name: 'trailers',
      bytes: b(
        head('POST', '/stream', ['Host', 'a.example', 'X-Request-ID', 'in-trailers', 'Trailer', 'X-Checksum, Server-Timing', 'Transfer-Encoding', 'chunked']) +
          '4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Checksum: sha256=abc\r\nserver-timing: db;dur=53\r\n\r\n',
      ),
    },
    { name: 'OPTIONS *', bytes: b(head('OPTIONS', '*', ['Host', 'a.example', 'X-Request-ID', 'in-options-star'])) },
    { name: 'HTTP/1.1 without Host', bytes: b(head('GET', '/no-host', ['X-Request-ID', 'in-nohost'])) },
    { name: 'HTTP/1.0 keep-alive', bytes: b(head('GET', '/old-ka', ['X-Request-ID', 'in-http10-ka', 'Connection', 'keep-alive'], 'HTTP/1.0')) },
    {
      name: 'absolute-form keeps its path only',
      bytes: b(head('GET', 'http://elsewhere.example/abs?x=1', ['Host', 'a.example', 'X-Request-ID', 'in-absolute'])),
    },
  ];
  for (const c of cases) {
    const statuses = await exchange(stack.ingressPort, Buffer.concat([c.bytes, b(head('GET', '/__close', ['Host', 'x', 'Connection', 'close']))]));
    assert.deepEqual(statuses, [200, 200], `${c.name}: accepted`);
  }
  // Pipelined with 100-continue on one kept-alive connection, answered in order.
  const pipelined = b(
    head('PUT', '/p/1', ['Host', 'a.example', 'X-Request-ID', 'in-pipe-1', 'Content-Length', '1']) +
      '1' +
      head('BAN', '/p/2', ['Host', 'a.example', 'X-Request-ID', 'in-pipe-2']) +
      head('POST', '/p/3', ['Host', 'a.example', 'X-Request-ID', 'in-pipe-3', 'Transfer-Encoding', 'chunked']) +
      '1\r\n3\r\n0\r\nX-T: 3\r\n\r\n',
  );
  assert.deepEqual(
    await exchange(stack.ingressPort, Buffer.concat([pipelined, b(head('GET', '/__close', ['Host', 'x', 'Connection', 'close']))])),
    [200, 200, 200, 200],
  );
  const expectHead = b(
    head('PUT', '/continue', ['Host', 'a.example', 'X-Request-ID', 'in-expect', 'Expect', '100-continue', 'Content-Length', '5', 'Connection', 'close']),
  );
  assert.deepEqual(await exchange(stack.ingressPort, expectHead, b('later')), [200], 'the body is sent after the ingress answered 100 Continue');

  const sent = [...cases.map((c) => c.bytes), pipelined, Buffer.concat([expectHead, b('later')])].flatMap(parsed);
  await waitFor(
    'staging to receive the direct cases',
    () => sent.every((r) => staging.received.some((s) => idOf(s.rawHeaders) === idOf(r.rawHeaders))),
    90_000,
  );
  for (const r of sent) {
    const id = idOf(r.rawHeaders) as string;
    // An absolute-form target loses its authority (documented): the replay cannot be pointed elsewhere.
    const target = r.target.startsWith('http://') ? r.target.slice('http://elsewhere.example'.length) : r.target;
    assertReplayed(id, { ...r, target }, id);
  }
  const noHost = staging.received.find((s) => idOf(s.rawHeaders) === 'in-nohost') as RawReceived;
  assert.deepEqual(noHost.rawHeaders.slice(-6, -4), ['host', stagingHost()], 'a request without Host gets the staging host, appended');
});

test('what cannot be replayed as received is refused at intake with a counted reason', async () => {
  const before = {
    unsupported: await metric('mirrorplane_ingress_requests_dropped_total', 'unsupported'),
    bad_request: await metric('mirrorplane_ingress_requests_dropped_total', 'bad_request'),
  };
  const refused: [string, number][] = [
    [head('POST', '/gz', ['Host', 'a', 'Transfer-Encoding', 'gzip, chunked']) + '0\r\n\r\n', 400],
    [head('CONNECT', 'a.example:443', ['Host', 'a.example:443']), 405],
    [head('GET', '*', ['Host', 'a']), 400],
    [head('POST', '/', ['Host', 'a', 'Content-Length', '3', 'Transfer-Encoding', 'chunked']) + '0\r\n\r\n', 400],
    [head('GET', '/', ['Host', 'a', 'Host', 'b']), 400],
  ];
  for (const [bytes, status] of refused) {
    assert.deepEqual(await exchange(stack.ingressPort, b(bytes)), [status], JSON.stringify(bytes.slice(0, 60)));
  }
  assert.equal(await metric('mirrorplane_ingress_requests_dropped_total', 'unsupported'), before.unsupported + 3);
  assert.equal(await metric('mirrorplane_ingress_requests_dropped_total', 'bad_request'), before.bad_request + 2);
});
