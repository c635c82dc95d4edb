// The node:http ceiling for a Verge cache HIT: a fixed 1 KiB buffer with the same 12 response
// fields a Verge HIT of the benchmark origin's object carries (the shared harness's
// node/ceiling.js sends 3), so a ratio measures Verge's per-request work, not header count.
// Used by bench/hit-ab.sh and bench/hit-gap.sh; PORT (default 28391). With TLS_CERT and TLS_KEY
// (PEM files) it is node:https's fixed response instead (the HTTPS ceiling, SCHEME=https).
// `/100k.bin` answers 100 KiB of random (incompressible) bytes, as the shared harness's origin
// does, so that a script using this as the origin can replay the harness's 100 KiB hit cells
// (bench/h2-sequence.sh's `h1big`).

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { HIT_BODY, hitFields } from './hit-fields.js';

const BIG_BODY = randomBytes(102_400);

const date = new Date().toUTCString();
const cert = process.env['TLS_CERT'];
const key = process.env['TLS_KEY'];
const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
  if (req.url === '/100k.bin') {
    res.writeHead(200, {
      date,
      ...hitFields(),
      'content-length': String(BIG_BODY.length),
      etag: '"6560a1b2-19000"',
    });
    res.end(BIG_BODY);
    return;
  }
  res.writeHead(200, { date, ...hitFields() });
  res.end(HIT_BODY);
};
const server =
  cert && key
    ? https.createServer(
        { keepAliveTimeout: 65_000, noDelay: true, cert: readFileSync(cert), key: readFileSync(key) },
        handler,
      )
    : http.createServer({ keepAliveTimeout: 65_000 }, handler);
server.listen(Number(process.env['PORT'] ?? 28391), '127.0.0.1');
// a clean exit on Ctrl-C, so that node --cpu-prof writes its profile
process.on('SIGINT', () => process.exit(0));
