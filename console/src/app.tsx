/**
 * The console's frame: who is signed in (GET /api/v1/session), the navigation, and the page for
 * the address. Signed out (no session, or one that ended under us), every address shows the
 * sign-in page and comes back to itself after signing in.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, onSessionEnded, setCsrfToken } from './api';
import { AccountPage } from './pages/account';
import { AuditPage } from './pages/audit';
import { CertificatesPage } from './pages/certificates';
import { NodesPage } from './pages/nodes';
import { OverviewPage } from './pages/overview';
import { PurgePage } from './pages/purge';
import { SignInPage } from './pages/signin';
import { SitePage } from './pages/site';
import { SiteFormPage } from './pages/site-form';
import { SitesPage } from './pages/sites';
import { UsersPage } from './pages/users';
import { match, navigate, onLinkClick, useLocation } from './router';
import { type Session, SessionContext } from './ui';

const NAV: Array<{ href: string; label: string; admin?: boolean }> = [
  { href: '/', label: 'Overview' },
  { href: '/sites', label: 'Sites' },
  { href: '/certificates', label: 'Certificates' },
  { href: '/purge', label: 'Purge and prefetch' },
  { href: '/nodes', label: 'Nodes' },
  { href: '/audit', label: 'Audit log' },
  { href: '/users', label: 'Users and tokens', admin: true },
];

export function App() {
  const loc = useLocation();
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [ended, setEnded] = useState<string>();

  useEffect(() => {
    api<Session & { kind: string }>('GET', 'session').then(
      (r) => {
        setCsrfToken(r.body.csrfToken);
        setSession(r.body);
      },
      () => setSession(null),
    );
    return onSessionEnded((e: ApiError) => {
      setCsrfToken(undefined);
      setSession((s) => {
        // only a session that was there can end; a sign-in page's own 401s are its business
        if (s) setEnded(e.code === 'API_SESSION_ENDED' ? e.message : 'You are signed out: sign in again.');
        return s ? null : s;
      });
    });
  }, []);

  if (session === undefined)
    return (
      <main id="main">
        <p role="status">Loading…</p>
      </main>
    );

  if (session === null || loc.path === '/signin') {
    return (
      <SignInPage
        ended={ended}
        signedIn={session ?? undefined}
        onSignedIn={(s) => {
          setCsrfToken(s.csrfToken);
          setEnded(undefined);
          setSession(s);
          // the page asked for comes back (its heading takes the focus)
          navigate(loc.path === '/signin' ? '/' : location.pathname + location.search, { replace: true });
        }}
      />
    );
  }

  return (
    <SessionContext.Provider value={session}>
      {/* biome-ignore lint/a11y/noStaticElementInteractions: delegated link handling; the links themselves are the controls */}
      {/* biome-ignore lint/a11y/useKeyWithClickEvents: Enter on a link fires click */}
      <div class="frame" onClick={(e) => onLinkClick(e as unknown as MouseEvent)}>
        <a class="skip" href="#main">
          Skip to the page
        </a>
        <header class="top">
          <a class="brand" href="/">
            Verge
          </a>
          <nav aria-label="Main">
            <ul>
              {NAV.filter((n) => !n.admin || session.role === 'admin').map((n) => {
                const current = n.href === '/' ? loc.path === '/' : loc.path.startsWith(n.href);
                return (
                  <li key={n.href}>
                    <a href={n.href} {...(current ? { 'aria-current': 'page' } : {})}>
                      {n.label}
                    </a>
                  </li>
                );
              })}
            </ul>
          </nav>
          <div class="me">
            <a href="/account" {...(loc.path === '/account' ? { 'aria-current': 'page' } : {})}>
              {session.user} <span class="badge">{session.role}</span>
            </a>
          </div>
        </header>
        <main id="main" key={loc.path}>
          <Page path={loc.path} query={loc.query} />
        </main>
      </div>
    </SessionContext.Provider>
  );
}

function Page({ path, query }: { path: string; query: URLSearchParams }) {
  if (path === '/') return <OverviewPage />;
  if (path === '/sites') return <SitesPage />;
  if (path === '/add-site') return <SiteFormPage />;
  const edit = match('/sites/:name/edit', path);
  if (edit) return <SiteFormPage name={edit['name']!} />;
  const site = match('/sites/:name', path);
  if (site) return <SitePage name={site['name']!} query={query} />;
  if (path === '/certificates') return <CertificatesPage />;
  if (path === '/purge') return <PurgePage />;
  if (path === '/nodes') return <NodesPage />;
  if (path === '/users') return <UsersPage />;
  if (path === '/audit') return <AuditPage site={query.get('site') ?? undefined} />;
  if (path === '/account') return <AccountPage />;
  return (
    <section>
      <h1>No such page</h1>
      <p>
        There is no console page at <code>{path}</code>. <a href="/">Go to the overview</a>.
      </p>
    </section>
  );
}
