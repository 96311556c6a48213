// The browser bundle (dist/browser/genalign.js) in headless Chromium on WebGPU: loadModel and
// loadAdapter fetch the fixture CLIP and its PEFT adapter from a local server, embedImages decodes
// PNGs with createImageBitmap and embeds them; the rows equal what Node computes for the same
// files (sharp decode, the same preprocessing, Dawn on lavapipe) within 1e-5, with and without
// the adapter. A missing model file is an error naming the URL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import sharp from 'sharp';
import { getDevice } from '../../src/gpu/device.ts';
import { loadClipVision, modelPreprocessing } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter } from '../../src/io/peft.ts';
import { preprocessImage } from '../../src/io/image.ts';
import { embedPixels } from '../../src/nn/embed-pixels.ts';
import { loadClipText } from '../../src/io/hf-checkpoint.ts';
import { ClipTokenizer } from '../../src/io/tokenizer.ts';
import { embedTexts } from '../../src/train/text-embedding.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { tmp } from '../cli/helpers.ts';
import { chromiumMissing, launchChromium } from '../helpers/chromium.ts';

const root = tmp('browser');
const ROOT = join(import.meta.dirname, '..', '..');
test.after(() => rmSync(root, { recursive: true, force: true }));

const TYPES: Record<string, string> = { '.js': 'text/javascript', '.json': 'application/json', '.html': 'text/html', '.png': 'image/png', '.safetensors': 'application/octet-stream', '.map': 'application/json' };

/** What the server was asked for: path and Range header (or null). */
const requests: { path: string; range: string | null }[] = [];

/**
 * Serves `mounts` (URL prefix → folder) on 127.0.0.1, with Range requests (206) except under
 * /plain-… prefixes (a server without Range support); unknown paths are 404.
 */
function serve(mounts: Record<string, string>): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>genalign test</title>');
      return;
    }
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (!path.startsWith(prefix)) continue;
      const file = normalize(join(dir, path.slice(prefix.length)));
      if (!file.startsWith(dir)) break;
      try {
        if (!statSync(file).isFile()) break;
      } catch {
        break;
      }
      const body = readFileSync(file);
      const range = req.headers.range ?? null;
      requests.push({ path, range });
      const m = /^bytes=(\d+)-(\d+)$/.exec(range ?? '');
      if (m && !prefix.startsWith('/plain-')) {
        const [a, b] = [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
        res.writeHead(206, { 'content-type': 'application/octet-stream', 'content-range': `bytes ${a}-${b}/${body.length}` }).end(body.subarray(a, b + 1));
        return;
      }
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
      return;
    }
    res.writeHead(404).end('not found');
  });
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

/** The part of the bundle's API this test calls (the page sees the bundle, not the sources). */
interface GenalignBrowser {
  createDevice(): Promise<{ adapter: { name: string }; features: ReadonlySet<string> }>;
  loadModel(url: string): Promise<{ dispose(): void }>;
  loadAdapter(url: string, model: unknown): Promise<{ dispose(): void }>;
  embedImages(model: unknown, images: unknown[], opts?: { lora?: unknown; batch?: number }): Promise<{ data: Float32Array; shape: [number, number] }>;
  embedTexts(model: unknown, texts: string[]): Promise<{ data: Float32Array; shape: [number, number] }>;
}

