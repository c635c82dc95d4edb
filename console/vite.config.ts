// The console's build (docs/console.md): `npm run build` runs `vite build console`, which writes
// dist/console (index.html and hashed files under assets/) for src/control/console-host.ts.
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  // the JSX of Preact, compiled by esbuild (no Babel, no plugin)
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: '../dist/console',
    emptyOutDir: true,
    // the CSP allows no inline script: keep the module preload helper in the bundle
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: true,
    chunkSizeWarningLimit: 400,
  },
  logLevel: 'warn',
});
