// Real etcd for tests: Debian's etcd-server (etcd 3.4, installed by scripts/install-test-deps.sh),
// one member or a cluster of several, each on loopback ports of its own with its own data dir in
// a fresh temp dir. Members can be killed, restarted and asked who leads (etcd's JSON gateway,
// POST /v3/maintenance/status), so tests can break the cluster the way production does.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { killAtExit, removeAtExit } from './children.js';
import { freePort } from './nginx.js';
import { leafFor, testCa } from './pki.js';

export const ETCD_BIN = '/usr/bin/etcd';
const START_TIMEOUT_MS = 30_000;

export interface EtcdMember {
  name: string;
  /** "127.0.0.1:PORT", the client port */
  endpoint: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  /** the running process, undefined while killed */
  child: ChildProcess | undefined;
  output(): string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** every member's "127.0.0.1:PORT" */
  endpoints: string[];
  /** when started with tls: PEM of the CA that signed the members' and the client's certificates */
  tls?: { caPem: string; clientCertPem: string; clientKeyPem: string };
  /** SIGKILL (default) or another signal to member i; resolves once it exited */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** starts member i again on its data dir and ports; resolves once it serves */
  restart(i: number): Promise<void>;
  /** index of the member that is the raft leader now (waits for one, up to 15 s) */
  leader(): Promise<number>;
  /** resolves once every running member answers /health true */
  healthy(): Promise<void>;
  /** kills every member and removes the temp dir; safe to call twice */
  stop(): Promise<void>;
}

