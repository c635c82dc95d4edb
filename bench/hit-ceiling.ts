// The node:http ceiling for a Verge cache HIT: a fixed 1 KiB buffer with the same 12 response
// fields a Verge HIT of the benchmark origin's object carries (the shared harness's
// node/ceiling.js sends 3), so a ratio measures Verge's per-request work, not header count.
// Used by bench/hit-ab.sh; PORT (default 28391).
import http from 'node:http';

const body = Buffer.alloc(1024, 'a');
const lastModified = new Date(Date.now() - 86_400_000).toUTCString();
const date = new Date().toUTCString();
let n = 0;
http
  .createServer({ keepAliveTimeout: 65_000 }, (_req, res) => {
    res.writeHead(200, {
      server: 'nginx/1.22.1',
      date,
      'content-type': 'application/octet-stream',
      'content-length': '1024',
      'last-modified': lastModified,
      etag: '"6560a1b2-400"',
      'cache-control': 'public, max-age=3600',
      'accept-ranges': 'bytes',
      age: '1',
      'x-request-id': `abcdefgh${(++n).toString(36)}`,
      'x-cache': 'HIT',
      via: '1.1 verge',
    });
    res.end(body);
  })
  .listen(Number(process.env['PORT'] ?? 28391), '127.0.0.1');
// a clean exit on Ctrl-C, so that node --cpu-prof writes its profile
process.on('SIGINT', () => process.exit(0));
