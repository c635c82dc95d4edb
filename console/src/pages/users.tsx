/** Users and API tokens (admin only): add, change roles, new sign-in links, remove; tokens with roles. */
import { useState } from 'preact/hooks';
import { type ApiError, api, seg } from '../api';
import {
  asApiError,
  CopyButton,
  ErrorBox,
  errorAt,
  Field,
  fmtTime,
  PageTitle,
  useApi,
  useSession,
} from '../ui';

interface UserView {
  name: string;
  role: string;
  passwordSet: boolean;
  createdAt: string;
  passwordChangedAt?: string;
}
interface TokenView {
  id: string;
  name: string;
  role: string;
  createdAt: string;
}

export function UsersPage() {
  const me = useSession();
  if (me.role !== 'admin')
    return (
      <section>
        <PageTitle>Users and tokens</PageTitle>
        <p class="note">
          Only admins see and manage users and tokens. You can change your own password under your account.
        </p>
      </section>
    );
  return (
    <section>
      <PageTitle>Users and tokens</PageTitle>
      <Users />
      <Tokens />
    </section>
  );
}

function Users() {
  const me = useSession();
  const users = useApi<{ items: UserView[] }>('users');
  const [name, setName] = useState('');
  const [role, setRole] = useState('viewer');
  const [error, setError] = useState<ApiError>();
  const [link, setLink] = useState<{ user: string; url: string; expiresAt: string }>();
  const act = async (f: () => Promise<void>) => {
    setError(undefined);
    try {
      await f();
      users.reload();
    } catch (e) {
      setError(asApiError(e));
    }
  };
  return (
    <section aria-labelledby="users-title">
      <h2 id="users-title">Users</h2>
      <ErrorBox error={error} />
      {link && (
        <div class="ok" role="status">
          <p>
            One-time sign-in link for <strong>{link.user}</strong> (works once, until{' '}
            {fmtTime(link.expiresAt)}): give it to them privately.
          </p>
          <pre data-testid="signin-link">{link.url}</pre>
          <CopyButton text={link.url} label="Copy the link" />
        </div>
      )}
      {users.data && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">Password</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.data.items.map((u) => (
                <tr key={u.name}>
                  <th scope="row">
                    {u.name}
                    {u.name === me.user && ' (you)'}
                  </th>
                  <td>
                    <label class="sr-only" for={`role-${u.name}`}>
                      Role of {u.name}
                    </label>
                    <select
                      id={`role-${u.name}`}
                      value={u.role}
                      onChange={(e) => {
                        const r = e.currentTarget.value;
                        void act(async () => {
                          await api('PATCH', `users/${seg(u.name)}`, { role: r });
                        });
                      }}
                    >
                      <option value="viewer">viewer</option>
                      <option value="operator">operator</option>
                      <option value="admin">admin</option>
                    </select>
                  </td>
                  <td>
                    {u.passwordSet ? `set ${fmtTime(u.passwordChangedAt)}` : 'not set yet (sign-in link)'}
                  </td>
                  <td class="row-actions">
                    <button
                      type="button"
                      onClick={() =>
                        act(async () => {
                          const r = await api<{ user: string; url: string; expiresAt: string }>(
                            'POST',
                            `users/${seg(u.name)}/signin-link`,
                          );
                          setLink(r.body);
                        })
                      }
                    >
                      New sign-in link<span class="sr-only"> for {u.name}</span>
                    </button>
                    <button
                      type="button"
                      onClick={() =>
                        act(async () => {
                          await api('POST', `users/${seg(u.name)}/sessions/revoke`);
                        })
                      }
                    >
                      Sign out everywhere<span class="sr-only"> ({u.name})</span>
                    </button>
                    <button
                      type="button"
                      class="danger"
                      disabled={u.name === me.user}
                      onClick={() => {
                        if (confirm(`Remove the user ${u.name}?`))
                          void act(async () => {
                            await api('DELETE', `users/${seg(u.name)}`);
                          });
                      }}
                    >
                      Remove<span class="sr-only"> {u.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form
        noValidate
        class="inline-form"
        onSubmit={(ev) => {
          ev.preventDefault();
          void act(async () => {
            const r = await api<UserView & { signinLink?: { url: string; expiresAt: string } }>(
              'POST',
              'users',
              {
                name,
                role,
              },
            );
            if (r.body.signinLink) setLink({ user: r.body.name, ...r.body.signinLink });
            setName('');
          });
        }}
      >
        <h3>Add a user</h3>
        <Field
          path="name"
          label="User name"
          hint="A lower-case letter, then a-z 0-9 . _ -"
          error={errorAt(error, 'name')}
        >
          {(a) => <input {...a} value={name} onInput={(e) => setName(e.currentTarget.value)} />}
        </Field>
        <Field path="role" label="Role" error={errorAt(error, 'role')}>
          {(a) => (
            <select {...a} value={role} onChange={(e) => setRole(e.currentTarget.value)}>
              <option value="viewer">viewer: reads everything, changes nothing</option>
              <option value="operator">operator: sites, certificates, purge</option>
              <option value="admin">admin: everything, users and tokens too</option>
            </select>
          )}
        </Field>
        <button type="submit" class="primary">
          Add the user
        </button>
      </form>
    </section>
  );
}

function Tokens() {
  const tokens = useApi<{ items: TokenView[] }>('tokens');
  const [name, setName] = useState('');
  const [role, setRole] = useState('viewer');
  const [error, setError] = useState<ApiError>();
  const [made, setMade] = useState<{ name: string; token: string }>();
  return (
    <section aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      <p>
        For programs and the <code>verge</code> command: <code>Authorization: Bearer vrg_…</code>.
      </p>
      <ErrorBox error={error} />
      {made && (
        <div class="ok" role="status">
          <p>
            The token <strong>{made.name}</strong>. It is shown only now: copy it.
          </p>
          <pre data-testid="new-token">{made.token}</pre>
          <CopyButton text={made.token} label="Copy the token" />
        </div>
      )}
      {tokens.data && tokens.data.items.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Id</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {tokens.data.items.map((t) => (
                <tr key={t.id}>
                  <th scope="row">{t.name}</th>
                  <td>
                    <code>{t.id}</code>
                  </td>
                  <td>{t.role}</td>
                  <td>{fmtTime(t.createdAt)}</td>
                  <td>
                    <button
                      type="button"
                      class="danger"
                      onClick={async () => {
                        if (!confirm(`Revoke the token ${t.name}? Programs using it stop working at once.`))
                          return;
                        try {
                          await api('DELETE', `tokens/${seg(t.id)}`);
                          tokens.reload();
                        } catch (e) {
                          setError(asApiError(e));
                        }
                      }}
                    >
                      Revoke<span class="sr-only"> {t.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form
        noValidate
        class="inline-form"
        onSubmit={async (ev) => {
          ev.preventDefault();
          setError(undefined);
          try {
            const r = await api<{ name: string; token: string }>('POST', 'tokens', { name, role });
            setMade(r.body);
            setName('');
            tokens.reload();
          } catch (e) {
            setError(asApiError(e));
          }
        }}
      >
        <h3>Create a token</h3>
        <Field
          path="token-name"
          label="Token name"
          hint="What uses it, e.g. “deploy script”."
          error={errorAt(error, 'name')}
        >
          {(a) => <input {...a} value={name} onInput={(e) => setName(e.currentTarget.value)} />}
        </Field>
        <Field path="token-role" label="Role" error={errorAt(error, 'role')}>
          {(a) => (
            <select {...a} value={role} onChange={(e) => setRole(e.currentTarget.value)}>
              <option value="viewer">viewer</option>
              <option value="operator">operator</option>
              <option value="admin">admin</option>
            </select>
          )}
        </Field>
        <button type="submit" class="primary">
          Create the token
        </button>
      </form>
    </section>
  );
}
