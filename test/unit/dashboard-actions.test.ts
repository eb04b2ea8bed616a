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

test('bull-board\'s mutating routes: only retries, promotions and removal of finished jobs get through', () => {
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
