// `verge serve --data DIR`: the edge fed by the store, changed through the admin API, restarted,
// killed mid-write, and given a corrupt store. Real processes, real sockets, a real SQLite file.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { openDataStore } from '../src/control/data.js';
import { type HttpOrigin, httpOrigin, refusingPort } from './helpers/origins.js';
import { leafFor, testCa } from './helpers/pki.js';
import { type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-data-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
after(() => agent.destroy());

interface Got {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  reused: boolean;
}

function get(port: number, host: string, path = '/', useAgent: http.Agent | false = agent): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: useAgent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers, reused: req.reusedSocket }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

function api(
  p: EdgeProc,
  dataDir: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown>; headers: http.IncomingHttpHeaders }> {
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port: p.adminPort,
        method,
        path,
        agent: false,
        headers: {
          authorization: `Bearer ${token}`,
          ...(data ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {}, headers: res.headers }),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const origins: HttpOrigin[] = [];
after(async () => {
  for (const o of origins) await o.close();
});
async function namedOrigin(name: string): Promise<HttpOrigin> {
  const o = await httpOrigin((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
    res.end(`${name} ${req.url}`);
  });
  origins.push(o);
  return o;
}

describe('an edge fed by the store', () => {
  test('an API change is served within one second on the same connection, and a restart serves it too', async () => {
    const a = await namedOrigin('A');
    const b = await namedOrigin('B');
    const dataDir = tempDir();
    let p = await startEdgeProc({
      dataDir,
      config: {
        sites: [{ name: 'www.test', origin: { servers: [{ host: '127.0.0.1', port: a.port }] } }],
      },
    });
    try {
      const first = await get(p.httpPort, 'www.test', '/x');
      assert.equal(first.status, 200);
      assert.equal(first.body, 'A /x');
      // the data directory and the store file hold private keys and token hashes
      assert.equal(statSync(dataDir).mode & 0o777, 0o700);
      assert.equal(statSync(join(dataDir, 'verge.db')).mode & 0o777, 0o600);
      assert.equal(statSync(join(dataDir, 'admin.token')).mode & 0o777, 0o600);

      const site = await api(p, dataDir, 'GET', '/api/v1/sites/www.test');
      assert.equal(site.status, 200);
      const patched = await api(
        p,
        dataDir,
        'PATCH',
        '/api/v1/sites/www.test',
        { origin: { servers: [{ host: '127.0.0.1', port: b.port }] }, cache: { enabled: false } },
        { 'if-match': String(site.headers.etag) },
      );
      assert.equal(patched.status, 200, JSON.stringify(patched.json));
      const t0 = performance.now();
      let r: Got;
      do {
        r = await get(p.httpPort, 'www.test', '/x');
        assert.ok(r.reused, 'the keep-alive connection was kept across the change');
        assert.equal(r.status, 200);
      } while (r.body !== 'B /x' && performance.now() - t0 < 3000);
      const ms = performance.now() - t0;
      assert.equal(r.body, 'B /x');
      assert.ok(ms < 1000, `served within one second (${Math.round(ms)} ms)`);

      p.signal('SIGTERM');
      assert.equal((await p.waitForExit(15_000)).code, 0);
      await p.kill();
      p = await startEdgeProc({ dataDir, importConfig: false, config: {} });
      const again = await get(p.httpPort, 'www.test', '/y', false);
      assert.equal(again.body, 'B /y', 'the restarted edge serves the config from the store');
    } finally {
      await p.kill();
    }
  });

  test('a stored change that does not make a valid config is rejected and the running config keeps serving', async () => {
    const a = await namedOrigin('A');
    const dataDir = tempDir();
    const p = await startEdgeProc({
      dataDir,
      config: { sites: [{ name: 'ok.test', origin: { servers: [{ host: '127.0.0.1', port: a.port }] } }] },
    });
    try {
      // written behind the API's back (another process on the same store file): a certificate
      // reference that does not exist
      const store = openDataStore(dataDir);
      await store.put('sites/bad.test', {
        name: 'bad.test',
        tls: { certificate: 'missing' },
        origin: { servers: [{ host: '127.0.0.1', port: a.port }] },
      });
      await store.close();
      const line = await p.waitForLog((l) => String(l.msg).startsWith('store change rejected'));
      assert.match(
        String(line.msg),
        /for site bad\.test .*the site is not served until it is fixed.*: tls\.certificate: no stored certificate named "missing"/,
      );
      const r = await get(p.httpPort, 'ok.test', '/still', false);
      assert.equal(r.body, 'A /still');
      assert.equal((await get(p.httpPort, 'bad.test', '/', false)).status, 404);
    } finally {
      await p.kill();
    }
  });

  test('a purge through the API reaches the edge cache, and its job is done once the edge applied it', async () => {
    let hits = 0;
    const o = await httpOrigin((req, res) => {
      hits++;
      res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' });
      res.end(`v${hits} ${req.url}`);
    });
    origins.push(o);
    const dataDir = tempDir();
    const p = await startEdgeProc({
      dataDir,
      config: { sites: [{ name: 'p.test', origin: { servers: [{ host: '127.0.0.1', port: o.port }] } }] },
    });
    try {
      assert.equal((await get(p.httpPort, 'p.test', '/a', false)).body, 'v1 /a');
      const hit = await get(p.httpPort, 'p.test', '/a', false);
      assert.equal(hit.headers['x-cache'], 'HIT');
      const job = await api(p, dataDir, 'POST', '/api/v1/purge', {
        type: 'url',
        values: ['http://p.test/a'],
      });
      assert.equal(job.status, 202, JSON.stringify(job.json));
      const id = String(job.json['id']);
      const t0 = performance.now();
      let state = '';
      while (performance.now() - t0 < 5000) {
        state = String((await api(p, dataDir, 'GET', `/api/v1/jobs/${id}`)).json['state']);
        if (state === 'done') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(state, 'done');
      // the same, read on the command line: the job, the node that applied it, the config
      const cli = ['--api', `http://127.0.0.1:${p.adminPort}`, '--data', dataDir];
      const jobs = await runCli(['jobs', id, ...cli]);
      assert.equal(jobs.code, 0, jobs.stderr);
      assert.match(jobs.stdout, new RegExp(`^${id} +done .*hard purge url http://p\\.test/a$`, 'm'));
      const nodes = await runCli(['nodes', '--json', ...cli]);
      const items = JSON.parse(nodes.stdout).items as Array<{
        live: boolean;
        appliedRevision: number;
        http: string[];
      }>;
      assert.equal(items.length, 1);
      assert.equal(items[0]!.live, true);
      assert.ok(items[0]!.appliedRevision >= Number(job.json['revision']));
      assert.deepEqual(items[0]!.http, [`127.0.0.1:${p.httpPort}`]);
      const shown = await runCli(['config', 'show', ...cli]);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, /name: p\.test/);
      assert.match(shown.stdout, /defaultTtl:/, 'defaults filled in');
      const after = await get(p.httpPort, 'p.test', '/a', false);
      assert.equal(after.headers['x-cache'], 'MISS');
      assert.equal(after.body, 'v2 /a');
      assert.equal(hits, 2);

      // prefetch through the API warms the edge: the next visitor gets a HIT
      const list = join(dataDir, 'urls.txt');
      writeFileSync(list, '# warm these\nhttp://p.test/b\nhttp://p.test/c\n');
      const pre = await runCli([
        'prefetch',
        list,
        '--api',
        `http://127.0.0.1:${p.adminPort}`,
        '--data',
        dataDir,
      ]);
      assert.equal(pre.code, 0, pre.stderr + pre.stdout);
      assert.equal(hits, 4, 'the origin was asked once for each URL');
      const warm = await get(p.httpPort, 'p.test', '/b', false);
      assert.equal(warm.headers['x-cache'], 'HIT');
      assert.equal(hits, 4);
    } finally {
      await p.kill();
    }
  });
});

describe('verge trace through a store-fed edge', () => {
  test('prints the stages, the cache decision and the origin, from the record the API keeps', async () => {
    const a = await namedOrigin('T');
    const dataDir = tempDir();
    const p = await startEdgeProc({
      dataDir,
      config: { sites: [{ name: 't.test', origin: { servers: [{ host: '127.0.0.1', port: a.port }] } }] },
    });
    try {
      const args = (url: string) => [
        'trace',
        url,
        '--edge',
        `127.0.0.1:${p.httpPort}`,
        '--api',
        `http://127.0.0.1:${p.adminPort}`,
        '--data',
        dataDir,
      ];
      const miss = await runCli(args('http://t.test/traced'));
      assert.equal(miss.code, 0, miss.stderr);
      assert.match(miss.stdout, /MISS/);
      assert.match(
        miss.stdout,
        new RegExp(`origin +127\\.0\\.0\\.1 port ${a.port} over http`),
        'the origin server chosen',
      );
      const hit = await runCli([...args('http://t.test/traced'), '--json']);
      const t = JSON.parse(hit.stdout) as { status: number; record?: { cache?: { state?: string } } };
      assert.equal(t.status, 200);
      assert.equal(t.record?.cache?.state, 'HIT', 'the edge record came back through the API');
      // `verge explain ID` against the control plane tells the same record's story
      const id = String((t.record as { id?: string } | undefined)?.id);
      const story = await runCli([
        'explain',
        id,
        '--api',
        `http://127.0.0.1:${p.adminPort}`,
        '--data',
        dataDir,
      ]);
      assert.equal(story.code, 0, story.stderr);
      assert.match(story.stdout, /the request was served/);
      const unknown = await runCli([
        'explain',
        'nope',
        '--api',
        `http://127.0.0.1:${p.adminPort}`,
        '--data',
        dataDir,
      ]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /no record of request "nope"/);

      // saving a site runs the doctor's origin checks and returns their warnings
      const closed = await refusingPort();
      const saved = await api(p, dataDir, 'PATCH', '/api/v1/sites/t.test', {
        origin: { servers: [{ host: '127.0.0.1', port: closed }] },
      });
      assert.equal(saved.status, 200, JSON.stringify(saved.json));
      const warnings = saved.json['warnings'] as Array<{ code: string; fix?: string }>;
      const refused = warnings.find((w) => w.code === 'ORIGIN_HTTP_PORT_REFUSED');
      assert.ok(refused, `warnings: ${JSON.stringify(warnings)}`);
    } finally {
      await p.kill();
    }
  });
});

describe('durability', () => {
  test('kill -9 during a burst of API writes: every acknowledged write is there after restart, nothing half-written', async () => {
    const a = await namedOrigin('A');
    const dataDir = tempDir();
    let p = await startEdgeProc({ dataDir, config: {} });
    const acked: string[] = [];
    let stop = false;
    try {
      const lane = async (lane: number) => {
        for (let i = 0; !stop; i++) {
          const name = `s${lane}-${i}.test`;
          try {
            const r = await api(p, dataDir, 'POST', '/api/v1/sites', {
              name,
              aliases: [`alias-${lane}-${i}.test`],
              origin: { servers: [{ host: '127.0.0.1', port: a.port }], protocol: 'http' },
            });
            if (r.status === 201) acked.push(name);
            else throw new Error(`unexpected ${r.status}`);
          } catch {
            return; // the process is gone
          }
        }
      };
      const lanes = [0, 1, 2, 3].map(lane);
      while (acked.length < 40) await new Promise((r) => setTimeout(r, 5));
      process.kill(p.pid, 'SIGKILL');
      stop = true;
      await Promise.all(lanes);
      await p.kill();
      p = await startEdgeProc({ dataDir, importConfig: false, config: {} });
      const list = await api(p, dataDir, 'GET', '/api/v1/sites');
      const items = list.json['items'] as Array<{
        name: string;
        site: { aliases: string[]; origin: unknown };
      }>;
      const names = new Set(items.map((s) => s.name));
      for (const n of acked) assert.ok(names.has(n), `acknowledged site ${n} survived`);
      for (const s of items) {
        // whole documents only: each site has its alias and origin as written
        assert.deepEqual(s.site.aliases, [`alias-${s.name.slice(1, -5)}.test`]);
        assert.ok(s.site.origin);
      }
      // and the restarted edge serves one of them
      const any = acked.at(-1)!;
      assert.equal((await get(p.httpPort, any, '/k', false)).body, 'A /k');
    } finally {
      stop = true;
      await p.kill();
    }
  });

  test('a corrupt store file stops the start with a message naming the file, never an empty config', async () => {
    const dataDir = tempDir();
    writeFileSync(join(dataDir, 'verge.db'), Buffer.alloc(8192, 0x5a));
    const r = await runCli(['serve', '--data', dataDir], { timeoutMs: 45_000 });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`cannot open store file ${join(dataDir, 'verge.db').replace(/[.]/g, '\\.')}`),
    );
    assert.match(r.stderr, /restore|move it aside/);
    // the file was not replaced
    assert.equal(readFileSync(join(dataDir, 'verge.db'))[0], 0x5a);
  });
});

