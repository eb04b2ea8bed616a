import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isLoopback } from '@mirrorplane/core';

/**
 * Who may use the dashboard, and from where.
 *
 * - Host: always checked, so a page on another site whose name resolves to the dashboard's
 *   address (DNS rebinding) gets nothing. Loopback binds accept loopback names; other binds
 *   accept IP literals (rebinding needs a DNS name) and the names in `--allowed-host`.
 * - Login: with a token (ADMIN_TOKEN), every page and API call needs a session cookie, got by
 *   posting the token to the login form, or `authorization: Bearer <token>` (scripts). The
 *   cookie is HttpOnly (no script can read it) and SameSite=Strict (no other site can make the
 *   browser send it). A form and a cookie rather than a bearer header alone: a browser sends
 *   no header of its own on navigation, so a bearer-only dashboard cannot be opened by URL;
 *   bull-board-style tools are put behind a login page, which is what operators expect.
 * - Session key: cookies are scoped by host, not port, so over http every other service on
 *   the dashboard's host name receives the session cookie. A cookie alone therefore opens
 *   only pages (HTML and scripts, which hold no job data); every API call (any path with an
 *   `/api/` segment) and every change also needs `x-mirrorplane-session-key`, a second secret
 *   given at login in the redirect's fragment (never sent to a server) and kept in the
 *   dashboard origin's localStorage, which browsers scope by port. The dashboard's pages add
 *   the header to their own requests (`SESSION_KEY_SCRIPT`).
 * - Cross-site requests: a call that changes anything (any method but GET/HEAD) made with the
 *   cookie must also carry an Origin naming this dashboard; SameSite=Strict is the first wall,
 *   the Origin check the second (older browsers, same-site sibling hosts).
 */

export const SESSION_COOKIE = 'mp_dashboard_session';
/** The header carrying the session key (see the class comment). */
export const SESSION_KEY_HEADER = 'x-mirrorplane-session-key';
/** Where the login redirect carries the session key: `/#mp-session-key=<key>`. */
export const SESSION_KEY_FRAGMENT = 'mp-session-key';

/**
 * Run first in every HTML page the dashboard serves: moves the session key from the login
 * redirect's fragment to localStorage (this origin only: scheme, host and port), and adds it
 * as SESSION_KEY_HEADER to the page's own same-origin fetch and XMLHttpRequest calls.
 */
export const SESSION_KEY_SCRIPT = `<script>(function(){var N='mp_dashboard_key',H='${SESSION_KEY_HEADER}',F='#${SESSION_KEY_FRAGMENT}=';
try{if(location.hash.indexOf(F)===0){localStorage.setItem(N,decodeURIComponent(location.hash.slice(F.length)));history.replaceState(null,'',location.pathname+location.search);}}catch(e){}
function key(){try{return localStorage.getItem(N)}catch(e){return null}}
function same(u){try{return new URL(String(u),location.href).origin===location.origin}catch(e){return false}}
var f=window.fetch;if(f){window.fetch=function(i,o){var u=(typeof Request!=='undefined'&&i instanceof Request)?i.url:i;var k=key();if(k&&same(u)){o=Object.assign({},o);var h=new Headers(o.headers||((typeof Request!=='undefined'&&i instanceof Request)?i.headers:undefined));h.set(H,k);o.headers=h;}return f.call(this,i,o)};}
var P=XMLHttpRequest.prototype,op=P.open,sd=P.send;P.open=function(m,u){this.__mp=same(u);return op.apply(this,arguments)};P.send=function(){var k=key();if(this.__mp&&k){try{this.setRequestHeader(H,k)}catch(e){}}return sd.apply(this,arguments)};})();</script>`;

/** An HTML page with SESSION_KEY_SCRIPT first in its head. */
export function withSessionKeyScript(html: string): string {
  const at = html.search(/<head[^>]*>/i);
  if (at < 0) return SESSION_KEY_SCRIPT + html;
  const end = html.indexOf('>', at) + 1;
  return html.slice(0, end) + SESSION_KEY_SCRIPT + html.slice(end);
}
/** A session lasts this long after login, then the operator logs in again. */
export const SESSION_TTL_MS = 12 * 3_600_000;
/** Sessions kept at most; the oldest is dropped past this (a flood of logins cannot grow memory). */
const MAX_SESSIONS = 1024;

export type AuthOutcome =
  | { ok: true; via: 'open' | 'cookie' | 'bearer'; session: string | null }
  | { ok: false; status: 401 | 403 | 421; reason: 'unexpected_host' | 'unauthenticated' | 'cross_site' }
  | { ok: false; status: 429; reason: 'throttled'; retryAfterS: number };

