import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { loadDataset, type Pair } from '../../src/io/dataset.ts';
import { PairLoader, TooManyBadImagesError, type PairBatch, type PairLoaderOptions } from '../../src/io/loader.ts';
import { defaultPreprocess, preprocessImage, sourceName, CLIP_MEAN, CLIP_STD, type ImageSource, type PreprocessConfig } from '../../src/io/image.ts';
import { PreprocessPool, PreprocessWorkerError, livePreprocessWorkers } from '../../src/io/preprocess-pool.ts';

const S = 8;
const PRE = defaultPreprocess(S);
const root = mkdtempSync(join(tmpdir(), 'genalign-loader-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

// Each image is a solid colour that encodes what it is: red = 10·(pair index) + 1,
// green = 0 for the real image or 40·(k + 1) for generated image k, blue = 255 real / 128 generated.
async function solid(path: string, r: number, g: number, b: number): Promise<void> {
  writeFileSync(path, await sharp({ create: { width: S, height: S, channels: 3, background: { r, g, b } } }).png().toBuffer());
}

/** N pairs; pair i has `variants(i)` generated images. Returns the dataset directory. */
async function makeData(name: string, n: number, variants: (i: number) => number): Promise<string> {
  const d = join(root, name);
  mkdirSync(join(d, 'real'), { recursive: true });
  mkdirSync(join(d, 'generated'), { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    await solid(join(d, 'real', `p${i}.png`), 10 * i + 1, 0, 255);
    const gen: string[] = [];
    for (let k = 0; k < variants(i); k++) {
      await solid(join(d, 'generated', `p${i}_${k}.png`), 10 * i + 1, 40 * (k + 1), 128);
      gen.push(`generated/p${i}_${k}.png`);
    }
    lines.push(JSON.stringify({ real: `real/p${i}.png`, generated: gen, caption: `pair ${i}` }));
  }
  writeFileSync(join(d, 'pairs.jsonl'), lines.join('\n') + '\n');
  return d;
}

/** The byte value that produced a normalised float of channel c. */
function byteOf(v: number, c: number): number {
  return Math.round((v * CLIP_STD[c] + CLIP_MEAN[c]) * 255);
}

/** Checks every row's pixels against the file it claims to come from. */
function checkPixels(b: PairBatch): void {
  const per = 3 * S * S;
  assert.is(b.generated.length, b.ids.length * per);
  assert.is(b.real.length, b.realRows.length * per);
  b.ids.forEach((id, row) => {
    const i = Number(id.slice(1));
    const k = Number(/_(\d+)\.png$/.exec(b.generatedPaths[row])![1]);
    assert.is(basename(b.realPaths[row]), `${id}.png`);
    assert.is(byteOf(b.generated[row * per], 0), 10 * i + 1, `generated red of ${id}`);
    assert.is(byteOf(b.generated[row * per + S * S], 1), 40 * (k + 1), `generated green of ${id}`);
    assert.is(byteOf(b.generated[row * per + 2 * S * S + 5], 2), 128);
  });
  b.realRows.forEach((row, j) => {
    const i = Number(b.ids[row].slice(1));
    assert.is(byteOf(b.real[j * per + 3], 0), 10 * i + 1, `real red of ${b.ids[row]}`);
    assert.is(byteOf(b.real[j * per + 2 * S * S], 2), 255);
  });
}

let basic: Pair[];
let multi: Pair[];

test.before(async () => {
  basic = loadDataset(await makeData('basic', 10, () => 1)).pairs;
  multi = loadDataset(await makeData('multi', 12, (i) => (i % 3) + 1)).pairs;
});

function loader(pairs: Pair[], o: Partial<PairLoaderOptions> = {}): PairLoader {
  return new PairLoader(pairs, { batchSize: 4, preprocess: PRE, seed: 1, onWarn: (m) => assert.unreachable(`unexpected warning: ${m}`), ...o });
}

async function take(l: PairLoader, n: number): Promise<PairBatch[]> {
  const out: PairBatch[] = [];
  for (let i = 0; i < n; i++) out.push(await l.next());
  return out;
}

test('epochOrder: permutation, same seed same order, other epoch or seed another order', () => {
  const a = loader(multi);
  const b = loader(multi);
  const o0 = a.epochOrder(0);
  assert.equal([...o0].sort((x, y) => x - y), multi.map((_, i) => i));
  assert.equal(b.epochOrder(0), o0);
  assert.equal(b.epochOrder(5), a.epochOrder(5));
  assert.not.equal(a.epochOrder(1), o0);
  assert.not.equal(loader(multi, { seed: 2 }).epochOrder(0), o0);
  assert.equal(loader(multi, { shuffle: false }).epochOrder(3), multi.map((_, i) => i));
});

test('batches follow the epoch order, pixels match their files, same seed → same batches and picks', async () => {
  const a = loader(multi);
  const b = loader(multi);
  assert.is(a.dropLast, true); // 12 pairs ≥ 2 batches of 4
  assert.is(a.batchesPerEpoch, 3);
  const ba = await take(a, 6);
  const bb = await take(b, 6);
  assert.equal(ba.map((x) => [x.epoch, x.index]), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
  for (let i = 0; i < 6; i++) {
    assert.equal(ba[i].ids, bb[i].ids);
    assert.equal(ba[i].generatedPaths, bb[i].generatedPaths);
    assert.equal(ba[i].generated, bb[i].generated);
    checkPixels(ba[i]);
    assert.equal(ba[i].realRows, [0, 1, 2, 3]);
    assert.equal(ba[i].captions, ba[i].ids.map((id) => `pair ${id.slice(1)}`));
  }
  for (const e of [0, 1]) {
    const ids = ba.filter((x) => x.epoch === e).flatMap((x) => x.ids);
    assert.equal(ids, a.epochOrder(e).map((i) => multi[i].id));
  }
  assert.not.equal(ba.slice(0, 3).flatMap((x) => x.ids), ba.slice(3).flatMap((x) => x.ids));
  await a.close();
  await b.close();
});

test('several generated images: the pick is seeded per (seed, epoch, id) and varies across epochs', async () => {
  const l = loader(multi, { batchSize: 12 });
  const picks = new Map<string, Set<string>>();
  for (let e = 0; e < 8; e++) {
    const [batch] = await take(l, 1);
    assert.is(batch.epoch, e);
    checkPixels(batch);
    batch.ids.forEach((id, row) => {
      const pair = multi.find((p) => p.id === id)!;
      assert.is(batch.generatedPaths[row], pair.generated[l.generatedIndex(e, pair)]);
      if (!picks.has(id)) picks.set(id, new Set());
      picks.get(id)!.add(batch.generatedPaths[row]);
    });
  }
  for (const p of multi) {
    assert.ok(picks.get(p.id)!.size <= p.generated.length);
    // With 3 choices over 8 epochs, seeing one pick every time would mean the pick ignores the epoch.
    if (p.generated.length === 3) assert.ok(picks.get(p.id)!.size >= 2, `${p.id} picks ${[...picks.get(p.id)!].join(',')}`);
  }
  const other = loader(multi, { batchSize: 12, seed: 99 });
  const differs = multi.some((p) => [0, 1, 2].some((e) => other.generatedIndex(e, p) !== l.generatedIndex(e, p)));
  assert.ok(differs, 'another seed changes some picks');
  await l.close();
});

test('dropLast default and explicit', async () => {
  assert.is(loader(basic, { batchSize: 4 }).dropLast, true); // 10 ≥ 8
  assert.is(loader(basic, { batchSize: 6 }).dropLast, false); // only one full batch fits
  const keep = loader(basic, { batchSize: 6 });
  const sizes = (await take(keep, 3)).map((b) => [b.epoch, b.ids.length]);
  assert.equal(sizes, [[0, 6], [0, 4], [1, 6]]);
  const small = loader(basic, { batchSize: 16 });
  assert.is(small.batchesPerEpoch, 1);
  assert.is((await small.next()).ids.length, 10);
  const drop = loader(basic, { batchSize: 3, dropLast: true });
  assert.is(drop.batchesPerEpoch, 3);
  assert.throws(() => loader(basic, { batchSize: 16, dropLast: true }), /no full batch/);
  await Promise.all([keep.close(), small.close(), drop.close()]);
});

test('batchesPerStep: epochs hold whole steps, so no step repeats a pair across an epoch boundary', async () => {
  // 10 pairs in batches of 2 is 5 batches; steps of 2 batches keep 4 of them per epoch.
  const stepped = loader(basic, { batchSize: 2, batchesPerStep: 2 });
  assert.is(stepped.batchesPerEpoch, 4);
  const batches = await take(stepped, 8);
  for (let s = 0; s < 4; s++) {
    const ids = [...batches[2 * s].ids, ...batches[2 * s + 1].ids];
    assert.is(new Set(ids).size, 4, `step ${s} holds 4 distinct pairs: ${ids}`);
    assert.is(batches[2 * s].epoch, batches[2 * s + 1].epoch, `step ${s} lies in one epoch`);
  }
  assert.equal(batches.map((b) => b.epoch), [0, 0, 0, 0, 1, 1, 1, 1]);
  assert.throws(() => loader(basic, { batchSize: 4, batchesPerStep: 3 }), /make 2 batch\(es\) of 4, fewer than the 3 of one step/);
  assert.throws(() => loader(basic, { batchSize: 2, batchesPerStep: 0 }), /batchesPerStep must be a positive integer/);
  await stepped.close();
});

test('prefetch: decodes ahead, bounded, and batches arrive in order despite out-of-order decodes', async () => {
  let started = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const slowDecode = async (src: ImageSource, cfg: PreprocessConfig): Promise<Float32Array> => {
    const path = sourceName(src);
    started++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    // Later files of a batch often finish first.
    await new Promise((r) => setTimeout(r, 1 + ((path.length * 7 + started * 13) % 15)));
    const px = await preprocessImage(path, cfg);
    inFlight--;
    return px;
  };
  const l = loader(basic, { batchSize: 2, prefetch: 2, decode: slowDecode });
  const first = await l.next();
  assert.equal([first.epoch, first.index], [0, 0]);
  // Batch 0 plus two prefetched batches were started: 3 batches × 2 pairs × 2 files.
  await new Promise((r) => setTimeout(r, 60));
  assert.is(started, 12);
  assert.ok(maxInFlight <= 12, `in flight ${maxInFlight}`);
  const rest = await take(l, 9);
  assert.equal(rest.map((b) => b.index), [1, 2, 3, 4, 0, 1, 2, 3, 4]);
  for (const b of [first, ...rest]) checkPixels(b);
  assert.ok(maxInFlight <= 12, `never more than 1 + prefetch batches decoding (max ${maxInFlight} files)`);
  assert.equal(l.position, { epoch: 2, batch: 0 });
  await l.close();
  assert.is(inFlight, 0, 'close waits for in-flight decodes');
  const lazy = loader(basic, { batchSize: 2, prefetch: 0, decode: slowDecode });
  started = 0;
  await lazy.next();
  await new Promise((r) => setTimeout(r, 30));
  assert.is(started, 4, 'prefetch 0 decodes only on demand');
  await lazy.close();
});

test('realNeeded: skipped real images are not decoded', async () => {
  const decoded: string[] = [];
  const l = loader(basic, {
    batchSize: 5,
    realNeeded: (id) => Number(id.slice(1)) % 2 === 1,
    decode: (p, c) => {
      decoded.push(sourceName(p));
      return preprocessImage(p, c);
    },
  });
  const [b0, b1] = await take(l, 2);
  for (const b of [b0, b1]) {
    checkPixels(b);
    assert.equal(b.realRows, b.ids.flatMap((id, row) => (Number(id.slice(1)) % 2 === 1 ? [row] : [])));
    assert.is(b.realPaths.length, b.ids.length);
  }
  await l.close();
  assert.not.ok(decoded.some((p) => /real\/p\d*[02468]\.png$/.test(p)), 'no even real decoded');
});

test('resume: start position and skipBatches reproduce the uninterrupted stream', async () => {
  const whole = loader(multi);
  const full = await take(whole, 7);
  const resumed = loader(multi, { start: { epoch: 1, batch: 1 } });
  assert.equal(resumed.position, { epoch: 1, batch: 1 });
  const r = await take(resumed, 3);
  assert.equal(r.map((b) => [b.epoch, b.index, b.ids, b.generatedPaths]), full.slice(4, 7).map((b) => [b.epoch, b.index, b.ids, b.generatedPaths]));
  const skipped = loader(multi);
  skipped.skipBatches(4);
  assert.equal((await skipped.next()).ids, full[4].ids);
  assert.throws(() => skipped.skipBatches(1), /before the first next/);
  await Promise.all([whole.close(), resumed.close(), skipped.close()]);
});

/** basic dataset with some generated files replaced by corrupt or truncated bytes. */
async function withBadFiles(name: string, bad: number[]): Promise<Pair[]> {
  const d = await makeData(name, 10, () => 1);
  const good = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#123456' } }).png().toBuffer();
  bad.forEach((i, j) => writeFileSync(join(d, 'generated', `p${i}_0.png`), j % 2 === 0 ? Buffer.from('not an image at all') : good.subarray(0, good.length >> 1)));
  return loadDataset(d).pairs;
}

test('a corrupt image skips its pair with one warning naming the file, and is counted', async () => {
  const pairs = await withBadFiles('corrupt', [3]);
  const warnings: string[] = [];
  const l = loader(pairs, { batchSize: 10, maxBadFraction: 0.2, onWarn: (m) => warnings.push(m) });
  const e0 = await l.next();
  assert.is(e0.ids.length, 9);
  assert.is(e0.skipped, 1);
  assert.not.ok(e0.ids.includes('p3'));
  checkPixels(e0);
  assert.is(warnings.length, 1);
  assert.match(warnings[0], /p3_0\.png/);
  assert.is(l.badCount, 1);
  assert.is(l.seenCount, 20);
  const e1 = await l.next();
  assert.is(e1.ids.length, 9);
  assert.is(warnings.length, 1, 'a known bad file is not decoded or reported again');
  await l.close();
});

test('a truncated image is detected too', async () => {
  const pairs = await withBadFiles('truncated', [0, 5]); // p5 gets the truncated PNG
  const warnings: string[] = [];
  const l = loader(pairs, { batchSize: 10, maxBadFraction: 0.5, onWarn: (m) => warnings.push(m) });
  const b = await l.next();
  assert.equal(b.ids.filter((id) => id === 'p0' || id === 'p5'), []);
  assert.ok(warnings.some((w) => w.includes('p5_0.png')), warnings.join('\n'));
  await l.close();
});

test('too many bad images abort with a clear error; later calls fail the same way', async () => {
  const pairs = await withBadFiles('toomany', [1, 4, 7]);
  const l = loader(pairs, { batchSize: 5, onWarn: () => {} });
  let err: unknown;
  try {
    await take(l, 2);
  } catch (e) {
    err = e;
  }
  assert.instance(err, TooManyBadImagesError);
  const msg = (err as Error).message;
  assert.match(msg, /too many unreadable images: \d of \d+ decoded files failed/);
  assert.match(msg, /p[147]_0\.png/);
  assert.match(msg, /5\.0% allowed/);
  try {
    await l.next();
    assert.unreachable('should keep failing');
  } catch (e) {
    assert.is(e, err);
  }
  await l.close();
  // The same data passes with a higher limit (shrunk batches, no abort).
  const ok = loader(pairs, { batchSize: 5, maxBadFraction: 0.2, onWarn: () => {} });
  const bs = await take(ok, 2);
  assert.is(bs[0].ids.length + bs[1].ids.length, 7);
  await ok.close();
});

test('one bad file in the first batch of a large dataset does not abort (the fraction needs a sample)', async () => {
  const pairs: Pair[] = Array.from({ length: 400 }, (_, i) => ({ id: `q${i}`, real: `/data/real/q${i}.png`, generated: [`/data/gen/q${i}.png`] }));
  const fake = new PairLoader(pairs, {
    batchSize: 8,
    preprocess: PRE,
    seed: 1,
    shuffle: false,
    onWarn: () => {},
    decode: async (p) => {
      if (p === '/data/gen/q0.png') throw new Error('pngload: truncated');
      return new Float32Array(3 * S * S);
    },
  });
  const b = await fake.next();
  assert.is(b.ids.length, 7);
  assert.is(fake.badCount, 1);
  assert.is(fake.seenCount, 16);
  await fake.close();
});

test('a pool that cannot preprocess aborts the loader with PreprocessWorkerError instead of skipping pairs as bad files', async () => {
  const brokenWorker = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'broken-preprocess-worker.ts'));
  const pool = new PreprocessPool({ size: 1, workerUrl: brokenWorker });
  const l = loader(basic, { pool });
  try {
    await l.next();
    assert.unreachable('should abort');
  } catch (e) {
    assert.instance(e, PreprocessWorkerError);
    assert.match((e as Error).message, 'could not start: Error: this worker entry cannot load');
  }
  assert.is(l.badCount, 0);
  await l.close();
  assert.is(pool.size, 0, 'the failed pool has no workers left');
  await pool.close();
});

test('close() ends the pool the loader started, and a pool passed in is left open', async () => {
  const own = loader(basic);
  await own.next();
  assert.ok(livePreprocessWorkers() >= 1, 'the loader started a pool');
  await own.close();
  assert.is(livePreprocessWorkers(), 0);
  const pool = new PreprocessPool({ size: 1 });
  const shared = loader(basic, { pool });
  await shared.next();
  await shared.close();
  assert.is(pool.size, 1);
  await pool.close();
  assert.is(livePreprocessWorkers(), 0);
});

test('no worker outlives the loaders of this file', () => {
  assert.is(livePreprocessWorkers(), 0);
});

test.run();
