// Bundles genalign with esbuild into dist/ (ESM, Node 20): dist/index.js for the library and
// dist/cli/<name>.js for each src/cli/<name>.ts that is a command (train, embed, eval).
// The WGSL kernels (every kernels/**/*.wgsl, modules in subfolders included, keyed by their path
// under kernels/ without .wgsl: 'matmul', 'lib/erf') are embedded in the bundle through
// registerKernelSources (src/gpu/kernels.ts), so dist/ runs without the kernels/ folder. `webgpu` (the native dawn.node), `sharp` (libvips) and `tar-stream` (CommonJS that requires Node's builtins) stay external.
// The image preprocessing worker (src/io/preprocess-worker.ts) is its own file,
// dist/preprocess-worker.js; every other entry point registers that file's URL, relative to
// itself, through registerPreprocessWorker (src/io/preprocess-pool.ts) before its own code runs.
//
// It also writes the browser bundle dist/browser/genalign.js (ESM for browsers, no Node
// built-ins): src/browser/index.ts with platform/index.ts resolved to platform/browser.ts and the
// kernels embedded; esbuild stops the build if anything it reaches imports a Node module.
//
//   node scripts/build.mjs                 # library + CLI commands + browser bundle
//   node scripts/build.mjs bench/run.ts    # ... plus extra entry points (dist/bench/run.js)
//   node scripts/build.mjs --outdir DIR    # into DIR instead of dist/ (emptied first)
//   node scripts/build.mjs --browser-only  # only dist/browser/genalign.js (npm run report builds it so)
import { build } from 'esbuild';
import { readdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outAt = args.indexOf('--outdir');
if (outAt >= 0 && !args[outAt + 1]) throw new Error('build: --outdir needs a directory');
const outdir = outAt >= 0 ? resolve(args.splice(outAt, 2)[1]) : join(root, 'dist');
const browserAt = args.indexOf('--browser-only');
const browserOnly = browserAt >= 0;
if (browserOnly) args.splice(browserAt, 1);
const CLI_COMMANDS = ['train', 'embed', 'eval'];

const WORKER_ENTRY = 'preprocess-worker';
const entries = { index: join(root, 'src/index.ts') };
for (const name of CLI_COMMANDS) {
  const file = join(root, 'src/cli', `${name}.ts`);
  if (existsSync(file)) entries[`cli/${name}`] = file;
}
for (const extra of args) {
  const file = resolve(root, extra);
  if (!existsSync(file)) throw new Error(`build: entry point ${extra} does not exist`);
  entries[relative(root, file).replace(/\.[mc]?tsx?$/, '')] = file;
}

// One virtual module holds every kernels/**/*.wgsl source; each entry imports it first, so the
// sources are registered before any code of the entry runs. Next each entry imports its own
// virtual module that registers the worker file (one per entry: a module shared by several
// entries would land in a shared chunk, and import.meta.url would be the chunk's).
const kernelDir = join(root, 'kernels');
const wgslFiles = (sub) =>
  readdirSync(join(kernelDir, sub), { withFileTypes: true }).flatMap((e) => {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    return e.isDirectory() ? wgslFiles(rel) : e.name.endsWith('.wgsl') ? [rel] : [];
  });
const kernels = Object.fromEntries(
  wgslFiles('')
    .sort()
    .map((f) => [f.slice(0, -'.wgsl'.length), readFileSync(join(kernelDir, f), 'utf8')]),
);

const embedKernels = {
  name: 'genalign-entries',
  setup(b) {
    b.onResolve({ filter: /^genalign-entry:/ }, (args) => ({ path: args.path.slice('genalign-entry:'.length), namespace: 'genalign-entry' }));
    b.onLoad({ filter: /.*/, namespace: 'genalign-entry' }, (args) => ({
      contents: `import 'genalign:kernels';\nimport ${JSON.stringify(`genalign:worker-location:${outNames.get(args.path)}`)};\nexport * from ${JSON.stringify(args.path)};\n`,
      resolveDir: root,
      loader: 'js',
    }));
    b.onResolve({ filter: /^genalign:worker-location:/ }, (args) => ({ path: args.path.slice('genalign:worker-location:'.length), namespace: 'genalign-worker-location' }));
    b.onLoad({ filter: /.*/, namespace: 'genalign-worker-location' }, (args) => {
      let rel = relative(dirname(args.path), `${WORKER_ENTRY}.js`).split(sep).join('/');
      if (!rel.startsWith('.')) rel = `./${rel}`;
      return {
        contents:
          `import { registerPreprocessWorker } from ${JSON.stringify(join(root, 'src/io/preprocess-pool.ts'))};\n` +
          `registerPreprocessWorker(new URL(${JSON.stringify(rel)}, import.meta.url));\n`,
        resolveDir: root,
        loader: 'js',
      };
    });
    b.onResolve({ filter: /^genalign:kernels$/ }, () => ({ path: 'kernels', namespace: 'genalign-kernels' }));
    b.onLoad({ filter: /.*/, namespace: 'genalign-kernels' }, () => ({
      contents:
        `import { registerKernelSources } from ${JSON.stringify(join(root, 'src/gpu/kernels.ts'))};\n` +
        `registerKernelSources(${JSON.stringify(kernels)});\n`,
      resolveDir: root,
      loader: 'js',
    }));
  },
};

const outNames = new Map(Object.entries(entries).map(([out, file]) => [file, out]));

rmSync(outdir, { recursive: true, force: true });
const result = browserOnly ? { metafile: { outputs: {} } } : await build({
  entryPoints: {
    ...Object.fromEntries(Object.entries(entries).map(([out, file]) => [out, `genalign-entry:${file}`])),
    [WORKER_ENTRY]: join(root, 'src/io/preprocess-worker.ts'),
  },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Native packages, and CommonJS ones that require Node builtins (which an ESM bundle cannot), stay external (installed as dependencies).
  external: ['webgpu', 'sharp', 'tar-stream'],
  sourcemap: true,
  logLevel: 'warning',
  metafile: true,
  plugins: [embedKernels],
});
// The browser bundle: one file, the platform swapped for the browser's.
const browserPlatform = {
  name: 'genalign-browser-platform',
  setup(b) {
    b.onResolve({ filter: /platform\/index\.ts$/ }, (args) => ({ path: join(args.resolveDir, args.path.replace(/index\.ts$/, 'browser.ts')) }));
    b.onResolve({ filter: /^genalign-browser-entry$/ }, () => ({ path: 'entry', namespace: 'genalign-browser-entry' }));
    b.onLoad({ filter: /.*/, namespace: 'genalign-browser-entry' }, () => ({
      contents: `import 'genalign:kernels';\nexport * from ${JSON.stringify(join(root, 'src/browser/index.ts'))};\n`,
      resolveDir: root,
      loader: 'js',
    }));
  },
};
const browserResult = await build({
  entryPoints: { 'browser/genalign': 'genalign-browser-entry' },
  outdir,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  sourcemap: true,
  logLevel: 'warning',
  metafile: true,
  plugins: [browserPlatform, embedKernels],
});
result.metafile.outputs = { ...result.metafile.outputs, ...browserResult.metafile.outputs };
const outputs = Object.entries(result.metafile.outputs).filter(([f]) => f.endsWith('.js'));
for (const [file, info] of outputs) console.log(`  ${relative(root, file).padEnd(32)} ${(info.bytes / 1024).toFixed(1)} KiB`);
console.log(`build: ${Object.keys(entries).length} entry points, the preprocessing worker and the browser bundle, ${Object.keys(kernels).length} kernels embedded -> ${relative(root, outdir) || '.'}/`);
