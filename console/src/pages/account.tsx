/** The signed-in user's own account: change the password, sign out, sign out everywhere. */
import { useState } from 'preact/hooks';
import { type ApiError, api, seg, setCsrfToken } from '../api';
import { asApiError, ErrorBox, errorAt, Field, fmtTime, PageTitle, useSession } from '../ui';

export function AccountPage() {
  const s = useSession();
  const [current, setCurrent] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<ApiError>();
  const [done, setDone] = useState<string>();

  const change = async (ev: Event) => {
    ev.preventDefault();
    setError(undefined);
    setDone(undefined);
    try {
      await api('PUT', `users/${seg(s.user)}/password`, { current, password });
      setCurrent('');
      setPassword('');
      setDone('Password changed. Your other sessions were signed out; this one stays.');
    } catch (e) {
      setError(asApiError(e));
    }
  };
  const everywhere = async () => {
    setError(undefined);
    try {
      const r = await api<{ ended: number }>('POST', `users/${seg(s.user)}/sessions/revoke`);
      setDone(`Signed out everywhere else: ${r.body.ended} other session(s) ended.`);
    } catch (e) {
      setError(asApiError(e));
    }
  };
  const signOut = async () => {
    try {
      await api('DELETE', 'session');
    } finally {
      setCsrfToken(undefined);
      location.assign('/signin');
    }
  };

  return (
    <section>
      <PageTitle>Your account</PageTitle>
      <p>
        Signed in as <strong>{s.user}</strong> ({s.role}). This session ends at {fmtTime(s.expiresAt)}, or
        after a while without use.
      </p>
      <p class="actions">
        <button type="button" onClick={signOut}>
          Sign out
        </button>
        <button type="button" onClick={everywhere}>
          Sign out everywhere else
        </button>
      </p>
      <h2>Change your password</h2>
      <ErrorBox error={error} />
      {done && (
        <p class="ok" role="status">
          {done}
        </p>
      )}
      <form onSubmit={change} noValidate>
        <Field path="current" label="Current password" error={errorAt(error, 'current')}>
          {(a) => (
            <input
              {...a}
              type="password"
              autocomplete="current-password"
              value={current}
              onInput={(e) => setCurrent(e.currentTarget.value)}
            />
          )}
        </Field>
        <Field
          path="password"
          label="New password"
          hint="At least 12 characters, not containing your user name."
          error={errorAt(error, 'password')}
        >
          {(a) => (
            <input
              {...a}
              type="password"
              autocomplete="new-password"
              value={password}
              onInput={(e) => setPassword(e.currentTarget.value)}
            />
          )}
        </Field>
        <button type="submit" class="primary">
          Change password
        </button>
      </form>
    </section>
  );
}