/** Wrong tokens from one address before it is throttled. */
export const THROTTLE_AFTER_FAILURES = 10;
/** Guesses a throttled address may make per minute. */
export const THROTTLE_PER_MINUTE = 5;
/** Addresses remembered at most (the oldest forgotten first). */
const MAX_THROTTLED_ADDRESSES = 10_000;

/**
 * Throttles wrong-token guesses (login form and bearer header alike) per remote address:
 * after THROTTLE_AFTER_FAILURES failures in a row, an address gets THROTTLE_PER_MINUTE tries
 * per minute (a token bucket); past that every credential it presents, right or wrong, is
 * answered 429 with Retry-After, unchecked. A right token resets the address. Counted in
 * `throttled` and `failures`.
 */
export class GuessThrottle {
  readonly #state = new Map<string, { failures: number; tokens: number; at: number }>();
  /** Wrong tokens seen, and tries refused with 429, since start. */
  failures = 0;
  throttled = 0;

  /** Seconds to wait before this address may try again, or 0 when it may try now (the try is counted). */
  take(address: string, now = Date.now()): number {
    const s = this.#state.get(address);
    if (!s || s.failures < THROTTLE_AFTER_FAILURES) return 0;
    s.tokens = Math.min(THROTTLE_PER_MINUTE, s.tokens + ((now - s.at) / 60_000) * THROTTLE_PER_MINUTE);
    s.at = now;
    if (s.tokens >= 1) {
      s.tokens -= 1;
      return 0;
    }
    this.throttled++;
    return Math.max(1, Math.ceil(((1 - s.tokens) * 60_000) / THROTTLE_PER_MINUTE / 1000));
  }

  failed(address: string, now = Date.now()): void {
    this.failures++;
    let s = this.#state.get(address);
    if (!s) {
      if (this.#state.size >= MAX_THROTTLED_ADDRESSES) this.#state.delete(this.#state.keys().next().value as string);
      s = { failures: 0, tokens: 0, at: now };
      this.#state.set(address, s);
    }
    s.failures++;
  }

  succeeded(address: string): void {
    this.#state.delete(address);
  }
}

export interface DashboardAuthOptions {
  /** The address the dashboard binds. */
  host: string;
  /** ADMIN_TOKEN, or null: then only a loopback bind is allowed and no login is asked. */
  token: string | null;
  /** Extra Host names accepted (the name operators type, behind their own DNS). */
  allowedHosts: readonly string[];
  /** Served over TLS (ADMIN_TLS_CERT): the session cookie is marked Secure. */
  secure?: boolean;
}

/** The problem (`KEY: message`) when the dashboard would be reachable from other hosts without a token, else null. */
export function checkDashboardBind(host: string, token: string | null): string | null {
  if (token === null && !isLoopback(host)) {
    return `ADMIN_TOKEN: required when the dashboard binds ${JSON.stringify(host)}, which is not a loopback address`;
  }
  return null;
}

export class DashboardAuth {
  readonly #o: DashboardAuthOptions;
  readonly #tokenDigest: Buffer | null;
  readonly throttle = new GuessThrottle();
  /** Session id digest → expiry (ms since the epoch) and the session key's digest. Only digests are kept. */
  readonly #sessions = new Map<string, { expires: number; key: Buffer }>();

  constructor(options: DashboardAuthOptions) {
    this.#o = options;
    this.#tokenDigest = options.token === null ? null : digest(options.token);
  }

  get loginRequired(): boolean {
    return this.#tokenDigest !== null;
  }

