import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appRoutes } from '@bull-board/api/dist/routes.js';
import { STATUSES } from '@bull-board/api/constants/statuses';
import { classifyDashboardAction } from '../../apps/cli/src/dashboard.js';

/**
 * Every mutating route bull-board has (read from its own route table, so a route added by a
 * later version is checked too) is refused by the dashboard unless it is on the short list of
 * changes that lose nothing accepted and unfinished.
 */
const ALLOWED = new Map([
  ['PUT /api/queues/:queueName/retry/:queueStatus', (p: string) => p.endsWith('/retry/failed')],
  ['PUT /api/queues/:queueName/clean/:queueStatus', (p: string) => p.endsWith('/clean/failed') || p.endsWith('/clean/completed')],
  ['PUT /api/queues/:queueName/promote', () => true],
  ['PUT /api/queues/:queueName/:jobId/retry', () => true],
  ['PUT /api/queues/:queueName/:jobId/promote', () => true],
  // Allowed past this check only for a failed or completed job (the dashboard reads its state).
  ['PUT /api/queues/:queueName/:jobId/clean', () => true],
]);

test("bull-board's mutating routes: only retries, promotions and removal of finished jobs get through", () => {
  const routes = (appRoutes as unknown as { api: { method: string; route: string | string[] }[] }).api;
  const mutating = routes.filter((r) => r.method !== 'get');
  assert.ok(mutating.length >= 20, `bull-board's route table read (${mutating.length} mutating routes)`);
  const statuses = [...Object.values(STATUSES as Record<string, string>), 'wait', 'waiting', 'paused', 'delayed', 'active', 'prioritized', 'waiting-children'];
  for (const r of mutating) {
    for (const route of Array.isArray(r.route) ? r.route : [r.route]) {
      const key = `${r.method.toUpperCase()} ${route}`;
      const fills = route.includes(':queueStatus') ? statuses : ['x'];
      for (const status of fills) {
        const path = route.replace(':queueName', 'retry').replace(':jobId', '1732665600000-0').replace(':queueStatus', status).replace(':schedulerId', 's1');
        const verdict = classifyDashboardAction(r.method.toUpperCase(), path);
        const allowed = ALLOWED.get(key)?.(path) ?? false;
        assert.equal(verdict.kind !== 'refused', allowed, `${r.method.toUpperCase()} ${path}: ${JSON.stringify(verdict)}`);
      }
    }
  }
  // The attack, by name.
  assert.equal(classifyDashboardAction('PUT', '/api/queues/retry/clean/delayed').kind, 'refused');
});

/**
 * The check and the router agree: for any request-target (fragments, backslashes, encoded
 * slashes and dots, case changes, trailing slashes, dot segments, encoded letters), the
 * dashboard either refuses it (`dashboardTarget`) or classifies exactly the route bull-board's
 * real router (express, with bull-board's own route table) runs for the target it is handed,
 * with the same queue status and job id.
 */
test('generated request-targets: the action allowed is the route express runs, with the same parameters', async () => {
  const fc = (await import('fast-check')).default;
  const { Router } = await import('express');
  const { dashboardTarget } = await import('../../apps/cli/src/dashboard.js');
  const router = Router();
  const routes = (appRoutes as unknown as { api: { method: string; route: string | string[] }[] }).api;
  for (const r of routes) {
    for (const route of Array.isArray(r.route) ? r.route : [r.route]) {
      (router as unknown as Record<string, (p: string, h: (req: { params: Record<string, string> }, res: { hit?: unknown }) => void) => void>)[r.method]!(
        route,
        (req, res) => {
          res.hit = { route: `${r.method.toUpperCase()} ${route}`, params: { ...req.params } };
        },
      );
    }
  }
  const routed = (url: string) =>
    new Promise<{ route: string; params: Record<string, string> } | null>((resolve) => {
      const res: { hit?: { route: string; params: Record<string, string> } } = {};
      const req = { method: 'PUT', url, headers: {} };
      (router as unknown as (q: unknown, s: unknown, n: () => void) => void)(req, res, () => resolve(null));
      resolve(res.hit ?? null);
    });
  const words = [
    'api',
    'API',
    'queues',
    'Queues',
    'retry',
    'Retry',
    'RETRY',
    'clean',
    'Clean',
    'promote',
    'empty',
    'obliterate',
    'pause',
    'resume',
    'failed',
    'completed',
    'delayed',
    'wait',
    'rate-limit',
    'release',
    'job-schedulers',
    'remove-unprocessed-children',
    'add',
    '1732665600000-0',
    'x',
  ];
  const oddities = [
    '#',
    '#/retry',
    '%2f',
    '%2F',
    '%5c',
    '\\',
    '.',
    '..',
    '%2e',
    '%2E%2E',
    '%23',
    '%3f',
    '%65mpty',
    '%63lean',
    '%72etry',
    '%',
    '%zz',
    ';',
    '%20',
    '',
    'a%3Ab',
  ];
  const segment = fc.oneof(
    fc.constantFrom(...words),
    fc.constantFrom(...oddities),
    fc.tuple(fc.constantFrom(...words), fc.constantFrom(...oddities)).map(([w, o]) => `${w}${o}`),
  );
  const target = fc
    .tuple(
      fc.constantFrom('/api/queues/retry/', '/api/queues/', '/API/queues/retry/', '/api//queues/retry/', ''),
      fc.array(segment, { minLength: 1, maxLength: 4 }),
      fc.constantFrom('', '/', '?x=1', '#/retry', '?a=b#c'),
    )
    .map(([head, segs, tail]) => `${head}${segs.join('/')}${tail}`);
  const expected: Record<string, (hit: { route: string; params: Record<string, string> }, a: ReturnType<typeof classifyDashboardAction>) => boolean> = {
    'retry-all-failed': (h) => h.route === 'PUT /api/queues/:queueName/retry/:queueStatus' && h.params.queueStatus === 'failed',
    clean: (h, a) => h.route === 'PUT /api/queues/:queueName/clean/:queueStatus' && 'status' in a && h.params.queueStatus === a.status,
    'promote-all': (h) => h.route === 'PUT /api/queues/:queueName/promote',
    'retry-job': (h, a) => h.route === 'PUT /api/queues/:queueName/:jobId/retry' && 'jobId' in a && h.params.jobId === a.jobId,
    'promote-job': (h, a) => h.route === 'PUT /api/queues/:queueName/:jobId/promote' && 'jobId' in a && h.params.jobId === a.jobId,
    'remove-job': (h, a) => h.route === 'PUT /api/queues/:queueName/:jobId/clean' && 'jobId' in a && h.params.jobId === a.jobId,
  };
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        target,
        fc.string({ maxLength: 40 }).map((s) => `/api/queues/retry/${s}`),
      ),
      async (raw) => {
        const checked = dashboardTarget(raw);
        if (!checked.ok) return;
        const action = classifyDashboardAction('PUT', checked.path);
        if (action.kind === 'refused') return;
        const hit = await routed(checked.url);
        assert.ok(
          hit !== null && expected[action.kind]!(hit, action),
          `${JSON.stringify(raw)} classified ${JSON.stringify(action)} but express runs ${JSON.stringify(hit)}`,
        );
      },
    ),
    { numRuns: 3000 },
  );
  // The finding by name: a fragment is refused before anything reads the path.
  assert.equal(dashboardTarget('/queues/api/queues/retry/obliterate#/retry').ok, false);
});