describe('config import and export', () => {
  test('export then import into a new store gives back the same documents and files', async () => {
    const ca = await testCa();
    const leaf = await leafFor(['www.rt.test', 'rt.test']);
    const src = tempDir();
    writeFileSync(join(src, 'www.crt'), `${leaf.certPem.trimEnd()}\n${ca.certPem}`);
    writeFileSync(join(src, 'www.key'), leaf.keyPem);
    writeFileSync(join(src, 'ca.pem'), ca.certPem);
    writeFileSync(
      join(src, 'verge.yaml'),
      [
        'edge:',
        '  limits: {maxBodySize: 10MiB}',
        'log: {level: warn}',
        'sites:',
        '  - name: www.rt.test',
        '    aliases: [rt.test]',
        '    tls: {cert: www.crt, key: www.key}',
        '    origin:',
        '      servers: [{host: 10.0.0.1, port: 8080, weight: 3}]',
        '      protocol: https',
        '      ca: ca.pem',
        '    cache: {defaultTtl: 5m}',
        '  - name: plain.rt.test',
        '    origin: {servers: [{host: 10.0.0.2}]}',
        '',
      ].join('\n'),
    );
    const d1 = tempDir();
    const d2 = tempDir();
    const out1 = tempDir();
    const out2 = tempDir();
    const run = async (args: string[]) => {
      const r = await runCli(args);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    await run(['config', 'import', join(src, 'verge.yaml'), '--data', d1]);
    await run(['config', 'export', '--data', d1, '--out', out1]);
    await run(['config', 'import', join(out1, 'verge.yaml'), '--data', d2]);
    await run(['config', 'export', '--data', d2, '--out', out2]);
    const body = (f: string) => readFileSync(f, 'utf8').replace(/^# Exported.*\n/, '');
    assert.equal(body(join(out2, 'verge.yaml')), body(join(out1, 'verge.yaml')));
    assert.equal(
      readFileSync(join(out2, 'certs', 'www.crt'), 'utf8'),
      `${leaf.certPem.trimEnd()}\n${ca.certPem}`,
    );
    assert.equal(statSync(join(out2, 'certs', 'www.key')).mode & 0o777, 0o600);
    const docs = async (d: string) => {
      const s = openDataStore(d);
      const snap = await s.snapshot();
      await s.close();
      return snap.entries
        .filter((e) => !e.key.startsWith('tokens/'))
        .map((e) => {
          const v = e.value as Record<string, unknown>;
          const { createdAt: _ignored, ...rest } = v;
          return [e.key, rest];
        });
    };
    assert.deepEqual(await docs(d2), await docs(d1));
    const yaml = body(join(out1, 'verge.yaml'));
    assert.match(yaml, /maxBodySize: 10MiB/, 'sections are kept as written');
    assert.match(yaml, /defaultTtl: 5m/);
    // without --out: YAML that refers to the stored certificate by name
    const printed = await run(['config', 'export', '--data', d1]);
    assert.match(printed, /certificate: www/);
    assert.doesNotMatch(printed, /PRIVATE KEY/);
  });

  test('an invalid file is reported with line numbers and nothing is imported', async () => {
    const src = tempDir();
    const d = tempDir();
    writeFileSync(
      join(src, 'bad.yaml'),
      'sites:\n  - name: x.test\n    origin: {servers: [{host: a, port: 99999}]}\n    bogus: 1\n',
    );
    const r = await runCli(['config', 'import', join(src, 'bad.yaml'), '--data', d]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /sites\[0\]\.origin\.servers\[0\]\.port/);
    assert.match(r.stderr, /:4:\d+.*sites\[0\]\.bogus: unknown key|sites\[0\]\.bogus.*unknown key/);
    assert.match(r.stderr, /nothing imported/);
    const s = openDataStore(d);
    assert.equal((await s.snapshot('sites/')).entries.length, 0);
    await s.close();
  });
});
