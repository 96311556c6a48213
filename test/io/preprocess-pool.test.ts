// PreprocessPool (src/io/preprocess-pool.ts): the same floats and the same ImageDecodeError
// messages as preprocessImage on the PIL fixture images, each request answered with its own
// file's result under concurrency, a crashed worker rejects its requests (naming the files) and
// is replaced, a worker that cannot start fails the pool instead of hanging it, close() leaves no
// live worker, and the esbuild bundle finds its worker file.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { deflateSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { FIXTURE_DIR, fixture } from '../helpers/fixtures.ts';
import { defaultPreprocess, parsePreprocessorConfig, preprocessImage, ImageDecodeError, type PreprocessConfig } from '../../src/io/image.ts';
import { PreprocessPool, PreprocessWorkerError, defaultPoolSize, livePreprocessWorkers } from '../../src/io/preprocess-pool.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const HELPERS = join(ROOT, 'test', 'helpers');
const tmp = mkdtempSync(join(tmpdir(), 'genalign-pool-'));

test.after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

interface Case {
  path: string;
  cfg: PreprocessConfig;
}

/** Every PIL fixture image with the config its fixture uses (images-resize and images-decode at 224, images and images-crop at 32). */
function fixtureCases(): Case[] {
  const out: Case[] = [];
  for (const [name, dir] of [['resize', 'images-resize'], ['decode', 'images-decode']]) {
    const cases = JSON.parse(fixture(name).metadata.cases) as Record<string, { file: string; config: Record<string, unknown> }>;
    for (const { file, config } of Object.values(cases)) out.push({ path: join(FIXTURE_DIR, dir, file), cfg: parsePreprocessorConfig(config, 224) });
  }
  for (const dir of ['images', 'images-crop']) {
    for (const f of readdirSync(join(FIXTURE_DIR, dir)).filter((n) => n.endsWith('.png'))) out.push({ path: join(FIXTURE_DIR, dir, f), cfg: defaultPreprocess(32) });
  }
  return out;
}

/** Index of the first float that differs in any bit (or a length mismatch: 0), else -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, Error);
    return e as Error;
  }
  throw new Error('expected a rejection');
}

test('the default size leaves one core to the main thread, and is at least 1', () => {
  assert.ok(defaultPoolSize() >= 1);
});

test('every PIL fixture image: the pool gives exactly preprocessImage\'s floats (every bit), as a Float32Array that owns its buffer', async () => {
  const cases = fixtureCases();
  assert.ok(cases.length >= 40, `${cases.length} fixture cases`);
  const pool = new PreprocessPool({ size: 2 });
  try {
    const viaPool = await Promise.all(cases.map((c) => pool.preprocess(c.path, c.cfg)));
    for (let i = 0; i < cases.length; i++) {
      const inThread = await preprocessImage(cases[i].path, cases[i].cfg);
      const at = firstDifference(viaPool[i], inThread);
      assert.is(at, -1, `${cases[i].path}: float ${at} is ${viaPool[i][at]} through the pool, ${inThread[at]} in-thread`);
      assert.instance(viaPool[i], Float32Array);
      assert.is(viaPool[i].buffer.byteLength, viaPool[i].byteLength, 'the result is its own buffer');
    }
  } finally {
    await pool.close();
  }
});

test('many concurrent requests of different sizes, out of order: each promise gets its own file\'s result', async () => {
  // Large and small images mixed, so that replies come back in another order than requested.
  const cases = fixtureCases();
  const order = Array.from({ length: 3 * cases.length }, (_, i) => (i * 7919) % cases.length);
  const expected = await Promise.all(cases.map((c) => preprocessImage(c.path, c.cfg)));
  const pool = new PreprocessPool({ size: 2, perWorker: 3 });
  try {
    const finished: number[] = [];
    const got = await Promise.all(order.map((k, i) => pool.preprocess(cases[k].path, cases[k].cfg).then((x) => (finished.push(i), x))));
    order.forEach((k, i) => assert.is(firstDifference(got[i], expected[k]), -1, `request ${i} (${cases[k].path})`));
    assert.ok(finished.some((v, i) => v !== i), 'replies came back out of request order (else this test shows nothing)');
  } finally {
    await pool.close();
  }
});

/** A grey PNG whose header says width × height (over the decoding limit) with one row of data. */
function hugePngHeader(): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer): number => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(20000, 0);
  ihdr.writeUInt32BE(20000, 4);
  ihdr[8] = 8;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(20001))), chunk('IEND', Buffer.alloc(0))]);
}

