// `npm run cache-teacher` as a batch system runs it: which share a job takes (--shard, Slurm
// array, Kubernetes Indexed Job), shares that are disjoint and together complete for any count,
// and two jobs run at the same time filling a cache that train then uses without embedding a
// single real image, matching the embeddings train computes itself.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { resolveShare, shareOf } from '../../src/cli/shard.ts';
import { TeacherCache, cacheRowKeys, modelKey } from '../../src/train/teacher-cache.ts';
import { loadDataset } from '../../src/io/dataset.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { defaultPreprocess } from '../../src/io/image.ts';
import { tmp, tinyDataset, runCli } from './helpers.ts';

const root = tmp('cache-teacher');
test.after(() => rmSync(root, { recursive: true, force: true }));

test('shares: --shard I/N, a Slurm array (task id less its minimum), a Kubernetes Indexed Job with --shards; bad values refused by name', () => {
  assert.equal(resolveShare('cache-teacher', { shard: '2/5' }, {}), { index: 2, count: 5, source: '--shard 2/5' });
  assert.equal(resolveShare('cache-teacher', {}, {}), { index: 0, count: 1, source: 'the whole cache' });
  const slurm = resolveShare('cache-teacher', {}, { SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '4' });
  assert.equal([slurm.index, slurm.count], [3, 4], '--array=1-4: task 4 is the last share');
  const k8s = resolveShare('cache-teacher', { shards: 8 }, { JOB_COMPLETION_INDEX: '7' });
  assert.equal([k8s.index, k8s.count], [7, 8]);
  const fails = (f: () => unknown, msg: string): void => assert.throws(f, (e: Error) => e.message.includes(msg));
  fails(() => resolveShare('cache-teacher', { shard: '4/4' }, {}), 'share 4 does not exist among 4 (0 to 3)');
  fails(() => resolveShare('cache-teacher', { shard: '1-4' }, {}), "--shard must be I/N (e.g. 0/4), got '1-4'");
  fails(() => resolveShare('cache-teacher', {}, { JOB_COMPLETION_INDEX: '0' }), 'pass --shards N');
  fails(() => resolveShare('cache-teacher', {}, { SLURM_ARRAY_TASK_ID: '9', SLURM_ARRAY_TASK_COUNT: '4' }), 'share 9 does not exist among 4');
  fails(() => resolveShare('cache-teacher', { shards: 3 }, {}), '--shards 3 needs JOB_COMPLETION_INDEX');
});

test('shareOf: for every count the shares are disjoint and together hold every block once', () => {
  const blocks = Array.from({ length: 23 }, (_, i) => i);
  for (let count = 1; count <= 9; count++) {
    const all = Array.from({ length: count }, (_, i) => shareOf(blocks, i, count)).flat().sort((a, b) => a - b);
    assert.equal(all, blocks, `count ${count}`);
  }
  assert.throws(() => shareOf(blocks, 3, 3));
});

