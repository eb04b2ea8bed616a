/**
 * The dashboard's own page: the stream backlog, the live workers by heartbeat, the consumer
 * group's members (marked dead when no worker heartbeat holds their name) and their pending
 * counts, a warning when the prefix holds no deployment, and the rates, refreshed every second from /api/status. Plain HTML and a
 * few lines of script; every value is set with textContent, so nothing from Redis (a
 * consumer name, an error) is ever read as markup.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mirrorplane</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; background: #f6f7f9; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
  .sub { color: #667; margin-bottom: 1.5rem; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(10rem, 1fr)); gap: .8rem; margin-bottom: 1.5rem; }
  .card { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: .7rem .9rem; }
  .card .k { color: #667; font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; }
  .card .v { font-size: 1.6rem; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e8; min-width: 30rem; }
  th, td { text-align: left; padding: .35rem .8rem; border-bottom: 1px solid #eef0f4; font-variant-numeric: tabular-nums; }
  th { background: #eef0f4; font-weight: 600; }
  .error { color: #b00020; }
  a { color: #2456c7; }
</style>
</head>
<body>
<h1>Mirrorplane</h1>
<div class="sub">updated <span id="at">-</span> · <a id="queues" href="queues/queue/retry?status=failed">retry queue and failed set</a> (inspect, retry, remove) · <form method="post" action="logout" style="display:inline"><button id="logout" type="submit">log out</button></form></div>
<div id="error" class="error"></div>
<div id="warning" class="error"></div>
<div class="cards">
  <div class="card"><div class="k">backlog</div><div class="v" data-k="backlog">-</div></div>
  <div class="card"><div class="k">pending</div><div class="v" data-k="pending">-</div></div>
  <div class="card"><div class="k">retrying</div><div class="v" data-k="retrying">-</div></div>
  <div class="card"><div class="k">failed</div><div class="v" data-k="failed">-</div></div>
  <div class="card"><div class="k">replayed</div><div class="v" data-k="replayed">-</div></div>
  <div class="card"><div class="k">oldest backlog age</div><div class="v" data-k="age">-</div></div>
  <div class="card"><div class="k">accepted/s</div><div class="v" data-k="acceptedPerSec">-</div></div>
  <div class="card"><div class="k">replayed/s</div><div class="v" data-k="replayedPerSec">-</div></div>
  <div class="card"><div class="k">failed/s</div><div class="v" data-k="failedPerSec">-</div></div>
  <div class="card"><div class="k">backlog drains in</div><div class="v" data-k="drain">-</div></div>
  <div class="card"><div class="k">rate cap (default origin)</div><div class="v" data-k="cap">-</div></div>
  <div class="card"><div class="k">drains at the cap in</div><div class="v" data-k="capDrain">-</div></div>
</div>
<h2>Workers (<span data-k="workerCount">0</span>)</h2>
<div id="noworkers" class="error"></div>
<table>
  <thead><tr><th>consumer</th><th>host</th><th>pid</th><th>in flight</th><th>last seen</th></tr></thead>
  <tbody id="workers"></tbody>
</table>
<h2>Consumer group (<span data-k="consumerCount">0</span>)</h2>
<table>
  <thead><tr><th>consumer</th><th>pending</th><th>idle</th><th>worker</th></tr></thead>
  <tbody id="consumers"></tbody>
</table>
<script>
const set = (k, v) => { for (const el of document.querySelectorAll('[data-k="' + k + '"]')) el.textContent = v; };
const rate = (n) => n === null || n === undefined ? '-' : n >= 100 ? n.toFixed(0) : n.toFixed(1);
const secs = (s) => s < 60 ? Math.round(s) + ' s' : s < 3600 ? Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s' : Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
async function refresh() {
  try {
    const res = await fetch('api/status', { cache: 'no-store' });
    if (res.status === 401) { location.href = 'login'; return; }
    const s = await res.json();
    if (s.error) throw new Error(s.error);
    document.getElementById('error').textContent = '';
    document.getElementById('at').textContent = s.at;
    for (const k of ['backlog', 'pending', 'retrying', 'failed', 'replayed']) set(k, String(s[k]));
    set('age', s.oldestBacklogAgeMs === null ? '-' : (s.oldestBacklogAgeMs / 1000).toFixed(1) + ' s');
    for (const k of ['acceptedPerSec', 'replayedPerSec', 'failedPerSec']) set(k, rate(s[k]));
    set('drain', s.drainSeconds === null ? (s.backlog === 0 ? 'empty' : 'not draining') : s.drainSeconds === 0 ? 'empty' : secs(s.drainSeconds));
    const cap = (s.rateCaps || []).find((c) => c.origin === 'default');
    set('cap', !cap || !cap.limit ? 'off' : cap.limit.perSecond + '/s, burst ' + cap.limit.burst + (cap.source === 'override' ? ' (live)' : ''));
    set('capDrain', s.capDrainSeconds === null || s.capDrainSeconds === undefined ? '-' : secs(s.capDrainSeconds));
    document.getElementById('warning').textContent = s.warning || '';
    const row = (values) => {
      const tr = document.createElement('tr');
      for (const v of values) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.appendChild(td);
      }
      return tr;
    };
    const workers = s.workers || [];
    set('workerCount', String(workers.length));
    document.getElementById('noworkers').textContent = workers.length === 0 ? 'no worker is running (no heartbeat): entries wait in the backlog until one starts' : '';
    const now = Date.parse(s.at);
    document.getElementById('workers').replaceChildren(...workers.map((w) => row([w.consumer, w.host, String(w.pid), w.inFlight + ' of ' + w.concurrency, secs(Math.max(0, now - w.lastSeen) / 1000) + ' ago'])));
    const live = new Set(workers.map((w) => w.consumer));
    set('consumerCount', String(s.consumers.length));
    document.getElementById('consumers').replaceChildren(...s.consumers.map((c) => row([c.name, String(c.pending), (c.idleMs / 1000).toFixed(1) + ' s', live.has(c.name) ? 'live' : 'dead (no heartbeat)'])));
  } catch (error) {
    document.getElementById('error').textContent = 'cannot read the status: ' + error.message;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
`;
