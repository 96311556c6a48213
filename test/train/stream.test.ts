// Training on WebDataset shards (io/shard-stream.ts + trainer): the stream visits every training
// sample once per epoch in a seeded order and resumes exactly from any saved position; a run
// stopped and resumed logs the same losses as an uninterrupted one; held-out shards are the val
// split; --epochs reads sizes.json; a bad sample is named, skipped and counted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDataset, splitHash } from '../../src/io/dataset.ts';
import { ShardStream, type StreamPosition } from '../../src/io/shard-stream.ts';
import { readShard, writeShard, shardPattern, type SampleToWrite } from '../../src/io/webdataset.ts';
import { getDevice } from '../../src/gpu/device.ts';
import { train, warmShardTeacherCache, type TrainOptions } from '../../src/train/trainer.ts';
import { ShardTeacherCache, fileKey, shardRowKey } from '../../src/train/teacher-cache.ts';
import { ClipVisionModel } from '../../src/nn/vit.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { defaultPreprocess } from '../../src/io/image.ts';
import { disposeStudent } from '../../src/train/student.ts';
import { tarOf } from '../helpers/tar.ts';
import { fileSays, runCli, spawnCli, tmp, tinyDataset, waitFor } from '../cli/helpers.ts';
import { trainOptions } from '../helpers/train-options.ts';

const root = tmp('stream');
test.after(() => rmSync(root, { recursive: true, force: true }));

/** Writes the pairs of a tiny dataset into `count` shards (keys s000000, …); returns the shard paths. */
async function shardsOf(data: string, dir: string, per: number): Promise<string[]> {
  const pairs = loadDataset(data).pairs;
  const paths: string[] = [];
  for (let s = 0; s * per < pairs.length; s++) {
    const samples: SampleToWrite[] = pairs.slice(s * per, (s + 1) * per).map((p, i) => ({ key: `s${String(s * per + i).padStart(6, '0')}`, real: p.real, generated: p.generated, id: p.id }));
    const path = join(dir, `${String(s).padStart(5, '0')}.tar`);
    await writeShard(path, samples);
    paths.push(path);
  }
  return paths;
}

async function take(stream: ShardStream, epochs: number): Promise<{ ids: string[][]; positions: StreamPosition[] }> {
  const ids: string[][] = [[]];
  const positions: StreamPosition[] = [];
  while (ids.length <= epochs) {
    const s = await stream.next();
    if (!s) {
      ids.push([]);
      continue;
    }
    ids[ids.length - 1].push(s.id);
    positions.push(stream.position());
  }
  ids.pop();
  await stream.close();
  return { ids, positions };
}

test('ShardStream: every kept sample once per epoch, a new order each epoch; a stream started at any saved position continues exactly', async () => {
  const data = await tinyDataset(join(root, 'd1'), 23);
  const shards = await shardsOf(data, join(root, 's1'), 6);
  const keep = (s: { id: string }): boolean => splitHash(s.id, 3) >= 0.25;
  const all = loadDataset(data).pairs.map((p) => p.id).filter((id) => keep({ id })).sort();
  const opts = { seed: 3, bufferSize: 5, keep };
  const { ids, positions } = await take(new ShardStream(shards, opts), 2);
  assert.equal([...ids[0]].sort(), all, 'epoch 0: each training sample once');
  assert.equal([...ids[1]].sort(), all, 'epoch 1: each training sample once');
  assert.not.equal(ids[0], ids[1], 'epochs are shuffled differently');
  assert.not.equal(ids[0], [...ids[0]].sort(), 'the order is shuffled');
  const flat = [...ids[0], ...ids[1]];
  for (let k = 0; k < positions.length - 1; k++) {
    const resumed = new ShardStream(shards, { ...opts, start: positions[k] });
    const rest: string[] = [];
    while (rest.length < flat.length - k - 1) {
      const s = await resumed.next();
      if (s) rest.push(s.id);
    }
    await resumed.close();
    assert.equal(rest, flat.slice(k + 1), `resumed after sample ${k + 1}`);
  }
});

