import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { loadDataset, splitByValFraction, splitHash, validateImages, type Pair } from '../../src/io/dataset.ts';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { defaultPreprocess, preprocessImage } from '../../src/io/image.ts';
import { PreprocessPool, PreprocessWorkerError, livePreprocessWorkers } from '../../src/io/preprocess-pool.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-dataset-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
/** A fresh empty directory under the scratch root. */
function freshDir(name: string): string {
  const d = join(root, `${name}-${counter++}`);
  mkdirSync(d, { recursive: true });
  return d;
}

const PNG_8 = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 200, g: 40, b: 10 } } }).png().toBuffer();

function put(dir: string, rel: string, bytes: Uint8Array | string = PNG_8): void {
  const p = join(dir, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, bytes);
}

function manifest(dir: string, lines: (object | string)[]): void {
  writeFileSync(join(dir, 'pairs.jsonl'), lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
}

function collect(): { warn: (m: string) => void; messages: string[] } {
  const messages: string[] = [];
  return { warn: (m) => messages.push(m), messages };
}

function throwsMatching(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

test('manifest: single and multiple generated paths, captions, ids, blank lines', () => {
  const d = freshDir('manifest');
  for (const f of ['real/cat.jpg', 'real/dog.png', 'gen/cat_a.png', 'gen/dog_0.png', 'gen/dog_1.png']) put(d, f);
  manifest(d, [
    { real: 'real/cat.jpg', generated: 'gen/cat_a.png', caption: 'a cat', label: ' cat ' },
    '',
    '   ',
    { real: 'real/dog.png', generated: ['gen/dog_0.png', 'gen/dog_1.png'], id: 'doggo' },
  ]);
  const w = collect();
  const ds = loadDataset(d, { onWarn: w.warn });
  assert.is(ds.layout, 'manifest');
  assert.equal(w.messages, []);
  assert.equal(ds.pairs, [
    { id: 'cat', real: join(d, 'real/cat.jpg'), generated: [join(d, 'gen/cat_a.png')], caption: 'a cat', label: 'cat' },
    { id: 'doggo', real: join(d, 'real/dog.png'), generated: [join(d, 'gen/dog_0.png'), join(d, 'gen/dog_1.png')] },
  ]);
});

test('manifest: a label must be a non-empty string', () => {
  const d = freshDir('manifest-label');
  for (const f of ['real/cat.jpg', 'gen/cat_a.png']) put(d, f);
  for (const bad of [3, '  ']) {
    manifest(d, [{ real: 'real/cat.jpg', generated: 'gen/cat_a.png', label: bad }]);
    assert.throws(() => loadDataset(d), (e: Error) => e.message.includes(`${join(d, 'pairs.jsonl')} line 1: "label" must be a non-empty string`));
  }
});

test('folder layout: <id>.<ext> and <id>_<k>.<ext>, numeric order, exact-id match first, orphans and real without generated', () => {
  const d = freshDir('folders');
  for (const f of ['real/a.png', 'real/b.jpg', 'real/c_1.png', 'real/lonely.png', 'real/notes.txt']) put(d, f);
  for (const f of ['generated/a.png', 'generated/b_0.png', 'generated/b_10.png', 'generated/b_2.png', 'generated/b_1.webp', 'generated/c_1_0.png', 'generated/c_1.png', 'generated/zzz.png']) put(d, f);
  const w = collect();
  const ds = loadDataset(d, { onWarn: w.warn });
  assert.is(ds.layout, 'folders');
  const byId = new Map(ds.pairs.map((p) => [p.id, p]));
  assert.equal([...byId.keys()].sort(), ['a', 'b', 'c_1']);
  assert.equal(byId.get('a')!.generated, [join(d, 'generated/a.png')]);
  assert.equal(byId.get('b')!.generated, ['b_0.png', 'b_1.webp', 'b_2.png', 'b_10.png'].map((f) => join(d, 'generated', f)));
  // c_1.png is c_1's own file (exact match), c_1_0.png its k=0 variant.
  assert.equal(byId.get('c_1')!.generated, [join(d, 'generated/c_1.png'), join(d, 'generated/c_1_0.png')]);
  assert.is(byId.get('b')!.real, join(d, 'real/b.jpg'));
  assert.equal(ds.problems.orphanGenerated, [join(d, 'generated/zzz.png')]);
  assert.equal(ds.problems.droppedPairs, ['lonely']);
  const all = w.messages.join('\n');
  assert.match(all, /real\/lonely\.png/);
  assert.match(all, /zzz\.png/);
});

test('folder layout: duplicate ids (same stem, two extensions) are an error naming them', () => {
  const d = freshDir('folderdup');
  for (const f of ['real/x.png', 'real/x.jpg', 'generated/x.png']) put(d, f);
  throwsMatching(() => loadDataset(d, { onWarn: () => {} }), /duplicate ids.*'x'.*real\/x\.jpg.*real\/x\.png/s);
});

test('missing files: pairs dropped, first 20 listed plus a count of the rest', () => {
  const d = freshDir('missing');
  const lines: object[] = [];
  for (let i = 0; i < 30; i++) {
    put(d, `real/${i}.png`);
    if (i < 5) put(d, `gen/${i}.png`);
    lines.push({ real: `real/${i}.png`, generated: [`gen/${i}.png`] });
  }
  // A pair that loses one of two generated images survives.
  put(d, 'real/two.png');
  put(d, 'gen/two_0.png');
  lines.push({ real: 'real/two.png', generated: ['gen/two_0.png', 'gen/two_1.png'] });
  // A pair whose real image is missing is dropped.
  put(d, 'gen/noreal.png');
  lines.push({ real: 'real/noreal.png', generated: 'gen/noreal.png' });
  manifest(d, lines);
  const w = collect();
  const ds = loadDataset(d, { onWarn: w.warn });
  assert.equal(ds.pairs.map((p) => p.id), ['0', '1', '2', '3', '4', 'two']);
  assert.equal(ds.pairs[5].generated, [join(d, 'gen/two_0.png')]);
  assert.is(ds.problems.missingFiles.length, 27);
  assert.is(ds.problems.droppedPairs.length, 26);
  assert.is(ds.problems.droppedGenerated, 1);
  const msg = w.messages.find((m) => m.includes('missing'))!;
  assert.ok(msg, 'a warning about missing files');
  assert.match(msg, /27 file\(s\)/);
  assert.match(msg, /\.\.\. and 7 more/);
  assert.is(msg.split('\n').filter((l) => l.includes(join(d, 'gen'))|| l.includes(join(d, 'real'))).length, 20);
  assert.ok(w.messages.some((m) => /dropped 26 pair\(s\) and 1 generated/.test(m)));
});

test('all files missing is an error', () => {
  const d = freshDir('allmissing');
  manifest(d, [{ real: 'r.png', generated: 'g.png' }]);
  throwsMatching(() => loadDataset(d, { onWarn: () => {} }), /no usable pairs.*r\.png/);
});

test('a manifest entry that is a directory is reported as a directory, not as missing', () => {
  const d = freshDir('direntry');
  put(d, 'real/a.png');
  put(d, 'real/b.png');
  put(d, 'gen/b.png');
  mkdirSync(join(d, 'gen', 'a.png'), { recursive: true });
  manifest(d, [{ real: 'real/a.png', generated: 'gen/a.png' }, { real: 'real/b.png', generated: 'gen/b.png' }]);
  const w = collect();
  const ds = loadDataset(d, { onWarn: w.warn });
  assert.equal(ds.pairs.map((p) => p.id), ['b']);
  assert.equal(ds.problems.notFiles, [join(d, 'gen/a.png')]);
  assert.equal(ds.problems.missingFiles, []);
  const all = w.messages.join('\n');
  assert.match(all, /1 path\(s\) listed in .*pairs\.jsonl are directories .*not image files/);
  assert.not.match(all, /missing/);
  // Only directories: the error says so and names the first.
  manifest(d, [{ real: 'real/a.png', generated: 'gen/a.png' }]);
  throwsMatching(() => loadDataset(d, { onWarn: () => {} }), new RegExp(`no usable pairs .*directories, not image files, first: ${join(d, 'gen/a.png')}`));
});

test('folder layout with no generated images: the error names the first file it needs (not "first missing: none")', () => {
  const d = freshDir('nogen');
  for (const f of ['real/cat.png', 'real/dog.png']) put(d, f);
  let msg = '';
  try {
    loadDataset(d, { onWarn: () => {} });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert.not.match(msg, /none/);
  assert.match(msg, /no usable pairs \(2 listed, all dropped: 2 real image\(s\) have no generated image; the first, real\/cat\.png, needs /);
  assert.ok(msg.includes(join(d, 'generated', 'cat.<ext>')) && msg.includes(join(d, 'generated', 'cat_<k>.<ext>')), msg);
  assert.ok(msg.includes(`${join(d, 'generated')} does not exist`), msg);
});

test('manifest errors name the file and line', () => {
  const d = freshDir('badjson');
  put(d, 'r.png');
  put(d, 'g.png');
  writeFileSync(join(d, 'pairs.jsonl'), `{"real": "r.png", "generated": "g.png"}\n\n{"real": "r.png", "generated": \n`);
  throwsMatching(() => loadDataset(d), new RegExp(`pairs\\.jsonl line 3: not valid JSON`));
  manifest(d, [{ real: 'r.png', generated: 'g.png', id: 'a' }, { generated: 'g.png', id: 'b' }]);
  throwsMatching(() => loadDataset(d), /line 2: missing "real"/);
  manifest(d, [{ real: 'r.png', id: 'a' }]);
  throwsMatching(() => loadDataset(d), /line 1: missing "generated"/);
  manifest(d, [{ real: 'r.png', generated: [] }]);
  throwsMatching(() => loadDataset(d), /line 1: "generated" must be a path or a non-empty list/);
  manifest(d, ['[1, 2]']);
  throwsMatching(() => loadDataset(d), /line 1: expected a JSON object/);
  manifest(d, [{ real: 'r.png', generated: 'g.png' }, { real: 'x/r.png', generated: 'g.png' }, { real: 'r.png', generated: 'g.png', id: 'ok' }]);
  throwsMatching(() => loadDataset(d), /duplicate ids: 'r' \(line 1, line 2\)/);
  writeFileSync(join(d, 'pairs.jsonl'), '\n\n');
  throwsMatching(() => loadDataset(d), /no pairs/);
});

test('missing, empty and unrecognised directories are errors', () => {
  throwsMatching(() => loadDataset(join(root, 'does-not-exist')), /does not exist/);
  throwsMatching(() => loadDataset(freshDir('empty')), /is empty/);
  const d = freshDir('other');
  put(d, 'photo.png');
  throwsMatching(() => loadDataset(d), /neither pairs\.jsonl nor a real\/ folder/);
  const f = join(d, 'photo.png');
  throwsMatching(() => loadDataset(f), /not a directory/);
});

test('pairs.jsonl that is a directory: the error names it and says a manifest file was expected', () => {
  const d = freshDir('manifest-dir');
  mkdirSync(join(d, 'pairs.jsonl'));
  throwsMatching(() => loadDataset(d), new RegExp(`^${join(d, 'pairs.jsonl').replace(/[.]/g, '\\.')} is a directory; expected the dataset's manifest, a text file with one JSON object per line`));
});

test('validateImages finds corrupt and truncated files', async () => {
  const d = freshDir('validate');
  const big = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#347' } }).png().toBuffer();
  put(d, 'real/a.png', big);
  put(d, 'real/b.png', big);
  put(d, 'generated/a.png', 'definitely not a png');
  put(d, 'generated/b.png', big.subarray(0, big.length >> 1));
  const ds = loadDataset(d, { onWarn: () => {} });
  const res = await validateImages(ds);
  assert.is(res.checked, 4);
  assert.equal(res.bad.map((b) => b.path), [join(d, 'generated/a.png'), join(d, 'generated/b.png')]);
  for (const b of res.bad) assert.ok(b.message.includes(b.path), b.message);
  const res2 = await validateImages(ds, { preprocess: defaultPreprocess(32), concurrency: 1 });
  assert.is(res2.bad.length, 2);
  // The messages preprocessImage gives in-thread, and the pool started for the call has ended.
  for (const b of res2.bad) {
    const inThread = await preprocessImage(b.path, defaultPreprocess(32)).then(() => 'decoded', (e: Error) => e.message);
    assert.is(b.message, inThread);
  }
  assert.is(livePreprocessWorkers(), 0);
  // A pool that cannot work is an error, not a list of bad files.
  const pool = new PreprocessPool({ size: 1, workerUrl: pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'broken-preprocess-worker.ts')) });
  try {
    await validateImages(ds, { preprocess: defaultPreprocess(32), pool });
    assert.unreachable('should fail');
  } catch (e) {
    assert.instance(e, PreprocessWorkerError);
  } finally {
    await pool.close();
  }
});

function fakePairs(ids: string[]): Pair[] {
  return ids.map((id) => ({ id, real: `/r/${id}.png`, generated: [`/g/${id}.png`] }));
}

test('val split: deterministic, close to the fraction, stable when pairs are added', () => {
  const ids = Array.from({ length: 2000 }, (_, i) => `img${i}`);
  const a = splitByValFraction(fakePairs(ids), 0.1, 7);
  const b = splitByValFraction(fakePairs(ids), 0.1, 7);
  assert.equal(a.val.map((p) => p.id), b.val.map((p) => p.id));
  assert.is(a.train.length + a.val.length, 2000);
  assert.ok(a.val.length > 150 && a.val.length < 250, `val size ${a.val.length} near 200`);
  // Adding pairs (and reordering) never moves an existing id.
  const more = [...ids.slice(0, 1000).reverse(), ...Array.from({ length: 500 }, (_, i) => `new${i}`), ...ids.slice(1000)];
  const c = splitByValFraction(fakePairs(more), 0.1, 7);
  const valA = new Set(a.val.map((p) => p.id));
  const valC = new Set(c.val.map((p) => p.id));
  for (const id of ids) assert.is(valC.has(id), valA.has(id), id);
  // Another seed gives another split.
  const d = splitByValFraction(fakePairs(ids), 0.1, 8);
  assert.not.equal(d.val.map((p) => p.id), a.val.map((p) => p.id));
  // Membership is exactly the hash rule, both ways.
  for (const p of a.val) assert.ok(splitHash(p.id, 7) < 0.1);
  for (const p of a.train) assert.ok(splitHash(p.id, 7) >= 0.1);
  // The hash is uniform on [0, 1), so the val share is the fraction for any fraction:
  // Kolmogorov–Smirnov distance of the 2000 hashes to U(0, 1), below the 0.1% critical value.
  const h = ids.map((id) => splitHash(id, 7)).sort((x, y) => x - y);
  const ks = Math.max(...h.map((x, i) => Math.max(Math.abs(x - i / h.length), Math.abs(x - (i + 1) / h.length))));
  assert.ok(ks < 1.95 / Math.sqrt(h.length), `KS distance ${ks}`);
});

test('val split: both sides non-empty for tiny sets; fraction 0; bad fraction', () => {
  const two = fakePairs(['p', 'q']);
  const s = splitByValFraction(two, 0.001, 1);
  assert.is(s.val.length, 1);
  assert.is(s.train.length, 1);
  const lo = two.map((p) => splitHash(p.id, 1));
  assert.is(s.val[0].id, lo[0] < lo[1] ? 'p' : 'q');
  const hi = splitByValFraction(two, 0.999, 1);
  assert.is(hi.val.length, 1);
  assert.is(hi.train.length, 1);
  assert.equal(splitByValFraction(two, 0, 1), { train: two, val: [] });
  assert.equal(splitByValFraction(fakePairs(['only']), 0.5, 1).val, []);
  throwsMatching(() => splitByValFraction(two, 1, 1), /\[0, 1\)/);
  throwsMatching(() => splitByValFraction(two, -0.1, 1), /\[0, 1\)/);
});

function channelMeans(raw: Buffer): [number, number, number] {
  const m: [number, number, number] = [0, 0, 0];
  for (let i = 0; i < raw.length; i++) m[i % 3] += raw[i];
  const n = raw.length / 3;
  return [m[0] / n, m[1] / n, m[2] / n];
}

test('demo dataset: builds, every pair decodes, real images distinct, consistent shift, reused without rewriting', async () => {
  const d = join(root, 'demo');
  const t0 = performance.now();
  const r1 = await ensureDemoDataset(d, { count: 24, size: 32, seed: 3, variants: 2 });
  const buildMs = performance.now() - t0;
  assert.is(r1.reused, false);
  assert.ok(existsSync(join(d, 'README.txt')) && /NOT diffusion-model outputs/.test(readFileSync(join(d, 'README.txt'), 'utf8')));
  const ds = loadDataset(d, { onWarn: (m) => assert.unreachable(m) });
  assert.is(ds.pairs.length, 24);
  const shapes = ['circle', 'ring', 'square', 'diamond', 'triangle', 'bar'];
  for (const p of ds.pairs) {
    assert.is(p.generated.length, 2);
    // What the scene shows, largest shape first; its label is that shape's kind.
    assert.match(p.caption ?? '', /^((small|large) )?[a-z]+ (circle|ring|square|diamond|triangle|bar)( and .+)? on [a-z]+ and [a-z]+ .+$/);
    assert.ok(shapes.includes(p.label ?? ''), `label ${p.label}`);
    assert.match(p.caption ?? '', new RegExp(`^((small|large) )?[a-z]+ ${p.label}\\b`), 'the label is the first (largest) shape of the caption');
    // The class folders hold the same images.
    assert.ok(existsSync(join(d, 'classes', 'real', p.label!, basename(p.real))), `classes/real/${p.label}/${basename(p.real)}`);
    for (const g of p.generated) assert.ok(existsSync(join(d, 'classes', 'generated', p.label!, basename(g))));
  }
  assert.ok(new Set(ds.pairs.map((p) => p.label)).size >= 4, 'several classes among 24 scenes');
  const v = await validateImages(ds, { preprocess: defaultPreprocess(32) });
  assert.equal(v.bad, []);
  assert.is(v.checked, 72);
  const seen = new Set<string>();
  let warmer = 0;
  for (const p of ds.pairs) {
    const px = await preprocessImage(p.real, defaultPreprocess(32));
    seen.add(Buffer.from(px.buffer).toString('base64'));
    const real = channelMeans(await sharp(p.real).raw().toBuffer());
    const gen = channelMeans(await sharp(p.generated[0]).raw().toBuffer());
    // The warm cast: red minus blue goes up in the generated image.
    if (gen[0] - gen[2] > real[0] - real[2]) warmer++;
  }
  assert.is(seen.size, 24, 'each real image distinct');
  assert.ok(warmer >= 22, `warm shift in ${warmer}/24 pairs`);

  const files = [join(d, 'demo.json'), join(d, 'pairs.jsonl'), ds.pairs[0].real, ds.pairs[5].generated[1]];
  const mtimes = files.map((f) => statSync(f).mtimeMs);
  const r2 = await ensureDemoDataset(d, { count: 24, size: 32, seed: 3, variants: 2 });
  assert.is(r2.reused, true);
  assert.equal(files.map((f) => statSync(f).mtimeMs), mtimes);
  assert.ok(buildMs < 10_000, `built in ${buildMs.toFixed(0)} ms`);
});

test('demo dataset: other parameters or an interrupted build are rebuilt; foreign directories refused', async () => {
  const d = join(root, 'demo2');
  await ensureDemoDataset(d, { count: 6, size: 16, seed: 1, variants: 1 });
  const r = await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1 });
  assert.is(r.reused, false);
  assert.is(loadDataset(d).pairs.length, 8);
  // Simulate an interruption: stamp says incomplete.
  const stamp = JSON.parse(readFileSync(join(d, 'demo.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(d, 'demo.json'), JSON.stringify({ ...stamp, complete: false }));
  assert.is((await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1 })).reused, false);
  assert.is((await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1 })).reused, true);
  // A missing image also forces a rebuild.
  rmSync(join(d, 'real', '3.png'));
  assert.is((await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1 })).reused, false);
  assert.ok(existsSync(join(d, 'real', '3.png')));
  const foreign = freshDir('foreign');
  put(foreign, 'mine.txt', 'user data');
  try {
    await ensureDemoDataset(foreign, { count: 4, size: 16 });
    assert.unreachable('should refuse');
  } catch (e) {
    assert.match((e as Error).message, /not a genalign demo dataset/);
  }
  assert.is(readFileSync(join(foreign, 'mine.txt'), 'utf8'), 'user data');
});

