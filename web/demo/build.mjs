#!/usr/bin/env node
// Bundles the demo app with the SDK (web/client/src, TypeScript, from
// source) and mediasoup-client into dist/: index.html plus content-hashed
// assets/app-<hash>.js and .css. dist/ is committed; embed.go serves it.
//
//   node build.mjs                    # the real SDK from ../client/src
//   node build.mjs --check            # build into a temporary directory; fail if dist/ differs (stale)
//   PARLEY_DEMO_SDK=/path/to/src node build.mjs  # another copy of the SDK's src (a preview; never commit that build)
import * as esbuild from 'esbuild';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const preview = !!process.env.PARLEY_DEMO_SDK;
const sdk = preview ? path.resolve(process.env.PARLEY_DEMO_SDK) : path.resolve(here, '..', 'client', 'src');
for (const f of ['index.ts', 'calls.ts']) {
  if (!existsSync(path.join(sdk, f))) {
    console.error(`web/demo: ${path.join(sdk, f)} is missing (the SDK lives in web/client/src)`);
    process.exit(1);
  }
}
if (preview) console.warn(`web/demo: building against ${sdk}, not ../client/src: do not commit this dist/`);

const check = process.argv.includes('--check');
const committed = path.join(here, 'dist');
const dist = check ? mkdtempSync(path.join(os.tmpdir(), 'parley-demo-')) : committed;
rmSync(dist, { recursive: true, force: true });
mkdirSync(path.join(dist, 'assets'), { recursive: true });

// Every package the app or the SDK source imports (mediasoup-client, from
// web/client/src/calls.ts) resolves from web/demo/node_modules, never from
// web/client/node_modules or any other node_modules that happens to exist
// beside the SDK: the bundle, and its content hash (which covers module
// paths), must not depend on what else is installed.
const demoModules = path.join(here, 'node_modules');
const demoModulesReal = existsSync(demoModules) ? realpathSync(demoModules) : demoModules; // esbuild reports real paths
const inside = (dir, file) => { const r = path.relative(dir, file); return r === '' || (!r.startsWith('..') && !path.isAbsolute(r)); };
const ours = (file) => inside(demoModules, file) || inside(demoModulesReal, file);
const fromDemoModules = {
  name: 'parley-demo-modules',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, async (args) => {
      // Packages import their own dependencies from where they are; the
      // @parley/client aliases and node: builtins are left alone.
      if (args.pluginData?.demoModules || args.path.startsWith('@parley/client') || args.path.startsWith('node:')) return undefined;
      if (args.importer && ours(args.importer)) return undefined;
      const r = await build.resolve(args.path, { kind: args.kind, resolveDir: here, importer: args.importer, pluginData: { demoModules: true } });
      if (r.errors.length > 0) return { errors: r.errors };
      return r;
    });
  },
};

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: path.join(here, 'app.ts') },
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  outdir: path.join(dist, 'assets'),
  entryNames: '[name]-[hash]',
  metafile: true,
  // The SDK's own package names resolve to its source.
  alias: { '@parley/client/calls': path.join(sdk, 'calls.ts'), '@parley/client': path.join(sdk, 'index.ts') },
  plugins: [fromDemoModules],
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
});

// Belt and braces: no input may come from a node_modules other than ours.
const stray = Object.keys(result.metafile.inputs).filter((f) => /(^|[\\/])node_modules[\\/]/.test(f) && !ours(path.resolve(here, f)));
if (stray.length > 0) {
  console.error(`web/demo: inputs from outside web/demo/node_modules: ${stray.slice(0, 5).join(', ')}`);
  process.exit(1);
}

const outputs = Object.keys(result.metafile.outputs).map((p) => path.relative(dist, path.resolve(here, p)));
const js = outputs.find((p) => p.endsWith('.js'));
const css = outputs.find((p) => p.endsWith('.css'));
if (!js || !css) throw new Error(`web/demo: expected one .js and one .css output, got ${outputs}`);
const html = readFileSync(path.join(here, 'index.html'), 'utf8')
  .replace('<!--css-->', `<link rel="stylesheet" href="/${css}">`)
  .replace('<!--js-->', `<script type="module" src="/${js}"></script>`);
writeFileSync(path.join(dist, 'index.html'), html);
copyFileSync(path.join(here, 'favicon.svg'), path.join(dist, 'favicon.svg'));
if (check) {
  const list = (d) => readdirSync(d, { recursive: true }).map(String).filter((f) => statSync(path.join(d, f)).isFile()).sort();
  const want = list(dist), got = existsSync(committed) ? list(committed) : [];
  const stale = JSON.stringify(want) !== JSON.stringify(got) ||
    want.some((f) => !readFileSync(path.join(dist, f)).equals(readFileSync(path.join(committed, f))));
  rmSync(dist, { recursive: true, force: true });
  if (stale) {
    console.error(`web/demo: dist/ is stale (built ${want.join(', ')}; committed ${got.join(', ')}): run go generate ./web/demo and commit dist/`);
    process.exit(1);
  }
  console.log('web/demo: dist/ is up to date');
  process.exit(0);
}
console.log(`web/demo: built dist/index.html, dist/${js}, dist/${css}${preview ? ` (SDK from ${sdk})` : ''}`);