/** Trains and returns the losses of metrics.jsonl (the student and model freed). */
async function trainLosses(o: TrainOptions, stopAfter?: number): Promise<{ losses: number[]; logs: string[]; evalN: number | null }> {
  const device = await getDevice();
  const logs: string[] = [];
  let steps = 0;
  const r = await train(device, o, { log: (l) => logs.push(l), ...(stopAfter ? { shouldStop: () => ++steps >= stopAfter } : {}) });
  const evalN = r.eval ? r.eval.report.n_val : null;
  disposeStudent(r.student);
  r.model.model.dispose();
  const losses = readFileSync(join(r.runDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { loss: number }).loss);
  return { losses, logs, evalN };
}

test('train on shards: killed (SIGKILL) after step 3 and resumed, the loss sequence equals the uninterrupted run (accum 2, over epoch boundaries)', async () => {
  const data = await tinyDataset(join(root, 'd2'), 30);
  const shards = await shardsOf(data, join(root, 's2'), 8);
  const flags = ['--data', shardPattern(join(root, 's2'), shards.length), '--model', 'tiny', '--cache-dir', join(root, 'cache'), '--batch', '4', '--accum', '2', '--steps', '7',
    '--save-every', '1', '--shuffle-buffer', '6', '--val-fraction', '0.2', '--lr', '5e-3', '--warmup', '0', '--no-eval'];
  const losses = (run: string): number[] => readFileSync(join(run, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { loss: number }).loss);
  const whole = join(root, 'whole');
  const w = await runCli('train', [...flags, '--out', whole]);
  assert.is(w.code, 0, w.stderr);
  assert.is(losses(whole).length, 7);
  const out = join(root, 'killed');
  const { child, done } = spawnCli('train-test', [...flags, '--out', out], { GENALIGN_TEST_STEP_DELAY_MS: '400' });
  await waitFor(fileSays(join(out, 'checkpoints', 'latest'), 'step-000003'), 'checkpoint 3', 120_000, done);
  child.kill('SIGKILL');
  await done;
  const r = await runCli('train', ['--resume', out]);
  assert.is(r.code, 0, r.stderr);
  assert.equal(losses(out), losses(whole), 'the same losses, bit for bit');
});

test('train on shards: a held-out shard is the val split (eval reads it); --epochs counts steps from sizes.json; a bad sample is named and skipped', async () => {
  const data = await tinyDataset(join(root, 'd3'), 20);
  const dir = join(root, 's3');
  const shards = await shardsOf(data, dir, 8);
  // A fourth shard with a sample that lacks its generated image, and one good sample.
  const pair = loadDataset(data).pairs[0];
  const extra = join(dir, 'extra.tar');
  writeFileSync(extra, await tarOf([
    { name: 'x000001.real.png', data: readFileSync(pair.real) },
    { name: 'x000002.real.png', data: readFileSync(pair.real) },
    { name: 'x000002.gen.png', data: readFileSync(pair.generated[0]) },
  ]));
  writeFileSync(join(dir, 'sizes.json'), JSON.stringify({ '00000.tar': 8, '00001.tar': 8, '00002.tar': 4, 'extra.tar': 1 }));
  const valCount = [...(await (async () => {
    const ids: string[] = [];
    for await (const s of readShard(shards[2], () => undefined)) ids.push(s.id);
    return ids;
  })())].length;
  const r = await trainLosses(trainOptions({
    data: `${shards[0]},${shards[1]},${extra}`, valData: shards[2], out: join(root, 'held-out'), cacheDir: join(root, 'cache'),
    steps: 0, epochs: 2, batch: 4, eval: true, maxBadFraction: 0.5,
  }));
  // 8 + 8 + 1 samples listed, 2 epochs of 4-sample steps: floor(2 × 17 / 4) = 8 steps.
  assert.is(r.losses.length, 8);
  assert.ok(r.logs.some((l) => l.includes(`${extra}:x000001: no generated image`)), r.logs.join('\n'));
  assert.is(r.evalN, valCount, 'eval on the held-out shard\'s samples');
  assert.ok(r.logs.some((l) => l.includes(`eval on ${valCount} held-out pairs`)));
});

