import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MirrorplaneProcess, RecordingServer, RedisServer, freePort, waitFor, useStack } from '../helpers/index.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

/** Samples of a Prometheus text exposition, by series (`name{labels}`). */
async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

async function sum(ports: number[], series: string): Promise<number> {
  let total = 0;
  for (const port of ports) total += (await scrape(port)).get(series) ?? 0;
  return total;
}

test('ingress and workers export what they did; one worker exports the deployment gauges', async () => {
  const staging = await RecordingServer.start((req, res) => void res.writeHead(req.url.startsWith('/fail') ? 500 : 200).end());
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const env = {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    STAGING_URL: staging.url,
    REPLAY_ATTEMPTS: '2',
    REPLAY_BACKOFF_MS: '50',
    MAX_BODY_BYTES: '1000',
  };
  const ingressPort = await freePort();
  const ingressAdmin = await freePort();
  const workerAdmins = [await freePort(), await freePort()];
  const processes: MirrorplaneProcess[] = [];
  try {
    const ingress = new MirrorplaneProcess(['ingress'], {
      ...env,
      INGRESS_PORT: String(ingressPort),
      INGRESS_HOST: '127.0.0.1',
      ADMIN_PORT: String(ingressAdmin),
    });
    processes.push(ingress);
    await ingress.waitForLog('ingress listening');
    for (const admin of workerAdmins) {
      const worker = new MirrorplaneProcess(['worker'], { ...env, ADMIN_PORT: String(admin) });
      processes.push(worker);
      await worker.waitForLog('worker started');
    }

    let bytes = 0;
    for (let i = 0; i < 30; i++) {
      const body = `body-${i}`;
      bytes += body.length;
      const res = await fetch(`http://127.0.0.1:${ingressPort}/${i < 10 ? 'fail' : 'ok'}/${i}`, { method: 'POST', body });
      assert.equal(res.status, 200);
    }
    const big = await fetch(`http://127.0.0.1:${ingressPort}/big`, { method: 'POST', body: 'x'.repeat(2000) });
    assert.equal(big.status, 413);

    const ing = await scrape(ingressAdmin);
    assert.equal(ing.get('mirrorplane_ingress_requests_received_total'), 31);
    assert.equal(ing.get('mirrorplane_ingress_requests_accepted_total'), 30);
    assert.equal(ing.get('mirrorplane_ingress_requests_dropped_total{reason="too_large"}'), 1);
    assert.equal(ing.get('mirrorplane_ingress_requests_dropped_total{reason="redis_unavailable"}'), 0, 'every reason is exported from the start');
    assert.equal(ing.get('mirrorplane_ingress_accepted_bytes_total'), bytes);
    assert.equal(ing.get('mirrorplane_ingress_append_seconds_count'), 30);

    // Every entry finished: 20 replayed, 10 failed after two attempts each.
    await waitFor('the failed set to hold 10', async () => (await sum(workerAdmins, 'mirrorplane_worker_failed_total{reason="exhausted"}')) === 10, 60_000);
    assert.equal(await sum(workerAdmins, 'mirrorplane_worker_replays_total{outcome="2xx"}'), 20);
    assert.equal(await sum(workerAdmins, 'mirrorplane_worker_replays_total{outcome="retryable_error"}'), 20);
    assert.equal(await sum(workerAdmins, 'mirrorplane_worker_retries_scheduled_total'), 10);
    assert.equal(await sum(workerAdmins, 'mirrorplane_worker_retries_total'), 10);
    assert.equal(await sum(workerAdmins, 'mirrorplane_worker_replay_seconds_count{outcome="2xx"}'), 20);
    assert.equal(await sum(workerAdmins, 'mirrorplane_worker_in_flight'), 0);

    // The deployment gauges: exactly one worker exports them, so a sum() counts each once.
    const labels = `prefix="${prefix}"`;
    await waitFor(
      'the deployment gauges to settle',
      async () =>
        (await sum(workerAdmins, `mirrorplane_failed_jobs{${labels}}`)) === 10 &&
        (await sum(workerAdmins, `mirrorplane_deployment_replayed_total{${labels}}`)) === 20,
      30_000,
    );
    assert.equal(await sum(workerAdmins, 'mirrorplane_deployment_exporter'), 1);
    assert.equal(await sum(workerAdmins, `mirrorplane_stream_backlog_entries{${labels},partition="0"}`), 0);
    assert.equal(await sum(workerAdmins, `mirrorplane_stream_pending_entries{${labels},partition="0"}`), 0);
    assert.equal(await sum(workerAdmins, `mirrorplane_stream_consumers{${labels},partition="0"}`), 2);
    assert.equal(await sum(workerAdmins, `mirrorplane_retry_queue_jobs{${labels}}`), 0);
    assert.equal(await sum(workerAdmins, `mirrorplane_deployment_accepted_total{${labels}}`), 30);
    const samples = await Promise.all(workerAdmins.map(scrape));
    const exporter = samples.findIndex((s) => s.get('mirrorplane_deployment_exporter') === 1);
    const other = 1 - exporter;
    assert.equal(samples[other]!.has(`mirrorplane_failed_jobs{${labels}}`), false, 'the other worker has no sample at all');

    // The exporter dies without releasing its lock: the other takes over when the lock expires.
    await processes[1 + exporter]!.stop('SIGKILL');
    await waitFor('the other worker to take over', async () => (await scrape(workerAdmins[other]!)).get(`mirrorplane_failed_jobs{${labels}}`) === 10, 30_000);
    assert.equal((await scrape(workerAdmins[other]!)).get('mirrorplane_deployment_exporter'), 1);
  } finally {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await staging.close();
  }
});
