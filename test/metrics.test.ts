// GET /metrics on the admin endpoint: request, byte and error counters by site and cache state,
// the hit ratio, and the storage tiers (objects, bytes, evictions), in the Prometheus format.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { LoopLagMonitor, lagOf } from '../src/edge/metrics.js';
import { admin, startAdmin } from './helpers/admin.js';
import { request, startEdge } from './helpers/edge.js';
import { refusingPort } from './helpers/nginx.js';

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('metrics count requests, bytes, hits, errors and what each tier holds', async (t) => {
  const origin = http.createServer((_req, res) => {
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'public, max-age=60',
      'content-length': 1000,
    });
    res.end('x'.repeat(1000));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const closed = await refusingPort();
  const edge = await startEdge([
    {
      name: 'www.example.com',
      origin: { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] },
    },
    { name: 'down.example.com', origin: { servers: [{ host: '127.0.0.1', port: closed }] } },
  ]);
  t.after(() => edge.close());
  const a = await startAdmin(edge);
  t.after(() => a.close());

  for (let i = 0; i < 4; i++) {
    const r = await request(`http://127.0.0.1:${edge.httpPort}/a`, { headers: { host: 'www.example.com' } });
    assert.equal(r.status, 200);
  }
  const bad = await request(`http://127.0.0.1:${edge.httpPort}/`, { headers: { host: 'down.example.com' } });
  assert.equal(bad.status, 502);

  const unauth = await admin(a.port, 'GET', '/metrics', undefined, { token: null });
  assert.equal(unauth.status, 401, 'metrics need the admin token like everything else there');
  const res = await admin(a.port, 'GET', '/metrics');
  assert.equal(res.status, 200);
  assert.match(String(res.headers['content-type']), /^text\/plain/);
  const text = String(res.body['text']);
  assert.equal(value(text, 'verge_requests_total{site="www.example.com",cache="MISS",status="2xx"}'), 1);
  assert.equal(value(text, 'verge_requests_total{site="www.example.com",cache="HIT",status="2xx"}'), 3);
  assert.equal(value(text, 'verge_response_bytes_total{site="www.example.com",cache="HIT"}'), 3000);
  assert.equal(
    value(text, 'verge_errors_total{site="down.example.com",code="ORIGIN_CONNECTION_REFUSED"}'),
    1,
  );
  assert.equal(value(text, 'verge_cache_hit_ratio{by="requests"}'), 0.75);
  assert.equal(value(text, 'verge_cache_objects{tier="memory"}'), 1);
  assert.ok((value(text, 'verge_cache_bytes{tier="memory"}') ?? 0) >= 1000);
  assert.equal(value(text, 'verge_cache_evictions_total{tier="memory"}'), 0);
});

test('a certificate within 21 days of expiry shows in the metrics', async (t) => {
  const { leafFor } = await import('./helpers/pki.js');
  const soon = await leafFor('soon.example.com', { days: 10 });
  const later = await leafFor('later.example.com', { days: 90 });
  const edge = await startEdge([
    { name: 'soon.example.com', cert: soon, origin: { servers: [{ host: '127.0.0.1', port: 9 }] } },
    { name: 'later.example.com', cert: later, origin: { servers: [{ host: '127.0.0.1', port: 9 }] } },
  ]);
  t.after(() => edge.close());
  const a = await startAdmin(edge);
  t.after(() => a.close());
  const text = String((await admin(a.port, 'GET', '/metrics')).body['text']);
  assert.equal(value(text, 'verge_certificate_expires_soon{site="soon.example.com"}'), 1);
  assert.equal(value(text, 'verge_certificate_expires_soon{site="later.example.com"}'), 0);
  const at = value(text, 'verge_certificate_expiry_timestamp_seconds{site="soon.example.com"}')!;
  assert.ok(Math.abs(at - (Date.now() / 1000 + 10 * 86400)) < 86400 * 1.1, `expiry ${at}`);
});

test('a certificate within 21 days of expiry is warned about in the log at start', async (t) => {
  const { leafFor } = await import('./helpers/pki.js');
  const { startEdgeProc } = await import('./helpers/proc.js');
  const soon = await leafFor('soon.example.com', { days: 10 });
  const p = await startEdgeProc({
    config: {
      sites: [
        {
          name: 'soon.example.com',
          tls: { cert: 'soon.crt', key: 'soon.key' },
          origin: { servers: [{ host: '127.0.0.1', port: 9 }] },
        },
      ],
    },
    files: { 'soon.crt': soon.certPem, 'soon.key': soon.keyPem },
  });
  t.after(() => p.kill());
  const line = await p.waitForLog((l) => String(l.msg).includes('certificate of soon.example.com expires'));
  assert.equal(line['site'], 'soon.example.com');
  assert.ok(Number(line['daysLeft']) >= 9 && Number(line['daysLeft']) <= 10, `daysLeft ${line['daysLeft']}`);
  assert.match(String(line.msg), /renew it/);
});

