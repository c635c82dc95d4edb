/**
 * Signing in: with a user name and password (POST /api/v1/session), or with a one-time link
 * (`/signin?token=vsl_...`: choose the password, POST /api/v1/signin-link). The token leaves the
 * address bar at once (history.replaceState), so it stays out of the history and bookmarks.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api } from '../api';
import { navigate } from '../router';
import { asApiError, ErrorBox, errorAt, Field, type Session } from '../ui';

// read once at load: the address bar loses it below
const linkToken = new URLSearchParams(location.search).get('token') ?? undefined;
if (linkToken) history.replaceState(null, '', '/signin');

export function SignInPage(props: {
  ended: string | undefined;
  signedIn: Session | undefined;
  onSignedIn: (s: Session) => void;
}) {
  const [token, setToken] = useState(linkToken);
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [repeat, setRepeat] = useState('');
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const heading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    if (props.signedIn && !token) navigate('/', { replace: true });
    document.title = token ? 'Choose your password · Verge' : 'Sign in · Verge';
    heading.current?.focus();
  }, [props.signedIn, token]);

  const submit = async (ev: Event) => {
    ev.preventDefault();
    setError(undefined);
    if (token && password !== repeat) {
      setError(
        new ApiError(400, {
          code: 'PASSWORDS_DIFFER',
          msg: 'the two passwords differ: type the same password twice',
          errors: [{ path: 'repeat', message: 'is not the same password' }],
        }),
      );
      return;
    }
    setBusy(true);
    try {
      const r = token
        ? await api<Session>('POST', 'signin-link', { token, password })
        : await api<Session>('POST', 'session', { user, password });
      setToken(undefined);
      props.onSignedIn(r.body);
    } catch (e) {
      setError(asApiError(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" class="signin">
      <h1 tabIndex={-1} ref={heading}>
        {token ? 'Choose your password' : 'Sign in to Verge'}
      </h1>
      {props.ended && !token && (
        <p class="note" role="alert">
          {props.ended}
        </p>
      )}
      {token && (
        <p>
          This one-time link signs you in once you choose a password: at least 12 characters, not containing
          your user name. It works once.
        </p>
      )}
      <ErrorBox error={error} title={token ? 'Password not set' : 'Not signed in'} />
      <form onSubmit={submit} noValidate>
        {!token && (
          <Field path="user" label="User name" error={errorAt(error, 'user')}>
            {(a) => (
              <input
                {...a}
                name="user"
                autocomplete="username"
                required
                value={user}
                onInput={(e) => setUser(e.currentTarget.value)}
              />
            )}
          </Field>
        )}
        <Field path="password" label={token ? 'New password' : 'Password'} error={errorAt(error, 'password')}>
          {(a) => (
            <input
              {...a}
              name="password"
              type="password"
              autocomplete={token ? 'new-password' : 'current-password'}
              required
              value={password}
              onInput={(e) => setPassword(e.currentTarget.value)}
            />
          )}
        </Field>
        {token && (
          <Field path="repeat" label="The same password again" error={errorAt(error, 'repeat')}>
            {(a) => (
              <input
                {...a}
                name="repeat"
                type="password"
                autocomplete="new-password"
                required
                value={repeat}
                onInput={(e) => setRepeat(e.currentTarget.value)}
              />
            )}
          </Field>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : token ? 'Set password and sign in' : 'Sign in'}
        </button>
      </form>
      {!token && (
        <p class="hint">
          Lost your password? An admin makes you a new one-time link (<code>verge user reset-link NAME</code>
          ).
        </p>
      )}
    </main>
  );
}