export interface EtcdOptions {
  /** members of the cluster; default 1 */
  members?: number;
  /** serve the client port over TLS with a certificate from the test CA, client certificates required */
  tls?: boolean;
  /** more etcd flags for every member */
  args?: string[];
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 1;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'verge-etcd-'));
  const forget = removeAtExit(dir);
  const token = `verge-test-${path.basename(dir)}`;
  const ports: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) ports.push([await freePort(), await freePort()]);
  let tls: EtcdCluster['tls'];
  const tlsArgs: string[] = [];
  if (opts.tls) {
    const ca = await testCa();
    const server = await leafFor(['127.0.0.1', 'localhost']);
    const client = await leafFor(['verge-test-client'], { clientAuth: true });
    await writeFile(path.join(dir, 'ca.pem'), ca.certPem);
    await writeFile(path.join(dir, 'server.pem'), server.certPem);
    await writeFile(path.join(dir, 'server.key'), server.keyPem, { mode: 0o600 });
    tls = { caPem: ca.certPem, clientCertPem: client.certPem, clientKeyPem: client.keyPem };
    tlsArgs.push(
      `--cert-file=${path.join(dir, 'server.pem')}`,
      `--key-file=${path.join(dir, 'server.key')}`,
      `--trusted-ca-file=${path.join(dir, 'ca.pem')}`,
      '--client-cert-auth',
    );
  }
  const scheme = opts.tls ? 'https' : 'http';
  const initialCluster = ports.map(([, p], i) => `m${i}=http://127.0.0.1:${p}`).join(',');
  const members: EtcdMember[] = ports.map(([c, p], i) => {
    let out = '';
    return {
      name: `m${i}`,
      endpoint: `127.0.0.1:${c}`,
      clientPort: c,
      peerPort: p,
      dataDir: path.join(dir, `m${i}`),
      child: undefined,
      output: () => out,
      append(s: string) {
        out = out.length > 64_000 ? `${out.slice(-32_000)}${s}` : out + s;
      },
    } as EtcdMember & { append(s: string): void };
  });

  const launch = (i: number) => {
    const m = members[i] as EtcdMember & { append(s: string): void };
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=${scheme}://127.0.0.1:${m.clientPort}`,
      `--advertise-client-urls=${scheme}://127.0.0.1:${m.clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=${token}`,
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
      ...tlsArgs,
      ...(opts.args ?? []),
    ];
    const child = spawn(ETCD_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    killAtExit(child);
    child.stdout?.setEncoding('utf8').on('data', (s: string) => m.append(s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => m.append(s));
    child.once('error', (e) => m.append(`\nspawn failed: ${e.message}\n`));
    child.once('exit', (code, signal) => {
      m.append(`\n[exited ${signal ?? code}]\n`);
      if (m.child === child) m.child = undefined;
    });
    child.unref();
    (child.stdout as net.Socket | null)?.unref();
    (child.stderr as net.Socket | null)?.unref();
    m.child = child;
  };

  const call = (i: number, method: 'GET' | 'POST', p: string, timeoutMs = 2000): Promise<string> =>
    new Promise((resolve, reject) => {
      const mod = opts.tls ? https : http;
      const req = mod.request(
        {
          host: '127.0.0.1',
          port: members[i]!.clientPort,
          method,
          path: p,
          timeout: timeoutMs,
          ...(tls ? { ca: tls.caPem, cert: tls.clientCertPem, key: tls.clientKeyPem } : {}),
          headers: method === 'POST' ? { 'content-type': 'application/json' } : {},
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d: string) => {
            body += d;
          });
          res.on('end', () => resolve(body));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(method === 'POST' ? '{}' : undefined);
    });

  const healthyMember = async (i: number): Promise<boolean> => {
    try {
      return JSON.parse(await call(i, 'GET', '/health')).health === 'true';
    } catch {
      return false;
    }
  };

  const waitFor = async (what: string, pred: () => Promise<boolean>, ms = START_TIMEOUT_MS) => {
    const end = Date.now() + ms;
    while (!(await pred())) {
      if (Date.now() > end) {
        const logs = members.map((m) => `--- ${m.name}\n${m.output().slice(-3000)}`).join('\n');
        throw new Error(`etcd: timed out after ${ms} ms waiting for ${what}\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  for (let i = 0; i < n; i++) launch(i);
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.endpoint),
    ...(tls ? { tls } : {}),
    async kill(i, signal = 'SIGKILL') {
      const c = members[i]!.child;
      if (!c) return;
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      // held while waiting: the process is unref'd so that a forgotten one never holds a test open
      c.ref();
      c.kill(signal);
      await exited;
    },
    async restart(i) {
      if (members[i]!.child) throw new Error(`etcd member ${i} is still running`);
      launch(i);
      await waitFor(`member m${i} to serve again`, () => healthyMember(i));
    },
    async leader() {
      let found = -1;
      await waitFor(
        'a leader',
        async () => {
          for (let i = 0; i < n; i++) {
            if (!members[i]!.child) continue;
            try {
              const st = JSON.parse(await call(i, 'POST', '/v3/maintenance/status')) as {
                header?: { member_id?: string };
                leader?: string;
              };
              if (st.leader && st.leader !== '0' && st.leader === st.header?.member_id) {
                found = i;
                return true;
              }
            } catch {
              // not up or no answer: ask the next
            }
          }
          return false;
        },
        15_000,
      );
      return found;
    },
    async healthy() {
      await waitFor('every running member to be healthy', async () => {
        for (let i = 0; i < n; i++) if (members[i]!.child && !(await healthyMember(i))) return false;
        return true;
      });
    },
    async stop() {
      await Promise.all(members.map((_, i) => cluster.kill(i)));
      await rm(dir, { recursive: true, force: true });
      forget();
    },
  };
  try {
    await cluster.healthy();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}

/**
 * A loopback TCP proxy in front of `target` ("127.0.0.1:PORT"): a client that connects through it
 * can be cut off from the server (every connection reset, new ones refused) and let back in,
 * like a network partition between one store client and etcd.
 */
export interface CuttableProxy {
  /** "127.0.0.1:PORT" to connect to instead of the target */
  endpoint: string;
  /** resets every connection and refuses new ones until restore() */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function cuttableProxy(target: string): Promise<CuttableProxy> {
  const { createServer, connect } = await import('node:net');
  const [host, port] = [
    target.slice(0, target.lastIndexOf(':')),
    Number(target.slice(target.lastIndexOf(':') + 1)),
  ];
  const open = new Set<net.Socket>();
  let down = false;
  const server = createServer((client) => {
    if (down) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(port, host);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      open.delete(client);
      open.delete(upstream);
      if (!client.destroyed) client.resetAndDestroy();
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  server.unref();
  const { port: own } = server.address() as net.AddressInfo;
  return {
    endpoint: `127.0.0.1:${own}`,
    cut() {
      down = true;
      for (const s of open) s.resetAndDestroy();
      open.clear();
    },
    restore() {
      down = false;
    },
    close() {
      down = true;
      for (const s of open) s.resetAndDestroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
