import type { IncomingMessage, ServerResponse } from 'node:http';

export interface MirrorplaneResponsesOptions {
  /** URL of the intake: `http://<ingress>:<ADMIN_PORT>/production-responses`. */
  intake: string;
  /** ADMIN_TOKEN, when the admin port listens beyond loopback. */
  token?: string;
  /** Answers with a longer body are not posted (default 1 MiB, the intake's default). */
  maxBodyBytes?: number;
  /** Response headers never sent to Mirrorplane (default `['set-cookie']`). */
  excludeHeaders?: string[];
  /** A failed post (default: ignored). */
  onError?: (error: unknown) => void;
  fetch?: typeof globalThis.fetch;
}

/** `(req, res, next?)`: call it first in a node:http handler, or `app.use` it in Express. */
export function mirrorplaneResponses(
  options: MirrorplaneResponsesOptions,
): (req: IncomingMessage & { originalUrl?: string }, res: ServerResponse, next?: (error?: unknown) => void) => void;
