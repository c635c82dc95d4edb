// The node:http2 ceiling for a Verge HTTP/2 cache HIT (bench/h2-gap.sh): node:http2's secure
// server with allowHTTP1 and the compatibility API (as the shared harness's node/ceiling.js MODE=h2
// and as Verge's own TLS server), answering a fixed 1 KiB buffer with the same 12 response fields
// a Verge HIT of the benchmark origin's object carries, so a ratio measures Verge's per-request
// work, not header count. PORT (default 28392), TLS_KEY and TLS_CERT (PEM files).
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { HIT_BODY, hitFields } from './hit-fields.js';

const server = http2.createSecureServer(
  {
    key: readFileSync(process.env['TLS_KEY'] ?? ''),
    cert: readFileSync(process.env['TLS_CERT'] ?? ''),
    allowHTTP1: true,
  },
  (_req, res) => {
    res.writeHead(200, hitFields());
    res.end(HIT_BODY);
  },
);
server.listen(Number(process.env['PORT'] ?? 28392), '127.0.0.1');
// a clean exit on Ctrl-C, so that node --cpu-prof writes its profile
process.on('SIGINT', () => process.exit(0));
