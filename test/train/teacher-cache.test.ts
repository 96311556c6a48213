// The teacher cache's keys: a cached embedding may only be reused for the same model weights,
// preprocessing and image file. Every ingredient of the key is changed once and must change it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { CLIP_MEAN, CLIP_STD, defaultPreprocess } from '../../src/io/image.ts';
import { modelKey, fileKey, TeacherCache } from '../../src/train/teacher-cache.ts';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.ts';
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

/** Writes a cache file for `key` in `dir` with rows [i, i, ...] (width `dim`), `bad` rows set to `value`. */
function writeCache(dir: string, key: string, dim: number, count: number, bad: Record<number, number>): string {
  mkdirSync(dir, { recursive: true });
  const data = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) data.fill(i, i * dim, (i + 1) * dim);
  for (const [row, value] of Object.entries(bad)) data[Number(row) * dim + 1] = value;
  const path = join(dir, `teacher-${key}.safetensors`);
  writeSafetensors(path, { embeds: { shape: [count, dim], data } }, { keys: JSON.stringify(Array.from({ length: count }, (_, i) => `k${i}`)) });
  return path;
}

test('cache rows that are NaN or ±Inf are dropped with one warning naming the file and the count, and not saved again', () => {
  const dir = join(root, 'cache-nan');
  const path = writeCache(dir, 'm', 4, 5, { 1: NaN, 3: Infinity, 4: -Infinity });
  const warnings: string[] = [];
  const cache = new TeacherCache(dir, 'm', 4, (m) => warnings.push(m));
  assert.equal(warnings, [`warning: teacher cache ${path}: dropped 3 of 5 cached embedding(s) that are not finite (NaN or ±Inf); they are recomputed`]);
  assert.is(cache.size, 2);
  assert.equal([...cache.get('k0')!], [0, 0, 0, 0]);
  assert.equal([...cache.get('k2')!], [2, 2, 2, 2]);
  for (const k of ['k1', 'k3', 'k4']) assert.not.ok(cache.has(k), `${k} dropped (recomputed by the caller)`);
  // A NaN row offered later is not stored either; the next save() rewrites the file without the dropped rows.
  cache.set('k1', Float32Array.from([NaN, 1, 1, 1]));
  assert.not.ok(cache.has('k1'));
  cache.set('k3', Float32Array.from([3, 3, 3, 3]));
  cache.save();
  const saved = readSafetensors(path);
  assert.equal(JSON.parse(saved.metadata.keys), ['k0', 'k2', 'k3']);
  assert.ok(saved.tensors.get('embeds')!.data.every(Number.isFinite));
  const again: string[] = [];
  assert.is(new TeacherCache(dir, 'm', 4, (m) => again.push(m)).size, 3);
  assert.equal(again, [], 'a clean file gives no warning');
});

test('a cache file with rows of the wrong width, or keys that do not match its rows, is ignored with a warning', () => {
  const dir = join(root, 'cache-width');
  const path = writeCache(dir, 'w', 8, 3, {});
  const warnings: string[] = [];
  assert.is(new TeacherCache(dir, 'w', 4, (m) => warnings.push(m)).size, 0);
  assert.equal(warnings, [`warning: ignoring teacher cache ${path}: its 3 rows have 8 values each, but the model's embeddings have 4; its embeddings are recomputed`]);
  writeSafetensors(path, { embeds: { shape: [3, 4], data: new Float32Array(12) } }, { keys: JSON.stringify(['a', 'b']) });
  warnings.length = 0;
  assert.is(new TeacherCache(dir, 'w', 4, (m) => warnings.push(m)).size, 0);
  assert.equal(warnings, [`warning: ignoring teacher cache ${path}: it has 3 rows but 2 keys; its embeddings are recomputed`]);
});

test.run();