test('eval --data on shards: the first --max-pairs samples, or the val ids of --val-fraction, read from the members', async () => {
  const data = await tinyDataset(join(root, 'd5'), 12);
  const shards = await shardsOf(data, join(root, 's5'), 5);
  const spec = shards.join(',');
  const out = join(root, 'eval-out');
  const r = await runCli('eval', ['--data', spec, '--model', 'tiny', '--max-pairs', '7', '--plot', 'none', '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'eval: 7 samples from 3 shard(s)');
  assert.is((JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { n_val: number }).n_val, 7);
  const val = loadDataset(data).pairs.filter((p) => splitHash(p.id, 0) < 0.5).length;
  const v = await runCli('eval', ['--data', spec, '--model', 'tiny', '--val-fraction', '0.5', '--plot', 'none', '--out', join(root, 'eval-val')]);
  assert.is(v.code, 0, v.stderr);
  assert.match(v.stderr, `eval: ${val} samples from 3 shard(s)`);
});

test('shard teacher cache: an interrupted fill keeps what it embedded (an incomplete chunk) and the next embeds only the rest; a damaged chunk is ignored with a warning and refilled', async () => {
  const data = await tinyDataset(join(root, 'd6'), 13);
  const [shard] = await shardsOf(data, join(root, 's6'), 13);
  const device = await getDevice();
  const model = ClipVisionModel.random(NAMED_CONFIGS.tiny, 0, device);
  const pre = defaultPreprocess(32);
  const dir = join(root, 'cache6');
  const logs: string[] = [];
  const log = (l: string): void => void logs.push(l);
  const cache = new ShardTeacherCache(dir, 'k', 32, { warn: log });
  const id = fileKey(shard);
  // Batch 2: groups of 8 samples; stop after the first group.
  assert.is(await warmShardTeacherCache(device, model, pre, [shard], cache, 2, log, () => true), false);
  assert.not.ok(cache.isComplete(id));
  const keys: string[] = [];
  for await (const x of readShard(shard, () => undefined)) keys.push(x.key);
  assert.is(keys.filter((k) => cache.has(shardRowKey(id, k))).length, 8, 'the first group is kept');
  logs.length = 0;
  assert.is(await warmShardTeacherCache(device, model, pre, [shard], cache, 2, log), true);
  assert.ok(logs.some((l) => l.includes('teacher cache: 5 embedded')), logs.join('\n'));
  assert.ok(cache.isComplete(id) && keys.every((k) => cache.has(shardRowKey(id, k))));
  const row = cache.get(shardRowKey(id, keys[3]))!;
  assert.ok(row.every(Number.isFinite) && row.length === 32);
  // Damaged: the chunk is ignored (one warning naming it) and the shard embedded again.
  writeFileSync(cache.chunkFile(id), 'not safetensors');
  const again = new ShardTeacherCache(dir, 'k', 32, { warn: log });
  logs.length = 0;
  assert.is(await warmShardTeacherCache(device, model, pre, [shard], again, 2, log), true);
  assert.ok(logs.some((l) => l.includes(`ignoring unreadable teacher cache chunk ${again.chunkFile(id)}`)), logs.join('\n'));
  assert.ok(logs.some((l) => l.includes('teacher cache: 13 embedded')), logs.join('\n'));
  assert.equal([...again.get(shardRowKey(id, keys[3]))!], [...row], 'the same row again');
  model.dispose();
});

test('train on shards: --epochs without sizes.json, a missing shard and an overlap of --val-data with --data are refused before any work', async () => {
  const data = await tinyDataset(join(root, 'd4'), 8);
  const shards = await shardsOf(data, join(root, 's4'), 4);
  const device = await getDevice();
  const fail = async (over: Partial<TrainOptions>): Promise<string> => {
    try {
      await train(device, trainOptions({ data: shards.join(','), out: join(root, 'never'), cacheDir: join(root, 'cache'), batch: 2, ...over }), { log: () => undefined });
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('expected a failure');
  };
  assert.match(await fail({ steps: 0 }), 'needs each shard\'s sample count');
  assert.match(await fail({ data: join(root, 's4', '{00000..00002}.tar') }), /shard .*00002\.tar does not exist/);
  assert.match(await fail({ valData: shards[1] }), 'is also a training shard');
});

test.run();
