// The request every scenario sends: the same 1 KiB JSON body and headers as support/post.lua.
export function benchBody() {
  const item = `{"sku":"sku-000000","qty":1,"note":"${'x'.repeat(40)}"}`;
  const items = [];
  for (;;) {
    const candidate = `{"order":"ord_000001","items":[${items.join(',')}]}`;
    if (candidate.length + item.length + 1 > 1024) return Buffer.from(candidate.padEnd(1024, ' '));
    items.push(item);
  }
}

/** Raw headers as the ingress receives them from wrk (name/value pairs, in order). */
export function benchRawHeaders(host = '127.0.0.1:8080') {
  return ['Host', host, 'Content-Length', '1024', 'Content-Type', 'application/json', 'User-Agent', 'mirrorplane-bench'];
}

/** Size of the request on the wire: request line, header lines, blank line, body. */
export function wireBytes(method, target, rawHeaders, body) {
  let size = `${method} ${target} HTTP/1.1\r\n`.length + 2 + body.length;
  for (let i = 0; i < rawHeaders.length; i += 2) size += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`.length;
  return size;
}