test('two jobs at once (--shard 0/2 and 1/2) fill the cache; train then embeds no real image and gets the rows it would have computed', async () => {
  const data = await tinyDataset(join(root, 'data'), 24);
  const cacheDir = join(root, 'cache');
  const job = (i: number): Promise<{ code: number | null; stderr: string }> =>
    runCli('cache-teacher', ['--data', data, '--model', 'tiny', '--shard', `${i}/2`, '--block-rows', '5', '--cache-dir', cacheDir, '--batch', '4']);
  const [a, b] = await Promise.all([job(0), job(1)]);
  assert.is(a.code, 0, a.stderr);
  assert.is(b.code, 0, b.stderr);
  assert.match(a.stderr, 'cache-teacher: share 0 of 2 (--shard 0/2): 3 of 5 block(s), 14 real images');
  assert.match(b.stderr, 'share 1 of 2 (--shard 1/2): 2 of 5 block(s), 10 real images');
  const again = await job(0);
  assert.match(again.stderr, 'teacher cache: all 14 real images cached');
  const key = modelKey('tiny', NAMED_CONFIGS.tiny, defaultPreprocess(32), 0);
  assert.equal(readdirSync(join(cacheDir, `teacher-${key}`)).filter((f) => f.endsWith('.safetensors')).length, 5);
  const cache = new TeacherCache(cacheDir, key, 32, cacheRowKeys(loadDataset(data).pairs.map((p) => p.real)));
  assert.is(cache.size, 24);

  // train with the same cache: nothing to embed; with --no-teacher-cache it computes the same first loss.
  const cached = await runCli('train', ['--data', data, '--model', 'tiny', '--steps', '1', '--batch', '8', '--val-fraction', '0.25', '--no-eval', '--cache-dir', cacheDir, '--out', join(root, 'run-cached')]);
  assert.is(cached.code, 0, cached.stderr);
  assert.match(cached.stderr, 'teacher cache: all 24 real images cached');
  const fresh = await runCli('train', ['--data', data, '--model', 'tiny', '--steps', '1', '--batch', '8', '--val-fraction', '0.25', '--no-eval', '--no-teacher-cache', '--out', join(root, 'run-fresh')]);
  assert.is(fresh.code, 0, fresh.stderr);
  const loss = (s: string): number => Number(/step 1\/1 .*loss (\S+)/.exec(s)![1]);
  assert.ok(Math.abs(loss(cached.stderr) - loss(fresh.stderr)) < 1e-4, `cached ${loss(cached.stderr)} vs computed ${loss(fresh.stderr)}`);
});

test('WebDataset shards: jobs --shard 0/2 and 1/2 at once each embed their shards (k mod 2); train on the shards embeds nothing and gets the loss it computes without the cache', async () => {
  const data = await tinyDataset(join(root, 'wds-data'), 20);
  const shards = join(root, 'wds');
  assert.is((await runCli('make-shards', ['--data', data, '--out', shards, '--per-shard', '4'])).code, 0);
  const spec = `${shards}/{00000..00004}.tar`;
  const cacheDir = join(root, 'wds-cache');
  const job = (i: number): Promise<{ code: number | null; stderr: string }> => runCli('cache-teacher', ['--data', spec, '--model', 'tiny', '--shard', `${i}/2`, '--cache-dir', cacheDir, '--batch', '4']);
  const [a, b] = await Promise.all([job(0), job(1)]);
  assert.is(a.code, 0, a.stderr);
  assert.is(b.code, 0, b.stderr);
  assert.match(a.stderr, 'share 0 of 2 (--shard 0/2): 3 of 5 shard(s)');
  assert.match(b.stderr, 'share 1 of 2 (--shard 1/2): 2 of 5 shard(s)');
  assert.match((await job(1)).stderr, 'the real images of all 2 shard(s) are cached');
  const key = modelKey('tiny', NAMED_CONFIGS.tiny, defaultPreprocess(32), 0);
  assert.is(readdirSync(join(cacheDir, `teacher-${key}`)).filter((f) => f.startsWith('shard-')).length, 5);
  const common = ['--data', spec, '--model', 'tiny', '--steps', '1', '--batch', '8', '--val-fraction', '0.2', '--no-eval'];
  const cached = await runCli('train', [...common, '--cache-dir', cacheDir, '--out', join(root, 'wds-run-cached')]);
  assert.is(cached.code, 0, cached.stderr);
  assert.match(cached.stderr, 'the real images of all 5 shard(s) are cached');
  const fresh = await runCli('train', [...common, '--no-teacher-cache', '--out', join(root, 'wds-run-fresh')]);
  assert.is(fresh.code, 0, fresh.stderr);
  const loss = (s: string): number => Number(/step 1\/1 .*loss (\S+)/.exec(s)![1]);
  assert.ok(Math.abs(loss(cached.stderr) - loss(fresh.stderr)) < 1e-4, `cached ${loss(cached.stderr)} vs computed ${loss(fresh.stderr)}`);
});

test.run();
