// Builds each view (views/<name>.ts + views/<name>.html + views/style.css) into one self-contained
// HTML file, dist/views/<name>.html, with its script and style inline: the server serves it as the
// ui:// resource, and it loads nothing from the network (see src/resources/views.ts for its CSP).
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

const root = path.resolve(import.meta.dirname, '..');
const src = path.join(root, 'views');
const out = path.join(root, 'dist', 'views');
export const VIEW_NAMES = ['campaign-review', 'campaign-status', 'client-overview', 'workflow'];
const CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; frame-src 'self' about:; base-uri 'none'; form-action 'none'";

// zod (used by the extension's App class to check messages) exports all its ~40 error-message locales as
// one namespace, which defeats tree-shaking (265 KB of the bundle); it sets English by itself, and the
// views never read the others.
const noZodLocales = {
  name: 'no-zod-locales',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (a) => (a.importer.includes(`${path.sep}zod${path.sep}`) ? { path: 'zod-locales', namespace: 'stub' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'stub' }, () => ({ contents: 'export {};', loader: 'js' }));
  },
};

fs.mkdirSync(out, { recursive: true });
const css = fs.readFileSync(path.join(src, 'style.css'), 'utf8');
for (const name of VIEW_NAMES) {
  const entry = path.join(src, `${name}.ts`);
  if (!fs.existsSync(entry)) continue;
  const result = await build({ entryPoints: [entry], bundle: true, minify: true, format: 'esm', target: 'es2022', write: false, legalComments: 'none', logLevel: 'warning', plugins: [noZodLocales] });
  // "</script" cannot appear in the inline script's text: it would end the element.
  const js = result.outputFiles[0].text.replace(/<\/(script)/gi, '<\\/$1');
  const body = fs.readFileSync(path.join(src, `${name}.html`), 'utf8');
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${CSP}"><meta name="viewport" content="width=device-width"><style>${css}</style></head><body>${body}<script type="module">${js}</script></body></html>`;
  fs.writeFileSync(path.join(out, `${name}.html`), html);
  process.stderr.write(`wrote dist/views/${name}.html (${(html.length / 1024).toFixed(1)} KB)\n`);
}
