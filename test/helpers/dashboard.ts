import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/** The system Chromium the browser tests drive through playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';
/** Flags for a quiet headless Chromium on a shared CI machine (no sandbox, no network of its own). */
export const CHROMIUM_ARGS: readonly string[] = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A headless Chromium with a fresh profile directory; `close()` ends it and removes the profile. */
export async function launchChromium(profilePrefix = 'mp-browser-'): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), profilePrefix));
  try {
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
    return {
      context,
      close: async () => {
        await context.close().catch(() => undefined);
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(profile, { recursive: true, force: true });
    throw error;
  }
}

/** One answer of the dashboard, its body as text. */
export interface DashboardAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * Raw HTTP to dashboards on 127.0.0.1 (Host set to the dashboard unless `headers` says
 * otherwise). After `login`, a request carrying a session's cookie also carries that session's
 * key, as the dashboard's own pages send it, unless `headers` sets `x-mirrorplane-session-key`.
 */
export class DashboardSessions {
  readonly #keys = new Map<string, string>();

  call(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<DashboardAnswer> {
    const key = headers.cookie !== undefined && !('x-mirrorplane-session-key' in headers) ? this.#keys.get(headers.cookie) : undefined;
    return new Promise((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port, method, path, headers: { host: `127.0.0.1:${port}`, ...(key ? { 'x-mirrorplane-session-key': key } : {}), ...headers } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  /**
   * Logs in with `token` through the form, as a browser on the dashboard's origin does; checks
   * the cookie's flags and that the session key comes in the redirect's fragment. Resolves with
   * the cookie (`name=value`) to pass as the `cookie` header.
   */
  async login(port: number, token: string): Promise<string> {
    const origin = `http://127.0.0.1:${port}`;
    const res = await this.call(port, 'POST', '/login', { origin, 'content-type': 'application/x-www-form-urlencoded' }, `token=${encodeURIComponent(token)}`);
    assert.equal(res.status, 303, res.body);
    const setCookie = String(res.headers['set-cookie']);
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    const key = /#mp-session-key=([A-Za-z0-9_-]{43})$/.exec(String(res.headers.location))?.[1];
    assert.ok(key, `the session key in the redirect's fragment: ${res.headers.location}`);
    const cookie = setCookie.split(';')[0] as string;
    this.#keys.set(cookie, key);
    return cookie;
  }
}
