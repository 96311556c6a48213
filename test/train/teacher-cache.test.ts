// The teacher cache's keys: a cached embedding may only be reused for the same model weights,
// preprocessing and image file. Every ingredient of the key is changed once and must change it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { CLIP_MEAN, CLIP_STD, defaultPreprocess } from '../../src/io/image.ts';
import { modelKey, fileKey, TeacherCache } from '../../src/train/teacher-cache.ts';
import { writeSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-tcache-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const cfg = NAMED_CONFIGS.tiny;
const pre = defaultPreprocess(32);

test('modelKey of a preset: changes with the seed, the config and every preprocessing field', () => {
  const base = modelKey('tiny', cfg, pre, 0);
  assert.is(modelKey('tiny', cfg, pre, 0), base, 'deterministic');
  const changed = [
    modelKey('tiny', cfg, pre, 1),
    modelKey('tiny', cfg, pre, 0, 'f16'),
    modelKey('vit-b-32', cfg, pre, 0),
    modelKey('tiny', { ...cfg, layerNormEps: 1e-6 }, pre, 0),
    modelKey('tiny', cfg, { ...pre, cropHeight: 30, cropWidth: 30 }, 0),
    modelKey('tiny', cfg, { ...pre, resize: { shortestEdge: 40 } }, 0),
    modelKey('tiny', cfg, { ...pre, normalize: { mean: [0.5, 0.5, 0.5], std: CLIP_STD } }, 0),
    modelKey('tiny', cfg, { ...pre, normalize: { mean: CLIP_MEAN, std: [0.5, 0.5, 0.5] } }, 0),
    modelKey('tiny', cfg, { ...pre, resize: null }, 0),
    modelKey('tiny', cfg, { ...pre, resize: { width: 32, height: 32 } }, 0),
    modelKey('tiny', cfg, { ...pre, rescaleFactor: null }, 0),
    modelKey('tiny', cfg, { ...pre, normalize: null }, 0),
  ];
  for (const [i, k] of changed.entries()) assert.is.not(k, base, `change ${i} gives another key`);
  assert.is(new Set(changed).size, changed.length);
});

test('modelKey of a directory: a rewritten weights file, config or shard gives another key; the seed does not matter', () => {
  const dir = join(root, 'model');
  cpSync(join(FIXTURE_DIR, 'clip-tiny'), dir, { recursive: true });
  const base = modelKey(dir, cfg, pre, 0);
  assert.is(modelKey(dir, cfg, pre, 7), base, 'weights from files do not depend on the seed');
  const weights = join(dir, 'model.safetensors');
  const t = statSync(weights).mtime;
  utimesSync(weights, t, new Date(t.getTime() + 5000));
  const touched = modelKey(dir, cfg, pre, 0);
  assert.is.not(touched, base, 'model.safetensors rewritten (mtime)');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ vision_config: { hidden_size: 64 } }));
  assert.is.not(modelKey(dir, cfg, pre, 0), touched, 'config.json rewritten');
  // Sharded: a shard named by the index is part of the identity.
  const sharded = join(root, 'sharded');
  cpSync(dir, sharded, { recursive: true });
  rmSync(join(sharded, 'model.safetensors'));
  cpSync(weights, join(sharded, 'model-00001-of-00001.safetensors'));
  writeFileSync(join(sharded, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'visual_projection.weight': 'model-00001-of-00001.safetensors' } }));
  const s0 = modelKey(sharded, cfg, pre, 0);
  writeFileSync(join(sharded, 'model-00001-of-00001.safetensors'), 'a different shard');
  assert.is.not(modelKey(sharded, cfg, pre, 0), s0, 'a rewritten shard');
});

test('fileKey: the absolute path, the size and the mtime of the image decide it', () => {
  const a = join(root, 'a.png');
  writeFileSync(a, 'image bytes');
  const k = fileKey(a);
  assert.is(fileKey(a), k);
  // The same file through a relative path: the same key (the key resolves the path).
  const rel = relative(process.cwd(), a);
  assert.is(fileKey(rel), k);
  const b = join(root, 'b.png');
  cpSync(a, b, { preserveTimestamps: true });
  assert.is.not(fileKey(b), k, 'another path');
  // Keys are memoised per path string within a process, so the edited file is read through new strings.
  writeFileSync(a, 'image bytes, longer');
  assert.is.not(fileKey(`${root}/./a.png`), k, 'another size');
  const t = statSync(a).mtime;
  writeFileSync(a, 'image bytes');
  utimesSync(a, t, new Date(t.getTime() + 5000));
  assert.is.not(fileKey(`${root}//a.png`), k, 'same size, another mtime');
});

