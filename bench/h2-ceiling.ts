// node:http2 ceilings for a Verge HTTP/2 cache HIT (bench/h2-gap.sh), all in one process: node's
// secure server with allowHTTP1 (as the shared harness's node/ceiling.js MODE=h2 and as Verge's
// own TLS server), answering a fixed 1 KiB buffer. One listener per variant, on PORT, PORT+1, ...
// in the order of VARIANTS (default "h2"):
//   h2 / c12  compat API, the same 12 response fields a Verge HIT of the benchmark origin's
//             object carries (so a ratio measures Verge's per-request work, not header count)
//   c3        compat API, the harness's 3 fields (content-type, content-length, cache-control)
//             plus the Date node adds: what ../shared/bench/node/ceiling.js answers
//   s12, s3   the same fields on the stream API (stream.respond() and stream.end(), Verge's fast
//             path's calls), without the compat layer's request/response objects
// One process for all, so the variants share one JIT and heap and CPU per request compares the
// fields and the API, nothing else (h2-gap.sh loads one listener at a time).
//   PORT (default 28392), TLS_KEY and TLS_CERT (PEM files), VARIANTS="c3 c12 s3 s12"
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { HIT_BODY, hitFields } from './hit-fields.js';

const tls = {
  key: readFileSync(process.env['TLS_KEY'] ?? ''),
  cert: readFileSync(process.env['TLS_CERT'] ?? ''),
  allowHTTP1: true,
};
// ceiling.js's fields, as it builds them (a number for content-length)
const three = {
  'content-type': 'application/octet-stream',
  'content-length': HIT_BODY.length,
  'cache-control': 'public, max-age=3600',
};
const threeStream = { ':status': 200, ...three };
const base = Number(process.env['PORT'] ?? 28392);
const variants = (process.env['VARIANTS'] ?? 'h2').split(/\s+/).filter(Boolean);
variants.forEach((v, i) => {
  let server: http2.Http2SecureServer;
  if (v === 'h2' || v === 'c12')
    server = http2.createSecureServer(tls, (_req, res) => {
      res.writeHead(200, hitFields());
      res.end(HIT_BODY);
    });
  else if (v === 'c3')
    server = http2.createSecureServer(tls, (_req, res) => {
      res.writeHead(200, three);
      res.end(HIT_BODY);
    });
  else if (v === 's12' || v === 's3') {
    server = http2.createSecureServer(tls);
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.respond(v === 's3' ? threeStream : { ':status': 200, ...hitFields() });
      stream.end(HIT_BODY);
    });
  } else throw new Error(`unknown variant ${v} in VARIANTS`);
  server.listen(base + i, '127.0.0.1');
});
// a clean exit on Ctrl-C, so that node --cpu-prof writes its profile
process.on('SIGINT', () => process.exit(0));