test('the event-loop delay of the serving process shows in the metrics, by worker and quantile', async (t) => {
  const edge = await startEdge([
    { name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port: 1 }] } },
  ]);
  t.after(() => edge.close());
  const a = await startAdmin(edge);
  t.after(() => a.close());
  // this test's process is the edge's: hold its event loop, as a long garbage collection or a
  // synchronous task would, then let the monitor's timers run again. 1.3 s: if the monitor slept
  // (this process idle in the second before), its once a second check falls inside the stall and
  // runs at least 300 ms late; if it was awake, its 10 ms timer runs 1.3 s late
  const until = performance.now() + 1300;
  while (performance.now() < until) {
    // busy: nothing else runs on this thread meanwhile
  }
  await new Promise((r) => setTimeout(r, 50));
  const text = String((await admin(a.port, 'GET', '/metrics')).body['text']);
  assert.match(text, /^# TYPE verge_event_loop_lag_seconds gauge$/m);
  const lag = (q: string) => value(text, `verge_event_loop_lag_seconds{worker="1",quantile="${q}"}`);
  const longest = lag('1');
  assert.ok(
    longest !== undefined && longest >= 0.25,
    `the longest delay ${longest} s covers 300 ms or more of the 1.3 s held`,
  );
  assert.ok(longest < 30, `the longest delay ${longest} s is in seconds`);
  const p50 = lag('0.5');
  assert.ok(p50 !== undefined && p50 >= 0 && p50 < longest, `the median ${p50} s is below the longest`);
  for (const q of ['0.99', '0.999']) assert.ok((lag(q) ?? -1) >= 0, `quantile ${q} is there`);
});

test('the event-loop delay is the lateness of the timer, not its interval: an idle loop reads 0', () => {
  // node:perf_hooks records the whole time between two runs of its timer (10 ms and up); the
  // metric is how late the run came, so a loop that ran the timer on time reads 0
  const ms = 1e6;
  const onTime = { count: 100, max: 10.4 * ms, percentile: (p: number) => (p < 99 ? 10.1 : 10.3) * ms };
  const l = lagOf(onTime, 10 * ms);
  assert.ok(Math.abs(l.p50 - 0.0001) < 1e-9, `p50 ${l.p50}`);
  assert.ok(Math.abs(l.max - 0.0004) < 1e-9, `max ${l.max}`);
  const late = { count: 100, max: 310 * ms, percentile: (p: number) => (p < 99 ? 10 : 60) * ms };
  const m = lagOf(late, 10 * ms);
  assert.equal(m.p50, 0);
  assert.ok(Math.abs(m.p99 - 0.05) < 1e-9 && Math.abs(m.max - 0.3) < 1e-9, JSON.stringify(m));
  assert.deepEqual(lagOf({ count: 0, max: 0, percentile: () => 0 }, 10 * ms), {
    p50: 0,
    p99: 0,
    p999: 0,
    max: 0,
  });
});

test('the event-loop monitor sleeps while its process is idle, wakes when it works, and still sees a stall', async (t) => {
  let cpu = 0;
  let now = 0;
  const m = new LoopLagMonitor({ cpuMicros: () => cpu, nowMs: () => now });
  t.after(() => m.close());
  const second = (cpuUs: number, lateMs = 0) => {
    cpu += cpuUs;
    now += 1000 + lateMs;
    m.check();
  };
  assert.equal(m.awake, true, 'awake from the start');
  second(2000);
  assert.equal(m.awake, false, '2 ms of CPU in a second is idle: the 10 ms timer sleeps');
  second(20_000);
  assert.equal(m.awake, true, '20 ms of CPU in a second is work: the timer runs again');
  second(1000);
  assert.equal(m.awake, false);
  // asleep, the check is the loop's only timer: it came 350 ms late, as after a long GC pause
  second(1000, 350);
  const seen = m.read();
  assert.ok(Math.abs(seen.max - 0.35) < 0.05, `the longest delay ${seen.max} s is the stall asleep`);
  // the reading covers the current window and the last full one (10 checks each), then forgets
  for (let i = 0; i < 20; i++) second(1000);
  assert.equal(m.awake, false);
  assert.deepEqual(
    { ...m.read(), worker: '' },
    { worker: '', p50: 0, p99: 0, p999: 0, max: 0 },
    'two windows later the stall is gone',
  );

  // woken after a real idle spell, the histogram does not count the time it slept as one delay
  await new Promise((r) => setTimeout(r, 300));
  second(50_000);
  assert.equal(m.awake, true);
  await new Promise((r) => setTimeout(r, 120));
  const woke = m.read();
  assert.ok(woke.max < 0.2, `after waking the longest delay ${woke.max} s leaves out the 300 ms asleep`);
});

/** voluntary context switches of every thread of a process: how often it went to sleep and woke */
function wakeups(pid: number): number {
  let n = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const m = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(
      readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8'),
    );
    n += Number(m?.[1] ?? 0);
  }
  return n;
}

test('an idle edge process wakes a few times a second, not 100 (the delay monitor sleeps)', async (t) => {
  const { startEdgeProc } = await import('./helpers/proc.js');
  const p = await startEdgeProc({
    config: { sites: [{ name: 'idle.example.com', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } }] },
  });
  t.after(() => p.kill());
  const pid = p.workerPid();
  // start-up work (compilation, the first checks) takes a second or two: the first 2 s window in
  // which the serving process is idle decides; with a 10 ms timer running, every window has ~200
  const windows: number[] = [];
  for (let i = 0; i < 6; i++) {
    const before = wakeups(pid);
    await new Promise((r) => setTimeout(r, 2000));
    windows.push(wakeups(pid) - before);
    if (windows.at(-1)! < 30) break;
  }
  assert.ok(windows.at(-1)! < 30, `wake-ups per 2 s of the idle serving process: ${windows.join(', ')}`);
});
