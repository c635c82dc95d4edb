// Debian's Chromium driven by playwright-core, for the console's browser tests: one browser per
// test file (launching costs seconds; contexts are cheap and isolated: one per user), headless,
// installed by scripts/install-test-deps.sh. Screenshots go to docs/img/console-NAME.png, where
// docs/console.md shows them.
import { accessSync, constants, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export function chromiumAvailable(): boolean {
  try {
    accessSync(CHROMIUM, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // as root (CI containers) Chromium refuses to start with its sandbox
    args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    timeout: 60_000,
  });
}

/** docs/img in the source tree (this file runs from dist/test/helpers/). */
export const IMG_DIR = fileURLToPath(new URL('../../../docs/img/', import.meta.url));

/** Saves a screenshot of the page as docs/img/console-NAME.png. */
export async function screenshot(page: Page, name: string, opts: { fullPage?: boolean } = {}): Promise<void> {
  mkdirSync(IMG_DIR, { recursive: true });
  // no blinking caret or running animation in the picture
  await page.screenshot({
    path: `${IMG_DIR}console-${name}.png`,
    fullPage: opts.fullPage ?? true,
    animations: 'disabled',
    caret: 'hide',
  });
}

/**
 * Controls of the page without a name a screen reader can say: inputs, selects and textareas
 * without a label (or aria-label/-labelledby), buttons and links without text. Empty: all named.
 */
export function unlabelled(page: Page): Promise<string[]> {
  // run in the page (a string: this project's TypeScript has no DOM types)
  return page.evaluate(`(() => {
    const bad = [];
    const named = (el) =>
      (el.getAttribute('aria-label') || '').trim() !== '' ||
      (el.getAttribute('aria-labelledby') || '').trim() !== '' ||
      (['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)
        ? el.labels.length > 0
        : (el.textContent || '').trim() !== '');
    for (const el of document.querySelectorAll('input, select, textarea, button, a[href]')) {
      if (el.type === 'hidden') continue;
      if (!named(el)) bad.push(el.outerHTML.slice(0, 120));
    }
    return bad;
  })()`);
}

/** Whether the page is wider than the window (a phone would scroll sideways). */
export function overflowsX(page: Page): Promise<boolean> {
  return page.evaluate('document.documentElement.scrollWidth > window.innerWidth + 1');
}