const DEMO = join(ROOT, 'models', 'demo-clip');
const TEXTS = ['a red square', 'two blue circles and a small green triangle on a striped background', 'Ünïcode, PUNCTUATION!! and   spaces'];

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test('embedImages in Chromium equals Node on the fixture model, with and without the adapter, and embedTexts on the demo CLIP (1e-5); a missing file names its URL', async () => {
  const missing = chromiumMissing();
  if (missing) {
    console.log(`  (skipped: ${missing})`);
    return;
  }
  // The bundle, built as npm run build builds it, into a folder of its own.
  const dist = join(root, 'dist');
  execFileSync(process.execPath, [join(ROOT, 'scripts/build.mjs'), '--outdir', dist], { cwd: ROOT, stdio: 'pipe' });
  // Images of several sizes (upscaled, downscaled, not square), RGB and grey.
  const images = join(root, 'img');
  mkdirSync(images, { recursive: true });
  const sizes: [number, number, number][] = [[32, 32, 3], [50, 20, 3], [17, 45, 3], [96, 64, 3], [40, 40, 1]];
  const names: string[] = [];
  for (const [i, [w, h, c]] of sizes.entries()) {
    const px = Buffer.alloc(w * h * c);
    for (let k = 0; k < px.length; k++) px[k] = (k * 37 + i * 101 + ((k / c / w) | 0) * 13) % 256;
    const name = `im${i}.png`;
    await sharp(px, { raw: { width: w, height: h, channels: c as 1 | 3 } }).png().toFile(join(images, name));
    names.push(name);
  }
  // Node's embeddings of the same files.
  const device = await getDevice();
  const loaded = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  const lora = readPeftAdapter(join(FIXTURE_DIR, 'clip-tiny-lora'), loaded.model.cfg, device);
  const pre = modelPreprocessing(loaded);
  const pixels = await Promise.all(names.map((n) => preprocessImage(join(images, n), pre)));
  const nodeTeacher = await embedPixels(device, loaded.model, undefined, pixels);
  const nodeStudent = await embedPixels(device, loaded.model, lora, pixels);
  lora.dispose();
  loaded.model.dispose();
  const text = loadClipText(DEMO, device);
  const nodeTexts = await embedTexts(device, text.model, ClipTokenizer.load(DEMO), TEXTS, 8);
  text.model.dispose();

  const { server, url } = await serve({ '/demo/': DEMO, '/plain-model/': join(FIXTURE_DIR, 'clip-tiny'), '/dist/': join(dist, 'browser'), '/model/': join(FIXTURE_DIR, 'clip-tiny'), '/adapter/': join(FIXTURE_DIR, 'clip-tiny-lora'), '/img/': images });
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${url}/`);
    const got = await page.evaluate(async (imgs: string[], texts0: string[]) => {
      const bundle = '/dist/genalign.js';
      const g = (await import(bundle)) as GenalignBrowser;
      const device = await g.createDevice();
      const model = await g.loadModel('/model/');
      const lora = await g.loadAdapter('/adapter/', model);
      const urls = imgs.map((n) => `/img/${n}`);
      const teacher = await g.embedImages(model, urls);
      // Blobs too (a File from a picker or a drop is a Blob).
      const blobs = await Promise.all(urls.map(async (u) => (await fetch(u)).blob()));
      const student = await g.embedImages(model, blobs, { lora, batch: 2 });
      // The same model from a server without Range support (read whole).
      const plain = await g.loadModel('/plain-model/');
      const plainTeacher = await g.embedImages(plain, urls.slice(0, 2));
      plain.dispose();
      const demo = await g.loadModel('/demo/');
      const texts = await g.embedTexts(demo, texts0);
      demo.dispose();
      let noText = '';
      try {
        await g.embedTexts(model, ['x']);
      } catch (e) {
        noText = (e as Error).message;
      }
      let missingError = '';
      try {
        await g.loadModel('/nowhere/');
      } catch (e) {
        missingError = (e as Error).message;
      }
      lora.dispose();
      model.dispose();
      return { adapter: device.adapter.name, features: [...device.features], teacher: [...teacher.data], teacherShape: teacher.shape, student: [...student.data], plainTeacher: [...plainTeacher.data], texts: [...texts.data], noText, missingError };
    }, names, TEXTS);
    console.log(`  browser adapter: ${got.adapter || '(unnamed)'} [${got.features.join(', ')}]`);
    assert.equal(got.teacherShape, [names.length, 32]);
    const dt = maxDiff(got.teacher, nodeTeacher);
    const ds = maxDiff(got.student, nodeStudent);
    console.log(`  max |browser − node|: teacher ${dt.toExponential(2)}, student ${ds.toExponential(2)}`);
    assert.ok(dt <= 1e-5, `teacher: max |browser − node| = ${dt}`);
    assert.ok(ds <= 1e-5, `student: max |browser − node| = ${ds}`);
    assert.ok(maxDiff(nodeStudent, nodeTeacher) > 1e-3, 'the adapter changes the embeddings (so the student comparison means something)');
    const dx = maxDiff(got.texts, nodeTexts);
    console.log(`  embedTexts (demo CLIP): max |browser − node| = ${dx.toExponential(2)}`);
    assert.is(got.texts.length, nodeTexts.length);
    assert.ok(dx <= 1e-5, `texts: max |browser − node| = ${dx}`);
    assert.match(got.noText, 'no text tower loaded');
    assert.equal(got.plainTeacher, got.teacher.slice(0, 2 * 32), 'read whole or in ranges: the same model');
    const st = requests.filter((r) => r.path.endsWith('.safetensors') && !r.path.startsWith('/plain-'));
    assert.ok(st.length >= 3 && st.every((r) => r.range !== null), `safetensors are fetched in ranges (${st.length} requests: ${st.slice(0, 4).map((r) => r.range).join(', ')})`);
    assert.match(got.missingError, `${url}/nowhere/config.json: cannot fetch the model's config.json (HTTP 404`);
    assert.equal(errors.filter((e) => !e.includes('404')), [], 'no console errors');
  } finally {
    await browser.close();
    server.close();
  }
});

test.run();
