// Rewrites the generated docs (docs/config.md, docs/errors.md) from the code: `npm run docs`.
import { writeFileSync } from 'node:fs';
import { renderConfigDoc } from '../src/config/docs.js';
import { renderErrorsDoc } from '../src/core/errors-doc.js';

writeFileSync(new URL('../../docs/config.md', import.meta.url), renderConfigDoc());
writeFileSync(new URL('../../docs/errors.md', import.meta.url), renderErrorsDoc());
console.log('wrote docs/config.md and docs/errors.md');
