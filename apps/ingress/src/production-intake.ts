import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Redis } from 'ioredis';
import { Counter, type Registry } from 'prom-client';
import { EntryCipher, compileComparison, compileIdMapping, errorMessage, IntakeError, productionKeys, type Config } from '@mirrorplane/core';
import { BoundedBody } from './body-reader.js';
import { parseIntake, storeProductionResponse, type Logger } from '@mirrorplane/runtime';

/**
 * `POST /production-responses` on the admin port: production's answer to a mirrored request,
 * correlated by its request id, kept in Redis for `productionResponses.ttlMs` so workers can
 * map IDs and compare. Same rule as the traffic port: 204 only after Redis stored it, 503 at
 * once when Redis is away, 413 over `productionResponses.maxBodyBytes`.
 */
export function createProductionIntake(config: Config, redis: Redis, logger: Logger, registry: Registry): (req: IncomingMessage, res: ServerResponse) => void {
  const keys = productionKeys(config.prefix, EntryCipher.fromSpec(config.dataKey));
  const settings = config.productionResponses;
  const mapping = config.idMapping ? compileIdMapping(config.idMapping, { maxDecodedBytes: config.productionResponses.maxDecodedBytes }) : null;
  const compared = new Counter({
    name: 'mirrorplane_ingress_comparisons_total',
    help: 'Comparisons done on arrival of production’s answer (staging answered first), by route and result',
    labelNames: ['route', 'result'],
    registers: [registry],
  });
  const decodings = new Counter({
    name: 'mirrorplane_ingress_body_decodings_total',
    help: 'Bodies with a Content-Encoding read by comparisons done on arrival, by side and outcome (decoded, unsupported, too_large, corrupt)',
    labelNames: ['side', 'outcome'],
    registers: [registry],
  });
  const comparison = config.compare
    ? {
        settings: config.compare,
        comparison: compileComparison(config.compare, { maxDecodedBytes: settings.maxDecodedBytes }),
        redact: new Set(config.redactHeaders),
        maxDecodedBytes: settings.maxDecodedBytes,
        idKinds: mapping ? [...new Set(mapping.learners.map((l) => l.kind))] : [],
        onCompared: (route: string, equal: boolean) => compared.inc({ route, result: equal ? 'match' : 'mismatch' }),
        onDecoded: (side: string, outcome: string) => decodings.inc({ side, outcome }),
      }
    : null;
  const received = new Counter({
    name: 'mirrorplane_ingress_production_responses_total',
    help: 'Production responses received on the admin port, by outcome',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const outcome = {
    stored: received.labels('stored'),
    cut: received.labels('cut'),
    unsupported_encoding: received.labels('unsupported_encoding'),
    invalid: received.labels('invalid'),
    too_large: received.labels('too_large'),
    redis_unavailable: received.labels('redis_unavailable'),
  };
  const answer = (res: ServerResponse, status: number, text: string) => {
    if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain' }).end(`${text}\n`);
  };
  return (req, res) => {
    const body = new BoundedBody(settings.maxBodyBytes);
    let over = false;
    req.on('data', (chunk: Buffer) => {
      if (over || body.push(chunk)) return;
      over = true;
      outcome.too_large.inc();
      res.shouldKeepAlive = false;
      answer(res, 413, `production response body over ${settings.maxBodyBytes} bytes`);
    });
    req.on('end', () => {
      if (over) return;
      let response: ReturnType<typeof parseIntake>;
      try {
        response = parseIntake(req.rawHeaders, body.take(), settings.maxBodyBytes);
      } catch (error) {
        (error instanceof IntakeError && error.status === 415 ? outcome.unsupported_encoding : outcome.invalid).inc();
        answer(res, error instanceof IntakeError ? error.status : 400, errorMessage(error));
        return;
      }
      storeProductionResponse(redis, keys, settings, mapping, response, comparison).then(
        () => {
          (response.cut ? outcome.cut : outcome.stored).inc();
          res.writeHead(204).end();
        },
        (error: unknown) => {
          outcome.redis_unavailable.inc();
          logger.warn({ reqId: response.requestId, err: errorMessage(error) }, 'could not store a production response');
          answer(res, 503, 'redis did not accept the production response');
        },
      );
    });
  };
}
