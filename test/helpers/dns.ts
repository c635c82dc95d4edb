// Helpers for the DNS tests: a store seeded with a zone, sites and edge heartbeats, Verge's DNS
// service started on a loopback port, and `dig` (Debian's bind9-dnsutils) with its output parsed.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DnsService } from '../../src/dns/service.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';
import type { JsonValue } from '../../src/store/types.js';
import { removeAtExit } from './children.js';

export const DIG = '/usr/bin/dig';

export type LogLine = Record<string, unknown>;

/** A pino logger whose lines the test can read. */
export function captureLog(): { log: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write(s: string) {
        lines.push(JSON.parse(s) as LogLine);
      },
    },
  );
  return { log, lines };
}

export interface EdgeRecord {
  id: string;
  publicAddresses: string[];
  region?: string;
  weight?: number;
  /** the HTTP listener the DNS health-checks ("127.0.0.1:8080") */
  http?: string;
  state?: 'active' | 'draining' | 'disabled';
}

/** A node record as an edge's heartbeat writes it, seen `agoMs` ago. */
export function nodeRecord(e: EdgeRecord, agoMs = 0): JsonValue {
  return {
    id: e.id,
    hostname: 'test',
    pid: 1,
    version: '0.1.0',
    startedAt: new Date().toISOString(),
    lastSeen: new Date(Date.now() - agoMs).toISOString(),
    appliedRevision: 1,
    http: e.http ? [e.http] : [],
    https: [],
    publicAddresses: e.publicAddresses,
    ...(e.region ? { region: e.region } : {}),
    ...(e.weight ? { weight: e.weight } : {}),
    ...(e.state ? { state: e.state } : {}),
  };
}

export interface Fixture {
  dir: string;
  store: SqliteStore;
  svc?: DnsService;
  port: number;
  lines: LogLine[];
  /** rewrites every edge's heartbeat (they are live for 15 s) */
  beat(edges: EdgeRecord[]): Promise<void>;
  close(): Promise<void>;
}

/** A store with these documents and the DNS service on 127.0.0.1 (UDP and TCP on one port). */
export async function startDns(docs: Record<string, JsonValue>, edges: EdgeRecord[] = []): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-dns-'));
  const forget = removeAtExit(dir);
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  for (const [k, v] of Object.entries(docs)) await store.put(k, v);
  const beat = async (list: EdgeRecord[]) => {
    for (const e of list) await store.put(`nodes/${e.id}`, nodeRecord(e));
  };
  await beat(edges);
  const { log, lines } = captureLog();
  const svc = await DnsService.start({ store, baseDir: dir, log, listen: ['127.0.0.1:0'] });
  const port = svc.server.addresses()[0]!.port;
  return {
    dir,
    store,
    svc,
    port,
    lines,
    beat,
    async close() {
      await svc.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      forget();
    },
  };
}

export interface DigResult {
  text: string;
  status: string;
  flags: string[];
  answer: string[][];
  authority: string[][];
  additional: string[][];
  /** the OPT pseudosection lines */
  opt: string[];
  /** "UDP" or "TCP": how the final answer came */
  transport: string;
}

/** Runs dig against 127.0.0.1:port and parses what it prints. */
export function dig(port: number, args: string[], server = '127.0.0.1'): Promise<DigResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(DIG, [`@${server}`, '-p', String(port), '+time=3', '+tries=1', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      text += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      text += s;
    });
    child.on('error', reject);
    child.on('close', () => resolve(parseDig(text)));
  });
}

export function parseDig(text: string): DigResult {
  const section = (title: string): string[][] => {
    const at = text.indexOf(`;; ${title} SECTION:\n`);
    if (at < 0) return [];
    const body = text.slice(at).split('\n').slice(1);
    const out: string[][] = [];
    for (const l of body) {
      if (l.trim() === '') break;
      out.push(l.trim().split(/\s+/));
    }
    return out;
  };
  const opt: string[] = [];
  const optAt = text.indexOf(';; OPT PSEUDOSECTION:');
  if (optAt >= 0)
    for (const l of text.slice(optAt).split('\n').slice(1)) {
      if (!l.startsWith('; ') || l.startsWith(';; ')) break;
      opt.push(l.slice(2));
    }
  return {
    text,
    status: /status: ([A-Z]+)/.exec(text)?.[1] ?? '',
    flags: (/;; flags: ([a-z ]*);/.exec(text)?.[1] ?? '').split(' ').filter(Boolean),
    answer: section('ANSWER'),
    authority: section('AUTHORITY'),
    additional: section('ADDITIONAL'),
    opt,
    transport: /;; SERVER: .*\((UDP|TCP)\)/.exec(text)?.[1] ?? '',
  };
}
