/**
 * `verge user add|list|role|rm|passwd|signout|reset-link` and `verge audit`: the accounts of the
 * console and the API (docs/cli.md "verge user"). Everything goes through the running Verge's API
 * (an admin token, e.g. DIR/admin.token on the server), so each change is checked, audited and
 * seen by every control instance, except `reset-link`: it writes the store of the data directory
 * directly, like `verge token create`, because it is the way back in when no admin can sign in.
 */

import { readFileSync } from 'node:fs';
import type { AuditRecord } from '../control/audit.js';
import type { UserView } from '../control/users.js';
import { ApiClient, type ConnectionFlags, printJson, runCommand, table, UsageError } from './api-client.js';

type Flags = ConnectionFlags & { role?: string; passwordStdin?: boolean };

const ROLE_NAMES = ['viewer', 'operator', 'admin'];

function roleArg(role: string | undefined, what: string): string {
  const r = (role ?? '').toLowerCase();
  if (!ROLE_NAMES.includes(r))
    throw new UsageError(`${what} must be viewer, operator or admin, not "${role ?? ''}"`);
  return r;
}

const enc = encodeURIComponent;

/** The lines of standard input (for --password-stdin and passwd without a terminal). */
function stdinLines(): string[] {
  let text = '';
  try {
    text = readFileSync(0, 'utf8');
  } catch {
    // no stdin (closed): no lines
  }
  return text.split(/\r?\n/);
}

/** Reads a line from the terminal without echoing it. */
function promptHidden(question: string): Promise<string> {
  const input = process.stdin;
  process.stderr.write(question);
  return new Promise((resolve, reject) => {
    let typed = '';
    const done = (err?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      input.off('error', done);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(typed);
    };
    const onData = (chunk: string) => {
      for (const c of chunk) {
        if (c === '\r' || c === '\n') return done();
        if (c === '\u0003') return done(new UsageError('interrupted'));
        if (c === '\u007f' || c === '\b') typed = [...typed].slice(0, -1).join('');
        else typed += c;
      }
    };
    input.setRawMode(true);
    input.setEncoding('utf8');
    input.on('data', onData);
    // a terminal that goes away (EIO) ends the prompt with an error, never the process
    input.once('error', done);
    input.resume();
  });
}

export function userAdd(name: string, values: Flags): Promise<number> {
  return runCommand(values.json, async () => {
    const role = roleArg(values.role ?? 'viewer', '--role');
    let password: string | undefined;
    if (values.passwordStdin) {
      password = stdinLines()[0] ?? '';
      if (password === '')
        throw new UsageError('--password-stdin: standard input has no password on its first line');
    }
    const client = await ApiClient.locate(values);
    const r = await client.request<UserView & { signinLink?: { url: string; expiresAt: string } }>(
      'POST',
      'users',
      { body: { name, role, ...(password !== undefined ? { password } : {}) } },
    );
    if (values.json) {
      printJson(r.body);
      return 0;
    }
    const u = r.body;
    if (!u.signinLink) {
      process.stdout.write(`user ${u.name} (${u.role}) created with the password given\n`);
      return 0;
    }
    // the link alone on stdout (LINK=$(verge user add ...)), the notes on stderr
    process.stderr.write(
      `user ${u.name} (${u.role}) created. Send them this one-time link to choose a password:\n`,
    );
    process.stdout.write(`${u.signinLink.url}\n`);
    process.stderr.write(
      `It works once, until ${u.signinLink.expiresAt}. A new one: verge user reset-link ${u.name}\n`,
    );
    return 0;
  });
}

export function userList(values: Flags): Promise<number> {
  return runCommand(values.json, async () => {
    const r = await (await ApiClient.locate(values)).request<{ items: UserView[] }>('GET', 'users');
    if (values.json) {
      printJson(r.body);
      return 0;
    }
    process.stdout.write(
      table(
        ['NAME', 'ROLE', 'PASSWORD', 'CREATED'],
        r.body.items.map((u) => [
          u.name,
          u.role,
          u.passwordSet ? 'set' : 'not set (sign-in link)',
          u.createdAt,
        ]),
      ),
    );
    return 0;
  });
}

export function userRole(name: string, role: string, values: Flags): Promise<number> {
  return runCommand(values.json, async () => {
    const r = await (await ApiClient.locate(values)).request<UserView>('PATCH', `users/${enc(name)}`, {
      body: { role: roleArg(role, 'ROLE') },
    });
    if (values.json) printJson(r.body);
    else process.stdout.write(`user ${r.body.name} is now ${r.body.role}\n`);
    return 0;
  });
}