test('files that fail to decode reject with exactly the in-thread ImageDecodeError: corrupt, truncated (8 at once), missing, too large, not an image', async () => {
  const noise = Buffer.from(Array.from({ length: 48 * 32 * 3 }, (_, i) => (i * 7919) % 251));
  const jpg = await sharp(noise, { raw: { width: 48, height: 32, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  const bad: string[] = [];
  const put = (name: string, bytes: Buffer): void => {
    writeFileSync(join(tmp, name), bytes);
    bad.push(join(tmp, name));
  };
  put('corrupt.jpg', Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
  for (let i = 0; i < 8; i++) put(`cut_${i}.jpg`, jpg.subarray(0, jpg.length >> 1));
  put('huge.png', hugePngHeader());
  put('text.png', Buffer.from('not an image at all'));
  bad.push(join(tmp, 'missing.png'));
  const cfg = defaultPreprocess(32);
  const inThread = await Promise.all(bad.map((p) => rejection(preprocessImage(p, cfg))));
  const pool = new PreprocessPool({ size: 2 });
  try {
    const viaPool = await Promise.all(bad.map((p) => rejection(pool.preprocess(p, cfg))));
    bad.forEach((p, i) => {
      assert.instance(viaPool[i], ImageDecodeError, `${p}: ${viaPool[i].message}`);
      assert.is(viaPool[i].message, inThread[i].message, p);
    });
    // The messages are the decoder's own, one per file (libvips shares one error buffer).
    assert.is(viaPool[1].message, `${bad[1]}: cannot decode image (VipsJpeg: premature end of JPEG image)`);
    assert.match(viaPool[9].message, `${bad[9]}: the input image is 20000x20000 = 400,000,000 pixels`);
  } finally {
    await pool.close();
  }
});

test('a worker that crashes rejects its requests with PreprocessWorkerError naming each file, and is replaced', async () => {
  const good = join(FIXTURE_DIR, 'images', 'd_big96.png');
  const cfg = defaultPreprocess(32);
  const pool = new PreprocessPool({ size: 1, perWorker: 2, workerUrl: pathToFileURL(join(HELPERS, 'crashing-preprocess-worker.ts')) });
  try {
    assert.is(firstDifference(await pool.preprocess(good, cfg), await preprocessImage(good, cfg)), -1, 'the helper serves normal requests');
    // Both requests are with the worker when it exits; a third waits in the queue.
    const inFlight = [pool.preprocess(good, cfg), pool.preprocess(join(tmp, 'EXIT.png'), cfg)];
    const queued = pool.preprocess(good, cfg);
    const errors = await Promise.all(inFlight.map(rejection));
    for (const [e, path] of [[errors[0], good], [errors[1], join(tmp, 'EXIT.png')]] as const) {
      assert.instance(e, PreprocessWorkerError);
      assert.is(e.message, `${path}: not preprocessed: the image preprocessing worker stopped (exit code 7) before finishing this file`);
    }
    // The queued request and later ones run on the replacement.
    assert.is((await queued).length, 3 * 32 * 32);
    assert.is(pool.size, 1);
    const thrown = await rejection(pool.preprocess(join(tmp, 'THROW.png'), cfg));
    assert.instance(thrown, PreprocessWorkerError);
    assert.match(thrown.message, `${join(tmp, 'THROW.png')}: not preprocessed: the image preprocessing worker stopped (Error: boom in the worker)`);
    assert.is((await pool.preprocess(good, cfg)).length, 3 * 32 * 32);
  } finally {
    await pool.close();
  }
  assert.is(pool.size, 0);
});

test('a worker entry that cannot load fails the pool: requests reject naming their file and the reason, none hangs', async () => {
  const cfg = defaultPreprocess(32);
  const good = join(FIXTURE_DIR, 'images', 'a_square32.png');
  for (const url of [pathToFileURL(join(HELPERS, 'broken-preprocess-worker.ts')), pathToFileURL(join(tmp, 'no-such-worker.js'))]) {
    const pool = new PreprocessPool({ size: 2, workerUrl: url });
    try {
      const errors = await Promise.all([pool.preprocess(good, cfg), pool.preprocess(good, cfg), pool.preprocess(good, cfg)].map(rejection));
      for (const e of errors) {
        assert.instance(e, PreprocessWorkerError);
        assert.ok(e.message.startsWith(`${good}: not preprocessed: the image preprocessing worker (${url.href}) could not start: `), e.message);
      }
      assert.match(errors[0].message, url.href.endsWith('.ts') ? 'this worker entry cannot load' : 'Cannot find module');
      const later = await rejection(pool.preprocess(good, cfg));
      assert.instance(later, PreprocessWorkerError);
      assert.is(later.message, errors[0].message);
    } finally {
      await pool.close();
    }
    assert.is(pool.size, 0);
  }
});

test('workers start as requests need them, up to the size', async () => {
  const cfg = defaultPreprocess(32);
  const path = join(FIXTURE_DIR, 'images', 'a_square32.png');
  const pool = new PreprocessPool({ size: 3, perWorker: 2 });
  const pending: Promise<Float32Array>[] = [];
  try {
    assert.is(pool.size, 0, 'no worker before the first request');
    pending.push(pool.preprocess(path, cfg), pool.preprocess(path, cfg));
    assert.is(pool.size, 1, 'two requests fit one worker');
    for (let i = 0; i < 10; i++) pending.push(pool.preprocess(path, cfg));
    assert.is(pool.size, 3, 'twelve requests start every worker');
    await Promise.all(pending);
  } finally {
    await Promise.allSettled(pending);
    await pool.close();
  }
});

test('a worker that cannot even be created (a URL Worker refuses) fails the pool the same way', async () => {
  const cfg = defaultPreprocess(32);
  const good = join(FIXTURE_DIR, 'images', 'a_square32.png');
  const pool = new PreprocessPool({ size: 1, workerUrl: new URL('https://example.invalid/preprocess-worker.js') });
  try {
    const errors = await Promise.all([pool.preprocess(good, cfg), pool.preprocess(good, cfg)].map(rejection));
    for (const e of errors) {
      assert.instance(e, PreprocessWorkerError);
      assert.match(e.message, `${good}: not preprocessed: the image preprocessing worker could not be started: The URL must be of scheme file`);
    }
    assert.is(pool.size, 0);
  } finally {
    await pool.close();
  }
});

test('close(): queued requests reject, later requests reject, and no worker is left', async () => {
  const before = livePreprocessWorkers();
  const pool = new PreprocessPool({ size: 2 });
  const cfg = defaultPreprocess(32);
  const path = join(FIXTURE_DIR, 'images', 'd_big96.png');
  const pending = Array.from({ length: 20 }, () => pool.preprocess(path, cfg).then(() => null, (e: unknown) => e as Error));
  assert.is(pool.size, 2);
  assert.is(livePreprocessWorkers(), before + 2);
  await pool.close();
  const outcomes = await Promise.all(pending);
  for (const e of outcomes) if (e) assert.instance(e, PreprocessWorkerError);
  assert.ok(outcomes.some((e) => e?.message === `${path}: not preprocessed: the image preprocessing pool was closed`), 'queued requests were rejected');
  assert.is(pool.size, 0);
  assert.is(livePreprocessWorkers(), before);
  const after = await rejection(pool.preprocess(path, cfg));
  assert.is(after.message, `${path}: not preprocessed: the image preprocessing pool is closed`);
  await pool.close(); // a second close is harmless
});

test('the esbuild bundle runs its own worker file (<out>/preprocess-worker.js, registered by the entry point) without tsx', async () => {
  const out = join(tmp, 'bundle');
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), '--outdir', out, 'test/helpers/bundle-pool-check.ts'], { stdio: 'pipe' });
  // The bundle's externals (sharp, webgpu) resolve from the project's node_modules.
  symlinkSync(join(ROOT, 'node_modules'), join(tmp, 'node_modules'));
  const image = join(FIXTURE_DIR, 'images', 'b_wide48x40.png');
  const stdout = execFileSync(process.execPath, [join(out, 'test', 'helpers', 'bundle-pool-check.js'), image], { cwd: tmp, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  const res = JSON.parse(stdout) as { worker: string; data: string; live: number };
  assert.is(res.worker, pathToFileURL(join(out, 'preprocess-worker.js')).href);
  assert.is(res.live, 0);
  const bytes = Buffer.from(res.data, 'base64');
  const got = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  assert.is(firstDifference(got, await preprocessImage(image, defaultPreprocess(32))), -1, 'bundle result');
});

test('no worker outlives this file\'s pools', () => {
  assert.is(livePreprocessWorkers(), 0);
});

test.run();
