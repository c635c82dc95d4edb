// HTTP/2 hit connections (src/edge/h2-conn.ts) with a real browser: Debian's Chromium loads a page
// whose document and assets are cached hits, over HTTP/2, then fetches something that is never
// cached. The hits go over Verge's own framing; the uncached request ends that connection with a
// GOAWAY, and Chromium must send it again on a new connection by itself: the page sees every
// answer whole and no error.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { type Browser, chromium } from 'playwright-core';
import { h2ConnAnswers, h2ConnCounts } from '../src/edge/h2-conn.js';
import { CHROMIUM, chromiumAvailable } from './helpers/browser.js';
import { startEdge, type TestEdge } from './helpers/edge.js';
import { leafFor, testCa } from './helpers/pki.js';

const skip = chromiumAvailable()
  ? false
  : 'chromium is not installed (scripts/install-test-deps.sh installs it)';
const ASSETS = ['/a.js', '/b.css', ...Array.from({ length: 6 }, (_, i) => `/img${i}.bin`)];
const pulls = new Map<string, number>();
let origin: http.Server;
let edge: TestEdge;
let browser: Browser;
let ca: string;

const PAGE = `<!doctype html><html><head><title>loading</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/b.css">
<script src="/a.js"></script></head><body>
<script>
window.addEventListener('load', async () => {
  // the binary assets by fetch(): an <img> of bytes that are no image is cancelled by Chromium
  const sizes = [];
  for (let i = 0; i < 6; i++) sizes.push((await (await fetch('/img' + i + '.bin')).arrayBuffer()).byteLength);
  window.sizes = sizes;
  const r = await fetch('/fresh.txt?' + Date.now());
  document.title = 'done ' + r.status + ' ' + (await r.text());
});
</script></body></html>`;

before(async () => {
  if (skip) return;
  origin = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    pulls.set(path, (pulls.get(path) ?? 0) + 1);
    const cached = { 'cache-control': 'public, max-age=3600' };
    if (path === '/page.html') {
      res.writeHead(200, { ...cached, 'content-type': 'text/html' });
      res.end(PAGE);
    } else if (path === '/a.js') {
      res.writeHead(200, { ...cached, 'content-type': 'text/javascript' });
      res.end('window.scriptRan = true;');
    } else if (path === '/b.css') {
      res.writeHead(200, { ...cached, 'content-type': 'text/css' });
      res.end('body { margin: 0 }');
    } else if (path.startsWith('/img')) {
      res.writeHead(200, { ...cached, 'content-type': 'application/octet-stream' });
      res.end(Buffer.alloc(20_000 + Number(path[4]) * 30_000, 1));
    } else {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
      res.end('fresh');
    }
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const port = (origin.address() as AddressInfo).port;
  ca = (await testCa()).certPem;
  const cert = await leafFor(['a.test']);
  edge = await startEdge([{ name: 'a.test', cert, origin: { servers: [{ host: '127.0.0.1', port }] } }]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      // a.test is this edge; Chromium's own resolver, not /etc/hosts
      `--host-resolver-rules=MAP a.test 127.0.0.1`,
    ],
    timeout: 60_000,
  });
});

after(async () => {
  if (skip) return;
  await browser?.close();
  await edge?.close();
  origin?.close();
});

test("Chromium loads a page of cached hits over Verge's HTTP/2 framing, and an uncached fetch after them by itself", {
  skip,
}, async () => {
  // fill the cache, and the compressed copies of the page, script and style sheet as Chromium
  // asks for them (this connection starts with a miss: node:http2's)
  const s = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, { ca, servername: 'a.test' });
  for (const p of ['/page.html', ...ASSETS]) {
    for (const enc of [undefined, 'gzip, deflate, br, zstd']) {
      await new Promise<void>((resolve, reject) => {
        const r = s.request({
          ':path': p,
          ':authority': 'a.test',
          ...(enc ? { 'accept-encoding': enc } : {}),
        });
        r.on('error', reject);
        r.resume();
        r.on('end', () => resolve());
      });
    }
  }
  await new Promise<void>((r) => s.close(() => r()));
  // the compressed copies are stored as their streams end
  await new Promise((r) => setTimeout(r, 100));
  const pulled = new Map(pulls);
  const answers = h2ConnAnswers();
  const ended = h2ConnCounts().endedByMiss;

  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  try {
    const page = await ctx.newPage();
    const failed: string[] = [];
    page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText}`));
    const statuses = new Map<string, number>();
    page.on('response', (r) => statuses.set(new URL(r.url()).pathname, r.status()));
    await page.goto(`https://a.test:${edge.httpsPort}/page.html`);
    await page.waitForFunction('document.title.startsWith("done")', undefined, { timeout: 15_000 });
    assert.equal(await page.title(), 'done 200 fresh');
    assert.deepEqual(failed, []);
    for (const p of ['/page.html', ...ASSETS]) assert.equal(statuses.get(p), 200, p);
    assert.equal(await page.evaluate('window.scriptRan'), true);
    assert.equal(await page.evaluate('performance.getEntriesByType("navigation")[0].nextHopProtocol'), 'h2');
    // every asset arrived whole, the larger ones (up to 170 KB) beyond a 64 KiB window's worth
    assert.deepEqual(
      await page.evaluate('window.sizes'),
      Array.from({ length: 6 }, (_, i) => 20_000 + i * 30_000),
    );
  } finally {
    await ctx.close();
  }
  // the page and its assets were hits answered by Verge's framing; the origin saw them only once
  // (when they were cached) and the uncached fetch once, though it ended a connection
  assert.ok(h2ConnAnswers() - answers >= 1 + ASSETS.length, `${h2ConnAnswers() - answers} answers`);
  for (const p of ['/page.html', ...ASSETS]) assert.equal(pulls.get(p), pulled.get(p), p);
  assert.equal(pulls.get('/fresh.txt'), 1);
  assert.equal(h2ConnCounts().endedByMiss - ended, 1);
});
