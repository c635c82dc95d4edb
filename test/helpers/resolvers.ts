// Real DNS software for the end-to-end DNS tests, each instance on its own loopback port with a
// config written into a fresh temp dir, killed on stop() and at exit:
//   - NSD (Debian's nsd) as the customer's DNS host, authoritative for their zone (example.com:
//     `www CNAME www-example-com.cdn.example.test.`, the _acme-challenge CNAMEs);
//   - unbound (Debian's unbound) as a visitor's recursive resolver, with stub zones pointing at
//     NSD for the customer's zone and at Verge for the CDN zone, so a lookup walks the same CNAME
//     chain as on the Internet without any Internet.
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { killAtExit, removeAtExit } from './children.js';
import { freePort } from './nginx.js';

export const NSD_BIN = '/usr/sbin/nsd';
export const UNBOUND_BIN = '/usr/sbin/unbound';

export interface DnsProc {
  port: number;
  output(): string;
  stop(): Promise<void>;
}

function runProc(bin: string, args: string[], dir: string): { child: ChildProcess; output: () => string } {
  const child = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  killAtExit(child);
  let out = '';
  const add = (s: string) => {
    out = (out + s).slice(-64_000);
  };
  child.stdout?.setEncoding('utf8').on('data', add);
  child.stderr?.setEncoding('utf8').on('data', add);
  child.on('error', (e) => add(`spawn error: ${e.message}\n`));
  return { child, output: () => out };
}

/** Resolves once something at 127.0.0.1:port answers a DNS query for `name` over UDP. */
async function answering(
  port: number,
  name: string,
  child: ChildProcess,
  output: () => string,
): Promise<void> {
  const deadline = Date.now() + 15_000;
  const q = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'SOA', name }] });
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`${child.spawnfile} exited (${child.exitCode}):\n${output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket('udp4');
      const t = setTimeout(() => {
        s.close();
        resolve(false);
      }, 300);
      s.on('message', () => {
        clearTimeout(t);
        s.close();
        resolve(true);
      });
      s.on('error', () => undefined);
      s.send(q, port, '127.0.0.1');
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`${child.spawnfile} did not answer on port ${port}:\n${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stopper(child: ChildProcess, dir: string, forget: () => void): () => Promise<void> {
  let stopped: Promise<void> | undefined;
  return () => {
    stopped ??= new Promise<void>((resolve) => {
      const done = () => {
        rmSync(dir, { recursive: true, force: true });
        forget();
        resolve();
      };
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once('exit', done);
      child.kill('SIGKILL');
    });
    return stopped;
  };
}

/** NSD serving the given zones (name -> master file text) on 127.0.0.1. */
export async function startNsd(zones: Record<string, string>): Promise<DnsProc> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-nsd-'));
  const forget = removeAtExit(dir);
  const port = await freePort();
  const zoneConf = Object.keys(zones)
    .map((name, i) => {
      writeFileSync(join(dir, `zone${i}.zone`), zones[name]!);
      return `zone:\n  name: "${name}"\n  zonefile: "zone${i}.zone"\n`;
    })
    .join('');
  writeFileSync(
    join(dir, 'nsd.conf'),
    `server:
  ip-address: 127.0.0.1@${port}
  username: ""
  chroot: ""
  zonesdir: "${dir}"
  zonelistfile: "${dir}/zone.list"
  database: ""
  pidfile: "${dir}/nsd.pid"
  xfrdfile: "${dir}/xfrd.state"
  xfrdir: "${dir}"
  server-count: 1
  verbosity: 1
  do-ip6: no
remote-control:
  control-enable: no
${zoneConf}`,
  );
  const { child, output } = runProc(NSD_BIN, ['-d', '-c', join(dir, 'nsd.conf')], dir);
  const stop = stopper(child, dir, forget);
  try {
    await answering(port, Object.keys(zones)[0]!, child, output);
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, output, stop };
}

/**
 * unbound as a recursive resolver on 127.0.0.1 whose only knowledge is its stub zones
 * (zone -> "127.0.0.1@PORT"). No DNSSEC validation (the test zones are unsigned); negative answers
 * cached 5 s at most, so a test watching a change does not wait on a stale NXDOMAIN.
 */
export async function startUnbound(stubs: Record<string, string>, extra = ''): Promise<DnsProc> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-unbound-'));
  const forget = removeAtExit(dir);
  const port = await freePort();
  const stubConf = Object.entries(stubs)
    .map(([zone, addr]) => `stub-zone:\n  name: "${zone}"\n  stub-addr: ${addr}\n`)
    .join('');
  writeFileSync(
    join(dir, 'unbound.conf'),
    `server:
  interface: 127.0.0.1
  port: ${port}
  username: ""
  chroot: ""
  directory: "${dir}"
  pidfile: "${dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  so-reuseport: no
  do-ip6: no
  do-not-query-localhost: no
  module-config: "iterator"
  qname-minimisation: no
  access-control: 127.0.0.0/8 allow
  cache-max-negative-ttl: 5
  infra-host-ttl: 5
  # unbound answers the reserved .test names itself (RFC 6761); the test zones live there
  local-zone: "test." nodefault
${extra}
remote-control:
  control-enable: no
${stubConf}`,
  );
  const { child, output } = runProc(UNBOUND_BIN, ['-d', '-c', join(dir, 'unbound.conf')], dir);
  const stop = stopper(child, dir, forget);
  try {
    await answering(port, Object.keys(stubs)[0]!, child, output);
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, output, stop };
}

/**
 * The customer's zone example.com as their DNS host holds it: SOA, NS, and `www` as a CNAME to its
 * name in the CDN zone `cdnZone`; `lines` adds records (e.g. the _acme-challenge CNAME).
 */
export function customerZone(cdnZone: string, ...lines: string[]): string {
  return [
    '$ORIGIN example.com.',
    '$TTL 60',
    '@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60',
    '@ IN NS ns1.example.com.',
    'ns1 IN A 127.0.0.1',
    `www IN CNAME www-example-com.${cdnZone}.`,
    ...lines,
    '',
  ].join('\n');
}
