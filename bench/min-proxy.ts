// The floor of any Node.js proxy on this machine: node:http in, one undici Pool out, nothing else
// (no routing, header rules, logging or error handling). bench/start-verge.sh starts it beside
// Verge (MIN_PROXY_PORT) so the benchmark shows how much of the gap to nginx is Node's own HTTP
// stack and how much is Verge's code.
import http from 'node:http';
import { Pool } from 'undici';

const origin = `http://127.0.0.1:${process.env['ORIGIN_PORT'] ?? '18080'}`;
const pool = new Pool(origin, { pipelining: 1 });
http
  .createServer((req, res) => {
    pool.dispatch(
      {
        path: req.url ?? '/',
        method: req.method ?? 'GET',
        headers: ['host', req.headers.host ?? 'localhost'],
      },
      {
        onRequestStart() {},
        onResponseStart(_c, status, headers) {
          res.writeHead(status, headers);
        },
        onResponseData(_c, chunk) {
          res.write(chunk);
        },
        onResponseEnd() {
          res.end();
        },
        onResponseError() {
          res.destroy();
        },
      },
    );
  })
  .listen(Number(process.env['MIN_PROXY_PORT'] ?? 18102), '127.0.0.1');
// a clean exit on SIGTERM, so `node --cpu-prof` writes its profile (bench/passthru.sh)
process.on('SIGTERM', () => process.exit(0));