  /** Whether the Host header names this dashboard (see the class comment). */
  allowedHost(header: string | undefined): boolean {
    if (!header || header.length > 300) return false;
    const name = header.replace(/:\d{1,5}$/, '').toLowerCase();
    const bound = this.#o.host.toLowerCase();
    if (this.#o.allowedHosts.some((h) => h.toLowerCase() === name)) return true;
    if (isLoopback(bound)) return isLoopback(name);
    if (name === bound || name === `[${bound}]`) return true;
    // An IP literal cannot be a rebinding attacker's name; a DNS name must be listed.
    return /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || /^\[[0-9a-f:.]+\]$/.test(name);
  }

  /** The verdict for one request: Host, then credentials, then (for changes) its origin. */
  check(req: IncomingMessage): AuthOutcome {
    if (!this.allowedHost(req.headers.host)) return { ok: false, status: 421, reason: 'unexpected_host' };
    const mutating = req.method !== 'GET' && req.method !== 'HEAD';
    let via: 'open' | 'cookie' | 'bearer' = 'open';
    let session: string | null = null;
    if (this.#tokenDigest !== null) {
      const auth = req.headers.authorization;
      if (auth !== undefined && /^bearer /i.test(auth)) {
        const address = req.socket.remoteAddress ?? '';
        const wait = this.throttle.take(address);
        if (wait > 0) return { ok: false, status: 429, reason: 'throttled', retryAfterS: wait };
        if (!this.tokenMatches(auth.slice(7).trim())) {
          this.throttle.failed(address);
          return { ok: false, status: 401, reason: 'unauthenticated' };
        }
        this.throttle.succeeded(address);
        via = 'bearer';
      } else {
        session = this.#sessionOf(req);
        if (session === null) return { ok: false, status: 401, reason: 'unauthenticated' };
        if ((mutating || needsSessionKey(req.url ?? '/')) && !this.#keyMatches(session, req.headers[SESSION_KEY_HEADER])) {
          return { ok: false, status: 401, reason: 'unauthenticated' };
        }
        via = 'cookie';
      }
    }
    // A bearer header cannot be sent cross-site without a CORS preflight this server never grants.
    if (mutating && via !== 'bearer' && !this.sameOrigin(req)) return { ok: false, status: 403, reason: 'cross_site' };
    return { ok: true, via, session };
  }

  /** Whether the request's Origin (or, lacking one, Referer) is this dashboard as the browser addressed it. */
  sameOrigin(req: IncomingMessage): boolean {
    const host = req.headers.host;
    if (!host) return false;
    const origin = req.headers.origin ?? refererOrigin(req.headers.referer);
    // Over TLS the browser's origin is https://; the socket, not a header, says which it is.
    const scheme = (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http';
    return origin === `${scheme}://${host}`;
  }

  /** Constant-time comparison of a presented token with ADMIN_TOKEN (digests, so length leaks nothing). */
  tokenMatches(presented: string): boolean {
    if (this.#tokenDigest === null) return false;
    return timingSafeEqual(digest(presented), this.#tokenDigest);
  }

  /** Whether the session key presented is the one given with this session at login. */
  #keyMatches(session: string, presented: string | string[] | undefined): boolean {
    const entry = this.#sessions.get(digest(session).toString('hex'));
    if (!entry || typeof presented !== 'string') return false;
    return timingSafeEqual(digest(presented), entry.key);
  }

  /** A new session; returns the Set-Cookie value, the session id and its key (see the class comment). */
  startSession(now = Date.now()): { cookie: string; id: string; key: string } {
    const id = randomBytes(32).toString('base64url');
    const key = randomBytes(32).toString('base64url');
    if (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest !== undefined) this.#sessions.delete(oldest);
    }
    this.#sessions.set(digest(id).toString('hex'), { expires: now + SESSION_TTL_MS, key: digest(key) });
    return {
      id,
      key,
      cookie: `${SESSION_COOKIE}=${id}; HttpOnly;${this.#o.secure === true ? ' Secure;' : ''} SameSite=Strict; Path=/; Max-Age=${SESSION_TTL_MS / 1000}`,
    };
  }

  /** Ends the request's session, if any; returns the Set-Cookie value that clears it. */
  endSession(req: IncomingMessage): string {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id !== null) this.#sessions.delete(digest(id).toString('hex'));
    return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`;
  }

  /** A short, non-secret name for a session in logs (a digest prefix). */
  static sessionLabel(id: string | null): string | null {
    return id === null ? null : digest(id).toString('hex').slice(0, 8);
  }

  #sessionOf(req: IncomingMessage, now = Date.now()): string | null {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id === null) return null;
    const key = digest(id).toString('hex');
    const expires = this.#sessions.get(key)?.expires;
    if (expires === undefined) return null;
    if (expires <= now) {
      this.#sessions.delete(key);
      return null;
    }
    return id;
  }
}

/** Whether a path (request-target) reads or changes data: an `/api/` segment, any case (express routes case-insensitively). */
export function needsSessionKey(target: string): boolean {
  return /\/api(\/|$)/i.test(target.split('?', 1)[0] as string);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function refererOrigin(referer: string | undefined): string | undefined {
  if (!referer) return undefined;
  try {
    return new URL(referer).origin;
  } catch {
    return undefined;
  }
}

function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim() || null;
  }
  return null;
}

/** The login form: one password field, posted to /login on this origin only. */
export function loginPage(error: string | null): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mirrorplane: log in</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 4rem auto; max-width: 24rem; color: #1d2330; background: #f6f7f9; }
  form { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 1.2rem; display: grid; gap: .7rem; }
  input { font: inherit; padding: .4rem; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>Mirrorplane</h1>
<form method="post" action="/login">
  <label for="token">Dashboard token (ADMIN_TOKEN)</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <button type="submit">Log in</button>
  ${error ? `<div class="error" id="login-error">${error}</div>` : ''}
</form>
</body>
</html>
`;
}
