/**
 * Client-side routing over real paths (src/control/console-host.ts serves index.html for each):
 * a link click changes the address without a reload; back and forward work; after each change
 * the page's heading takes the focus, so keyboard and screen-reader users land on the new page.
 */
import { useEffect, useState } from 'preact/hooks';

const listeners = new Set<() => void>();
let navigated = false;

/**
 * Whether the page on screen was reached by navigating inside the console (a link, a sign-in):
 * then its heading takes the focus. On a fresh load the focus stays at the top of the document,
 * where the first Tab reaches the skip link.
 */
export function cameByNavigation(): boolean {
  return navigated;
}

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  navigated = true;
  if (opts.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  for (const l of listeners) l();
}

export function useLocation(): { path: string; query: URLSearchParams } {
  const [, setTick] = useState(0);
  useEffect(() => {
    const l = () => setTick((t) => t + 1);
    const pop = () => {
      navigated = true;
      l();
    };
    listeners.add(l);
    window.addEventListener('popstate', pop);
    return () => {
      listeners.delete(l);
      window.removeEventListener('popstate', pop);
    };
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

/** A click on a same-origin link: navigate in place (modifier keys keep the browser's behaviour). */
export function onLinkClick(ev: MouseEvent): void {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = (ev.target as Element | null)?.closest('a');
  if (!a || a.target || a.origin !== location.origin || a.hasAttribute('download')) return;
  ev.preventDefault();
  navigate(a.pathname + a.search + a.hash);
}

/** Matches "/sites/:name" against a path; the decoded parameters or undefined. */
export function match(pattern: string, path: string): Record<string, string> | undefined {
  const p = pattern.split('/');
  const s = path.replace(/\/+$/, '').split('/');
  if (path === '/' && pattern === '/') return {};
  if (p.length !== s.length) return undefined;
  const out: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const want = p[i]!;
    const got = s[i]!;
    if (want.startsWith(':')) {
      if (got === '') return undefined;
      out[want.slice(1)] = decodeURIComponent(got);
    } else if (want !== got) return undefined;
  }
  return out;
}
