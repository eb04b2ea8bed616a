import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Why the ingress did not accept a request; the `reason` label of the dropped counter. */
export type DropReason =
  | 'too_large'
  | 'redis_unavailable'
  | 'redis_timeout'
  | 'redis_error'
  | 'bad_request'
  | 'headers_too_large'
  | 'headers_timeout'
  | 'body_timeout'
  | 'aborted'
  | 'shutting_down'
  | 'unauthorized'
  | 'backlog_full'
  /** Valid HTTP that cannot be replayed as received (CONNECT, transfer codings besides chunked, …). */
  | 'unsupported'
  /** An HTTP/2 stream over MAX_CONCURRENT_STREAMS on its connection (RST_STREAM REFUSED_STREAM). */
  | 'too_many_streams'
  /** An entry with a value over the Redis server's proto-max-bulk-len: answered 413 on its own. */
  | 'over_redis_limit';

const REASONS: DropReason[] = [
  'too_large',
  'redis_unavailable',
  'redis_timeout',
  'redis_error',
  'bad_request',
  'headers_too_large',
  'headers_timeout',
  'body_timeout',
  'aborted',
  'shutting_down',
  'unauthorized',
  'backlog_full',
  'unsupported',
  'too_many_streams',
  'over_redis_limit',
];

/**
 * The ingress's metrics, every child bound at construction: looking a label child up per
 * request is measurably slower. `received = accepted + dropped + in flight`.
 */
export class IngressMetrics {
  readonly registry = new Registry();
  readonly received: Counter.Internal;
  readonly accepted: Counter.Internal;
  /** Body bytes of accepted requests. */
  readonly acceptedBytes: Counter.Internal;
  readonly dropped: Readonly<Record<DropReason, Counter.Internal>>;
  /** Seconds from the end of a request to Redis accepting its entry. */
  readonly appendSeconds: Histogram.Internal<string>;
  /** Connections the TLS traffic port closed before HTTP: a failed handshake, or a client certificate not on the allow-list. */
  readonly tlsRefused: Readonly<Record<'handshake' | 'not_allowed', Counter.Internal>>;

  /** `inFlight`: read when scraped, the requests being read or appended. */
  constructor(inFlight: () => number) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'mirrorplane_ingress_' });
    this.received = new Counter({
      name: 'mirrorplane_ingress_requests_received_total',
      help: 'Requests received (accepted + dropped + in flight)',
      registers,
    }).labels();
    this.accepted = new Counter({
      name: 'mirrorplane_ingress_requests_accepted_total',
      help: 'Requests appended to the stream and answered 200',
      registers,
    }).labels();
    this.acceptedBytes = new Counter({ name: 'mirrorplane_ingress_accepted_bytes_total', help: 'Body bytes of accepted requests', registers }).labels();
    const dropped = new Counter({
      name: 'mirrorplane_ingress_requests_dropped_total',
      help: 'Requests not accepted, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.appendSeconds = new Histogram({
      name: 'mirrorplane_ingress_append_seconds',
      help: 'Time from the end of the request body to Redis accepting the entry',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5],
      registers,
    }).labels();
    new Gauge({
      name: 'mirrorplane_ingress_in_flight',
      help: 'Requests being read or appended',
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    // Connections, not requests: they are outside `received`, which counts requests read.
    const tlsRefused = new Counter({
      name: 'mirrorplane_ingress_tls_refused_total',
      help: 'Connections refused by the TLS traffic port before any request: handshake failed (no or untrusted client certificate…) or not_allowed (allow-list)',
      labelNames: ['reason'],
      registers,
    });
    this.tlsRefused = { handshake: tlsRefused.labels('handshake'), not_allowed: tlsRefused.labels('not_allowed') };
    this.dropped = Object.fromEntries(REASONS.map((r) => [r, dropped.labels(r)])) as Record<DropReason, Counter.Internal>;
    // Every reason is exported from the start, so rate() sees the first drop of a kind.
    for (const child of Object.values(this.dropped)) child.inc(0);
  }
}
