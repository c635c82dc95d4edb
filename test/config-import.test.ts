// `verge config import` is one store transaction: a large import killed (SIGKILL) at a random
// moment leaves the old config whole or the new one whole, never a mix, and an edge following the
// store never runs a mixed config. Real processes, a real SQLite file.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { stringify } from 'yaml';
import { openDataStore } from '../src/control/data.js';
import { killAtExit } from './helpers/children.js';
import { CLI, runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-import-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const OLD_SITES = 2000;
const NEW_SITES = 1500;
const OLD_PORT = 1001;
const NEW_PORT = 2002;

function configFile(dir: string, name: string, sites: number, port: number, level: string): string {
  const file = join(dir, name);
  const config = {
    edge: {
      http: { listen: ['127.0.0.1:0'] },
      https: { listen: ['127.0.0.1:0'] },
      admin: { listen: '127.0.0.1:0' },
    },
    log: { level, access: 'off' },
    sites: Array.from({ length: sites }, (_, i) => ({
      name: `s${i}.imp.test`,
      aliases: [`a${i}.imp.test`],
      origin: { servers: [{ host: '127.0.0.1', port }] },
    })),
  };
  writeFileSync(file, stringify(config));
  return file;
}

/** Which config the store holds: 'old', 'new', or a description of the mix. */
async function storeState(dataDir: string): Promise<string> {
  const store = openDataStore(dataDir);
  try {
    const sites = (await store.snapshot('sites/')).entries;
    const ports = new Map<number, number>();
    for (const e of sites) {
      const port = (e.value as { origin: { servers: Array<{ port: number }> } }).origin.servers[0]!.port;
      ports.set(port, (ports.get(port) ?? 0) + 1);
    }
    const level = ((await store.get('settings/log'))?.value as { level?: string } | undefined)?.level;
    if (sites.length === OLD_SITES && ports.get(OLD_PORT) === OLD_SITES && level === 'info') return 'old';
    if (sites.length === NEW_SITES && ports.get(NEW_PORT) === NEW_SITES && level === 'warn') return 'new';
    return `a mix: ${sites.length} sites, ports ${JSON.stringify([...ports])}, log level ${level}`;
  } finally {
    await store.close();
  }
}

/**
 * `verge config import FILE --data DIR`, killed with SIGKILL at `when`: a number of ms after the
 * start, or 'first-write': as soon as a site is written (the store read from another connection
 * every 2 ms), i.e. right after the importer's first commit of a site.
 */
function importKilled(
  file: string,
  dataDir: string,
  when: number | 'first-write',
): Promise<{ killed: boolean; code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'config', 'import', file, '--data', dataDir], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    killAtExit(child);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
    });
    let timer: NodeJS.Timeout;
    let db: Database.Database | undefined;
    if (when === 'first-write') {
      db = new Database(join(dataDir, 'verge.db'), { readonly: true });
      const start = db
        .prepare<[], { value: number }>("SELECT value FROM meta WHERE name = 'revision'")
        .get()!;
      // a site written after the start (the edge's heartbeats write too: they do not count)
      const written = db.prepare<[number], { n: number }>(
        "SELECT count(*) AS n FROM log WHERE revision > ? AND key LIKE 'sites/%'",
      );
      const poll = () => {
        if (written.get(start.value)!.n > 0) child.kill('SIGKILL');
        else timer = setTimeout(poll, 2);
      };
      timer = setTimeout(poll, 2);
    } else timer = setTimeout(() => child.kill('SIGKILL'), when);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      db?.close();
      resolve({ killed: signal === 'SIGKILL', code, stderr });
    });
  });
}

describe('config import is one transaction', () => {
  test(`kill -9 at random moments while importing ${OLD_SITES} sites: the store holds the old config or the new one, and the edge never ran a mix`, {
    timeout: 240_000,
  }, async (t) => {
    const src = tempDir();
    const dataDir = tempDir();
    const oldFile = configFile(src, 'old.yaml', OLD_SITES, OLD_PORT, 'info');
    const newFile = configFile(src, 'new.yaml', NEW_SITES, NEW_PORT, 'warn');
    // the edge starts empty (quick, whatever the machine's load) and follows every import
    const edge = await startEdgeProc({ dataDir, config: {} });
    try {
      const t0 = performance.now();
      const first = await runCli(['config', 'import', oldFile, '--data', dataDir], { timeoutMs: 120_000 });
      assert.equal(first.code, 0, first.stderr);
      // how long a whole import takes here: the kills land anywhere from start-up to the end
      const importMs = performance.now() - t0;
      assert.equal(await storeState(dataDir), 'old');

      const outcomes: string[] = [];
      // random moments over a whole import's time, and twice right after the first commit (where
      // a document-by-document import is certainly half done)
      const moments: Array<number | 'first-write'> = [
        ...Array.from({ length: 4 }, () => Math.round(Math.random() * importMs * 1.2)),
        'first-write',
        'first-write',
      ];
      for (const when of moments) {
        const before = await storeState(dataDir);
        const r = await importKilled(before === 'old' ? newFile : oldFile, dataDir, when);
        if (!r.killed) assert.equal(r.code, 0, r.stderr);
        const state = await storeState(dataDir);
        outcomes.push(
          `kill ${typeof when === 'number' ? `after ${when} ms` : 'after the first write'}: ${r.killed ? 'killed' : 'finished'}, store ${state}`,
        );
        assert.ok(state === 'old' || state === 'new', outcomes.join('\n'));
        if (!r.killed) assert.notEqual(state, before, 'a finished import changed the config');
      }
      // the edge applied whole configs only: every config it built had all the sites of one file
      await new Promise((r) => setTimeout(r, 1500));
      const applied = edge
        .logs()
        .filter((l) => l.msg === 'config from the store applied')
        .map((l) => l['sites']);
      assert.ok(applied.length > 0, 'the edge applied the imports it saw');
      for (const n of applied)
        assert.ok(n === OLD_SITES || n === NEW_SITES, `the edge applied a config of ${n} sites`);
      t.diagnostic(outcomes.join('; '));
    } finally {
      await edge.kill();
    }
  });

  test('an import that conflicts with nothing writes each changed document once, at one revision', async () => {
    const src = tempDir();
    const dataDir = tempDir();
    const a = configFile(src, 'a.yaml', 30, OLD_PORT, 'info');
    const r1 = await runCli(['config', 'import', a, '--data', dataDir]);
    assert.equal(r1.code, 0, r1.stderr);
    const store = openDataStore(dataDir);
    try {
      const rev = await store.revision();
      const changes = await store.changes(0);
      assert.deepEqual(new Set(changes.map((c) => c.revision)), new Set([rev]), 'one revision');
      assert.equal(changes.length, 32, '30 sites, the edge and the log sections');
    } finally {
      await store.close();
    }
  });
});
