// HTTP/2 client conveniences: the answer to one stream as status and text body.
import type http2 from 'node:http2';

export interface H2Answer {
  status: number;
  body: string;
}

/** Collect the response of a client stream already sent (or being sent): status and body. */
export function h2Answer(s: http2.ClientHttp2Stream): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let body = '';
    s.on('response', (h) => {
      status = Number(h[':status']);
    });
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      body += d;
    });
    s.on('end', () => resolve({ status, body }));
    s.on('error', reject);
  });
}

/** One GET on an existing session. */
export function h2Get(client: http2.ClientHttp2Session, authority: string, path: string): Promise<H2Answer> {
  return h2Answer(client.request({ ':path': path, ':authority': authority }));
}
