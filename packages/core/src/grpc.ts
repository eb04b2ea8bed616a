import { decodePercent } from './percent-decoding.js';

/**
 * gRPC over HTTP/2, as far as mirroring needs it: the status codes the ingress answers with and
 * the retry policy names, and reading a response's status. Source: "gRPC over HTTP2"
 * (grpc/grpc doc/PROTOCOL-HTTP2.md) and the status code list (doc/statuscodes.md).
 */

/** Status codes by name (statuscodes.md); only those Mirrorplane uses. */
export const GRPC_STATUS = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  RESOURCE_EXHAUSTED: 8,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** Whether a Content-Type is gRPC's (`application/grpc`, `application/grpc+proto`, …). */
export function isGrpcContentType(value: string | null | undefined): boolean {
  return typeof value === 'string' && /^application\/grpc(?:[+;]|$)/i.test(value.trim());
}

/**
 * The raw `grpc-status` value of a response: the last one of its trailers, else the last one
 * of its headers (a trailers-only response carries it there; a recorded response may list
 * trailers after the headers). Null when absent. Not validated: see `grpcStatusOf`.
 */
export function grpcStatusField(response: { headers: readonly string[]; trailers?: readonly string[] }): string | null {
  for (const list of [response.trailers ?? [], response.headers]) {
    let found: string | null = null;
    for (let i = 0; i + 1 < list.length; i += 2) if ((list[i] as string).toLowerCase() === 'grpc-status') found = list[i + 1] as string;
    if (found !== null) return found;
  }
  return null;
}

/**
 * The gRPC status of a response (see `grpcStatusField`) as a number from 0 to 16 with its
 * `grpc-message` (percent-encoded UTF-8, decoded tolerantly: a bad escape stays as written);
 * null when the status is absent or not a code.
 */
export function grpcStatusOf(response: { headers: readonly string[]; trailers?: readonly string[] }): { status: number; message: string | null } | null {
  const raw = grpcStatusField(response);
  if (raw === null || !/^\d{1,2}$/.test(raw) || Number(raw) > 16) return null;
  const list = response.trailers !== undefined && grpcStatusField({ headers: response.trailers }) !== null ? response.trailers : response.headers;
  let message: string | null = null;
  for (let i = 0; i + 1 < list.length; i += 2) if ((list[i] as string).toLowerCase() === 'grpc-message') message = decodePercent(list[i + 1] as string);
  return { status: Number(raw), message };
}