test('demo dataset: a rebuild says why, and never deletes files the build did not write', async () => {
  const d = join(root, 'demo3');
  const lines: string[] = [];
  const log = (l: string): void => void lines.push(l);
  await ensureDemoDataset(d, { count: 6, size: 16, seed: 1, variants: 1, log });
  assert.equal(lines, [], 'a fresh build logs nothing here (the caller reports it)');
  await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1, log });
  assert.equal(lines, [`demo dataset: rebuilding ${d}: other parameters were asked for: count 6 → 8`]);
  rmSync(join(d, 'generated', '3_0.jpg'));
  await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1, log });
  assert.is(lines[1], `demo dataset: rebuilding ${d}: generated/3_0.jpg is missing`);
  // A user's own files in real/ and generated/: reused as long as no rebuild is needed (the
  // manifest does not list them, so they are not trained on)...
  put(d, 'real/mine.png');
  put(d, 'generated/8_0.jpg');
  mkdirSync(join(d, 'generated', 'extra'));
  put(d, 'classes/real/dog/x.png');
  assert.is((await ensureDemoDataset(d, { count: 8, size: 16, seed: 1, variants: 1, log })).reused, true);
  // ...and a rebuild refuses, listing them, and deletes nothing.
  try {
    await ensureDemoDataset(d, { count: 9, size: 16, seed: 1, variants: 1, log });
    assert.unreachable('should refuse');
  } catch (e) {
    const msg = (e as Error).message;
    assert.match(msg, /must be rebuilt \(other parameters were asked for: count 8 → 9\)/);
    assert.match(msg, /4 file\(s\) the demo build did not write:\n  classes\/real\/dog\/\n  generated\/8_0\.jpg\n  generated\/extra\/\n  real\/mine\.png\n/);
    assert.match(msg, /Move them out/);
  }
  assert.is(lines.length, 2, 'no rebuild line for a refused rebuild');
  for (const f of ['real/mine.png', 'generated/8_0.jpg', 'real/0.png', 'pairs.jsonl']) assert.ok(existsSync(join(d, f)), f);
  assert.is(loadDataset(d).pairs.length, 8, 'the old build is left intact');
  // Moved out: the rebuild goes ahead.
  rmSync(join(d, 'real', 'mine.png'));
  rmSync(join(d, 'generated', '8_0.jpg'));
  rmSync(join(d, 'generated', 'extra'), { recursive: true });
  rmSync(join(d, 'classes', 'real', 'dog'), { recursive: true });
  assert.is((await ensureDemoDataset(d, { count: 9, size: 16, seed: 1, variants: 1, log })).reused, false);
  assert.is(lines[2], `demo dataset: rebuilding ${d}: other parameters were asked for: count 8 → 9`);
  // An interrupted build's leftovers (temp files, its own images) are not foreign.
  const stamp = JSON.parse(readFileSync(join(d, 'demo.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(d, 'demo.json'), JSON.stringify({ ...stamp, complete: false }));
  put(d, 'real/.5.png.4242.tmp');
  await ensureDemoDataset(d, { count: 9, size: 16, seed: 1, variants: 1, log });
  assert.match(lines[3], /rebuilding .*: an earlier build was interrupted/);
  assert.not.ok(existsSync(join(d, 'real/.5.png.4242.tmp')));
});

test.run();
