import { InvalidValueError } from './errors.js';
import { decodePercent } from './percent-decoding.js';
/**
 * Redis connection strings. One Redis: `redis://[user:password@]host:port[/db]` (`rediss://`
 * for TLS). A Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port…]`, the
 * listed nodes only seeds (the client learns the rest). Sentinel:
 * `redis+sentinel://[user:password@]host:26379[,host:26379…]/<master-name>[/db]`, the
 * password being the data nodes' (the sentinels' own, if any, is `sentinelPassword=` in the
 * query). `rediss+cluster://` and `rediss+sentinel://` use TLS.
 */
export interface RedisTarget {
  readonly mode: 'single' | 'cluster' | 'sentinel';
  readonly nodes: readonly { host: string; port: number }[];
  readonly username: string | null;
  readonly password: string | null;
  readonly tls: boolean;
  readonly db: number;
  /** Sentinel: the master's name. */
  readonly masterName: string | null;
  readonly sentinelPassword: string | null;
}

const PROTOCOLS: Record<string, { mode: RedisTarget['mode']; tls: boolean; port: number }> = {
  'redis:': { mode: 'single', tls: false, port: 6379 },
  'rediss:': { mode: 'single', tls: true, port: 6379 },
  'redis+cluster:': { mode: 'cluster', tls: false, port: 6379 },
  'rediss+cluster:': { mode: 'cluster', tls: true, port: 6379 },
  'redis+sentinel:': { mode: 'sentinel', tls: false, port: 26379 },
  'rediss+sentinel:': { mode: 'sentinel', tls: true, port: 26379 },
};

/**
 * Where the user information of a Redis URL ends, as ioredis (WHATWG `URL`) reads it: the
 * authority runs from `//` to the first `/`, `?` or `#`, and the user information is
 * everything before the LAST `@` in it (a password may hold `@` and `:`); the user name ends
 * at the first `:`. Returns null when the URL has no user information.
 */
function splitUserinfo(text: string): { head: string; auth: string; rest: string } | null {
  const scheme = /^\s*(?:[a-z][a-z0-9+.-]*:)?\/\//i.exec(text);
  const start = scheme ? scheme[0].length : 0;
  const authorityEnd = text.slice(start).search(/[/?#]/);
  const end = authorityEnd === -1 ? text.length : start + authorityEnd;
  const at = text.lastIndexOf('@', end - 1);
  if (at < start) return null;
  return { head: text.slice(0, start), auth: text.slice(start, at), rest: text.slice(at + 1) };
}

/**
 * A Redis URL as it may be shown: every character of the password replaced by `***`, the
 * user name kept. The user information is found exactly as ioredis finds it (last `@`
 * before the host), so a password holding `@` or `:` is hidden whole; user information
 * without `:` is hidden whole (it may be a password typed without its colon); an `@` left
 * in the path or query (a password holding `/`, `?` or `#`, which ioredis cannot read
 * either) hides everything up to it; `sentinelPassword=` in the query is hidden too. Never
 * throws: any string goes in, config error messages included.
 */
export function maskRedisUrl(text: string): string {
  const parts = splitUserinfo(text);
  const head = parts?.head ?? /^\s*(?:[a-z][a-z0-9+.-]*:)?\/\//i.exec(text)?.[0] ?? '';
  let auth = parts ? (parts.auth.includes(':') ? `${parts.auth.slice(0, parts.auth.indexOf(':'))}:***@` : '***@') : '';
  let rest = parts ? parts.rest : text.slice(head.length);
  // An "@" left before the query: a password holding "/", "?" or "#"; hide everything up to it.
  const query = rest.search(/[?#]/);
  const strayAt = (query === -1 ? rest : rest.slice(0, query)).lastIndexOf('@');
  if (strayAt !== -1) {
    auth = '***@';
    rest = rest.slice(strayAt + 1);
  }
  return `${head}${auth}${rest}`.replace(/([?&#]sentinelPassword=)[^&#]*/gi, '$1***');
}

/** `text` with every `scheme://…` in it (up to white space) passed through `maskRedisUrl`: for messages quoting a line. */
export function maskUrlsIn(text: string): string {
  return text.replace(/[a-z][a-z0-9+.-]*:\/\/\S*/gi, (url) => maskRedisUrl(url));
}

/** Parses a Redis connection string; throws an Error that says what is wrong with it (never showing the password). */
export function parseRedisUrl(text: string): RedisTarget {
  const trimmed = text.trim();
  const scheme = /^([a-z+]+:)\/\//i.exec(trimmed);
  const kind = scheme ? PROTOCOLS[(scheme[1] as string).toLowerCase()] : undefined;
  const parts = splitUserinfo(trimmed);
  const afterAuth = parts ? parts.rest : scheme ? trimmed.slice(scheme[0].length) : trimmed;
  const m = /^([^/?#]*)([^?#]*)(\?[^#]*)?$/.exec(afterAuth);
  if (!scheme || !m || !kind) {
    throw new InvalidValueError(
      `expected a URL like redis://host:6379, rediss://…, redis+cluster://host:7000,host:7001 or redis+sentinel://host:26379/mymaster; got ${JSON.stringify(maskRedisUrl(text))}`,
    );
  }
  if (/@/.test(`${m[1] ?? ''}${m[2] ?? ''}`))
    throw new InvalidValueError('"@" after the host in the Redis URL: a password holding "/", "?" or "#" must be percent-encoded (%2F, %3F, %23)');
  const auth = parts?.auth;
  const [, hostList = '', path = '', query = ''] = m;
  let username: string | null = null;
  let password: string | null = null;
  if (auth !== undefined) {
    const colon = auth.indexOf(':');
    const user = decodePercent(colon === -1 ? auth : auth.slice(0, colon));
    username = user === '' ? null : user;
    password = colon === -1 ? null : decodePercent(auth.slice(colon + 1));
  }
  const hosts = hostList
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  if (hosts.length === 0) throw new InvalidValueError('no host in the Redis URL');
  if (hosts.length > 1 && kind.mode === 'single') throw new InvalidValueError('several hosts need redis+cluster:// or redis+sentinel://');
  const nodes = hosts.map((h) => {
    const hm = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(h);
    const port = hm?.[2] === undefined ? kind.port : Number(hm[2]);
    if (!hm || port < 1 || port > 65535) throw new InvalidValueError(`bad host ${JSON.stringify(h)} in the Redis URL (expected host or host:port)`);
    return { host: (hm[1] as string).replace(/^\[|\]$/g, ''), port };
  });
  const segments = path.split('/').filter(Boolean);
  let masterName: string | null = null;
  if (kind.mode === 'sentinel') {
    masterName = segments.shift() ?? null;
    if (!masterName) throw new InvalidValueError('a redis+sentinel:// URL names the master: redis+sentinel://host:26379/mymaster');
  }
  let db = 0;
  if (segments.length > 0) {
    if (kind.mode === 'cluster') throw new InvalidValueError('a Redis Cluster has one database: no /db in a redis+cluster:// URL');
    db = Number(segments[0]);
    if (segments.length > 1 || !Number.isInteger(db) || db < 0 || db > 1_000_000)
      throw new InvalidValueError(`bad database ${JSON.stringify(segments.join('/'))} in the Redis URL (expected /0, /1, …)`);
  }
  const params = new URLSearchParams(query);
  return Object.freeze({ mode: kind.mode, nodes, username, password, tls: kind.tls, db, masterName, sentinelPassword: params.get('sentinelPassword') });
}