export function userRm(name: string, values: Flags): Promise<number> {
  return runCommand(values.json, async () => {
    await (await ApiClient.locate(values)).request('DELETE', `users/${enc(name)}`);
    if (values.json) printJson({ deleted: name });
    else process.stdout.write(`user ${name} removed; their sessions ended\n`);
    return 0;
  });
}

export function userSignout(name: string, values: Flags): Promise<number> {
  return runCommand(values.json, async () => {
    const r = await (await ApiClient.locate(values)).request<{ user: string; ended: number }>(
      'POST',
      `users/${enc(name)}/sessions/revoke`,
    );
    if (values.json) printJson(r.body);
    else process.stdout.write(`user ${name} signed out everywhere (${r.body.ended} session(s) ended)\n`);
    return 0;
  });
}

export function userPasswd(name: string, values: Flags): Promise<number> {
  return runCommand(values.json, async () => {
    let current: string;
    let password: string;
    if (process.stdin.isTTY) {
      current = await promptHidden(`Current password of ${name}: `);
      password = await promptHidden('New password: ');
      if ((await promptHidden('New password again: ')) !== password)
        throw new UsageError('the two new passwords differ: nothing was changed');
    } else {
      const lines = stdinLines();
      current = lines[0] ?? '';
      password = lines[1] ?? '';
      if (password === '')
        throw new UsageError(
          'without a terminal, give the current password and the new one on two lines of stdin',
        );
    }
    await (await ApiClient.locate(values)).request('PUT', `users/${enc(name)}/password`, {
      body: { current, password },
    });
    if (values.json) printJson({ user: name, changed: true });
    else process.stdout.write(`password of ${name} changed; their other sessions ended\n`);
    return 0;
  });
}

/** `verge user reset-link NAME --data DIR`: straight into the store, no API or token needed. */
export function userResetLink(name: string, values: { data?: string; json?: boolean }): Promise<number> {
  return runCommand(values.json, async () => {
    const { withStore } = await import('./token.js');
    const { apiBaseUrl, createSigninLink, signinUrl } = await import('../control/users.js');
    const made = await withStore(values.data, async (store) => {
      const edge = (await store.get('settings/edge'))?.value as { admin?: { listen?: unknown } } | undefined;
      const listen = typeof edge?.admin?.listen === 'string' ? edge.admin.listen : '127.0.0.1:8091';
      const link = await createSigninLink(store, name, Date.now());
      return { ...link, url: signinUrl(apiBaseUrl(listen), link.token) };
    });
    if (values.json) {
      printJson({ user: name, url: made.url, expiresAt: made.expiresAt });
      return 0;
    }
    process.stderr.write(`one-time sign-in link for ${name} (older links of ${name} stop working):\n`);
    process.stdout.write(`${made.url}\n`);
    process.stderr.write(
      `It works once, until ${made.expiresAt}, and lets its holder choose the password of ${name}.\n` +
        'Reached through another name or a proxy? Keep the path and query, change the host.\n',
    );
    return 0;
  });
}

export function auditCmd(values: ConnectionFlags & { site?: string; limit?: string }): Promise<number> {
  return runCommand(values.json, async () => {
    const q = new URLSearchParams();
    if (values.site !== undefined) q.set('site', values.site);
    if (values.limit !== undefined) {
      const n = Number(values.limit);
      if (!Number.isInteger(n) || n < 1 || n > 1000)
        throw new UsageError(`--limit ${values.limit}: expected a whole number from 1 to 1000`);
      q.set('limit', String(n));
    }
    const path = `audit${q.size > 0 ? `?${q}` : ''}`;
    const r = await (await ApiClient.locate(values)).request<{ items: AuditRecord[] }>('GET', path);
    if (values.json) {
      printJson(r.body);
      return 0;
    }
    if (r.body.items.length === 0) {
      process.stdout.write(`no change recorded${values.site ? ` for ${values.site}` : ''}\n`);
      return 0;
    }
    process.stdout.write(
      table(
        ['TIME', 'WHO', 'WHAT', 'SITES', 'STATUS', 'REVISION', 'FROM'],
        r.body.items.map((a) => [
          a.at,
          `${a.actor.kind === 'token' ? `token ${a.actor.name} (${a.actor.id})` : a.actor.name} ${a.actor.role}`,
          `${a.method} ${a.resource}`,
          a.allSites ? '(all)' : a.sites.join(',') || '-',
          String(a.status),
          a.revision === undefined ? '-' : String(a.revision),
          a.ip,
        ]),
      ),
    );
    return 0;
  });
}