/** Writes an old single-file cache for `key` in `dir` with rows [i, i, ...] (width `dim`) keyed k0…, `bad` rows set to `value`. */
function writeLegacy(dir: string, key: string, dim: number, count: number, bad: Record<number, number>): string {
  mkdirSync(dir, { recursive: true });
  const data = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) data.fill(i, i * dim, (i + 1) * dim);
  for (const [row, value] of Object.entries(bad)) data[Number(row) * dim + 1] = value;
  const path = join(dir, `teacher-${key}.safetensors`);
  writeSafetensors(path, { embeds: { shape: [count, dim], data } }, { keys: JSON.stringify(Array.from({ length: count }, (_, i) => `k${i}`)) });
  return path;
}

const keys = (n: number, prefix = 'k'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const row = (v: number, dim = 4): Float32Array => new Float32Array(dim).fill(v);
const chunks = (dir: string): string[] => readdirSync(dir).filter((f) => f.startsWith('chunk-')).sort();

test('chunks: rows are stored per block of the dataset, read back exactly, and a save writes only the blocks that changed', () => {
  const dir = join(root, 'chunks');
  const c = new TeacherCache(dir, 'm', 4, [...keys(10), 'k3'], { blockRows: 4 });
  assert.equal(c.blocks.map((b) => b.keys.length), [4, 4, 2], 'ten distinct keys (a repeat dropped) in blocks of 4');
  for (const i of [0, 1, 2, 3, 8, 9]) c.set(`k${i}`, row(i));
  c.set('other', row(7));
  assert.ok(c.has('k0') === false && c.get('k0')![0] === 0, 'a pending row is read back before save, not counted as held');
  c.save();
  const cdir = join(dir, 'teacher-m');
  assert.is(chunks(cdir).length, 2);
  const again = new TeacherCache(dir, 'm', 4, keys(10), { blockRows: 4 });
  assert.is(again.size, 6);
  for (const i of [0, 1, 2, 3, 8, 9]) assert.equal([...again.get(`k${i}`)!], [i, i, i, i]);
  for (const i of [4, 5, 6, 7]) assert.not.ok(again.has(`k${i}`));
  assert.not.ok(again.has('other'), 'keys outside the dataset are not stored');
  assert.equal(again.missingKeys(again.blocks[1]), ['k4', 'k5', 'k6', 'k7']);
  // Adding block 1's rows writes block 1's chunk and touches no other file.
  const before = new Map(chunks(cdir).map((f) => [f, statSync(join(cdir, f)).mtimeMs + ':' + statSync(join(cdir, f)).ino]));
  for (const i of [4, 5, 6]) again.set(`k${i}`, row(i));
  again.save();
  for (const [f, stamp] of before) assert.is(statSync(join(cdir, f)).mtimeMs + ':' + statSync(join(cdir, f)).ino, stamp, `${f} untouched`);
  assert.is(chunks(cdir).length, 3);
  // A partial block grows: k7 merges into block 1's chunk with the rows it held.
  again.set('k7', row(7));
  again.save();
  const third = new TeacherCache(dir, 'm', 4, keys(10), { blockRows: 4 });
  assert.is(third.size, 10);
  assert.equal([...third.get('k5')!], [5, 5, 5, 5]);
  assert.equal([...third.get('k7')!], [7, 7, 7, 7]);
});

test('chunks: two writers filling blocks in any order (or the same block twice) make one complete cache; a changed key re-embeds only its block', () => {
  const dir = join(root, 'writers');
  const all = keys(9);
  const a = new TeacherCache(dir, 'm', 4, all, { blockRows: 3 });
  const b = new TeacherCache(dir, 'm', 4, all, { blockRows: 3 });
  for (const k of a.blocks[2].keys) a.set(k, row(Number(k.slice(1))));
  for (const blk of [b.blocks[0], b.blocks[2]]) for (const k of blk.keys) b.set(k, row(Number(k.slice(1))));
  b.save();
  const bytes = readFileSync(a.blocks[2].file);
  a.save();
  assert.ok(readFileSync(a.blocks[2].file).equals(bytes), 'the same block written twice: the same bytes');
  for (const k of a.blocks[1].keys) a.set(k, row(Number(k.slice(1))));
  a.save();
  const whole = new TeacherCache(dir, 'm', 4, all, { blockRows: 3 });
  assert.is(whole.size, 9);
  for (const [i, k] of all.entries()) assert.equal([...whole.get(k)!], [i, i, i, i]);
  // k4 changed (an edited image has another key): block 1 is another chunk, blocks 0 and 2 still hit.
  const edited = [...all.slice(0, 4), 'k4-edited', ...all.slice(5)];
  const e = new TeacherCache(dir, 'm', 4, edited, { blockRows: 3 });
  assert.equal(e.blocks.map((blk) => e.missingKeys(blk).length), [0, 3, 0]);
});

test('a damaged or mis-shaped chunk is ignored with one warning naming it; its block is filled again', () => {
  const dir = join(root, 'damaged');
  const c = new TeacherCache(dir, 'm', 4, keys(4), { blockRows: 2 });
  for (let i = 0; i < 4; i++) c.set(`k${i}`, row(i));
  c.save();
  const [b0, b1] = c.blocks;
  writeFileSync(b0.file, readFileSync(b0.file).subarray(0, 20));
  writeSafetensors(b1.file, { embeds: { shape: [2, 8], data: new Float32Array(16) } }, { keys: JSON.stringify(['k2', 'k3']) });
  const warnings: string[] = [];
  const again = new TeacherCache(dir, 'm', 4, keys(4), { blockRows: 2, warn: (m) => warnings.push(m) });
  assert.is(again.size, 0);
  assert.is(warnings.length, 2);
  assert.match(warnings[0], `warning: ignoring unreadable teacher cache chunk ${b0.file}: `);
  assert.is(warnings[1], `warning: ignoring teacher cache chunk ${b1.file}: its rows have 8 values each, but the model's embeddings have 4; its embeddings are recomputed`);
  for (let i = 0; i < 4; i++) again.set(`k${i}`, row(i + 10));
  again.save();
  assert.equal([...new TeacherCache(dir, 'm', 4, keys(4), { blockRows: 2 }).get('k3')!], [13, 13, 13, 13]);
});

test('the earlier single-file cache is converted once: finite rows into chunks, NaN/Inf rows dropped with a message; kept while other datasets have rows in it', () => {
  const dir = join(root, 'cache-nan');
  const path = writeLegacy(dir, 'm', 4, 5, { 1: NaN, 3: Infinity, 4: -Infinity });
  const warnings: string[] = [];
  const cache = new TeacherCache(dir, 'm', 4, keys(5), { warn: (m) => warnings.push(m) });
  assert.equal(warnings, [`teacher cache: converted ${path} (the earlier single-file format) into chunks in ${join(dir, 'teacher-m')}: 2 of its 5 rows belong to this dataset; dropped 3 that are not finite (NaN or ±Inf), which are recomputed; removed the file`]);
  assert.not.ok(existsSync(path));
  assert.is(cache.size, 2);
  assert.equal([...cache.get('k2')!], [2, 2, 2, 2]);
  for (const k of ['k1', 'k3', 'k4']) assert.not.ok(cache.has(k), `${k} dropped (recomputed by the caller)`);
  cache.set('k1', Float32Array.from([NaN, 1, 1, 1]));
  cache.save();
  assert.not.ok(new TeacherCache(dir, 'm', 4, keys(5)).has('k1'), 'a NaN row offered later is not stored either');
  const quiet: string[] = [];
  assert.is(new TeacherCache(dir, 'm', 4, keys(5), { warn: (m) => quiet.push(m) }).size, 2);
  assert.equal(quiet, [], 'converted once: no message the next time');
  // Rows of another dataset: the old file stays for them.
  const shared = join(root, 'cache-shared');
  const p2 = writeLegacy(shared, 'm', 4, 4, {});
  const w2: string[] = [];
  assert.is(new TeacherCache(shared, 'm', 4, ['k0', 'k1'], { warn: (m) => w2.push(m) }).size, 2);
  assert.match(w2[0], '2 of its 4 rows belong to this dataset; kept the file for its 2 rows of other datasets');
  assert.ok(existsSync(p2));
  assert.is(new TeacherCache(shared, 'm', 4, ['k2', 'k3'], { warn: () => undefined }).size, 2);
});

test('an old cache file with rows of the wrong width, or keys that do not match its rows, is ignored with a warning', () => {
  const dir = join(root, 'cache-width');
  const path = writeLegacy(dir, 'w', 8, 3, {});
  const warnings: string[] = [];
  assert.is(new TeacherCache(dir, 'w', 4, keys(3), { warn: (m) => warnings.push(m) }).size, 0);
  assert.equal(warnings, [`warning: ignoring teacher cache ${path}: its 3 rows have 8 values each, but the model's embeddings have 4; its embeddings are recomputed`]);
  writeSafetensors(path, { embeds: { shape: [3, 4], data: new Float32Array(12) } }, { keys: JSON.stringify(['a', 'b']) });
  warnings.length = 0;
  assert.is(new TeacherCache(dir, 'w', 4, keys(3), { warn: (m) => warnings.push(m) }).size, 0);
  assert.equal(warnings, [`warning: ignoring teacher cache ${path}: it has 3 rows but 2 keys; its embeddings are recomputed`]);
});

test.run();
