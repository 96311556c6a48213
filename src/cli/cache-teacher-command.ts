// `npm run cache-teacher -- --data DIR --model DIR|NAME [--shard I/N | --shards N] [--cache-dir DIR]`
// Fills the teacher cache (src/train/teacher-cache.ts) that `train` reads, as one job of a batch
// system: the cache's blocks are split into N shares (block b belongs to share b mod N), and this
// job embeds the real images of the blocks of its share that the cache does not hold yet, writing
// each block's chunk as soon as it is done. Jobs need no coordination: run them in any order, at
// the same time on shared storage, or twice; once every share has run, the cache is complete and
// `train` with the same --data, --model, --seed and --precision embeds nothing.
// Which share: --shard I/N; else a Slurm job array's SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN
// of SLURM_ARRAY_TASK_COUNT; else a Kubernetes Indexed Job's JOB_COMPLETION_INDEX of --shards N;
// else the whole cache (one job).
// With WebDataset shards as --data the unit is the shard: shard k (in the order --data lists
// them) belongs to share k mod N, and each shard's chunk is written when its real images are done.
import { resolve } from 'node:path';
import { getDevice } from '../gpu/device.ts';
import { writableProblem } from '../platform/atomic-file.ts';
import { loadModel, modelPreprocessing } from '../io/hf-checkpoint.ts';
import { loadDataset } from '../io/dataset.ts';
import { PreprocessPool } from '../io/preprocess-pool.ts';
import { checkPrecision, oomHelp, warmShardTeacherCache, warmTeacherCache } from '../train/trainer.ts';
import { ShardTeacherCache, TeacherCache, cacheRowKeys, modelKey } from '../train/teacher-cache.ts';
import { isShardSpec, listShards } from '../io/webdataset.ts';
import { TRAIN_OPTIONS } from '../train/options.ts';
import { parseFlags, helpText, positive, PRECISION_FLAG, UsageError, type FlagSpec } from './args.ts';
import { warn } from './terminal.ts';
import { SHARD_FLAGS, resolveShare, shareOf } from './shard.ts';

export const CACHE_TEACHER_FLAGS: FlagSpec[] = [
  { name: 'data', type: 'string', help: "dataset directory (pairs.jsonl, or real/ + generated/) or WebDataset shards ('shards/{00000..00099}.tar'), as given to train" },
  { name: 'model', type: 'string', help: 'the teacher: HF CLIP model directory or preset, as given to train' },
  ...SHARD_FLAGS,
  { name: 'cache-dir', type: 'string', defaultText: TRAIN_OPTIONS.cacheDir.defaultText, help: 'teacher cache directory (train --cache-dir)' },
  { name: 'block-rows', type: 'int', defaultText: '1024', help: 'rows per chunk file of a new cache (an existing cache keeps its own)', check: positive },
  { name: 'batch', type: 'int', default: 32, help: 'images per GPU batch', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'seed of a preset model\'s random weights (train --seed)' },
  PRECISION_FLAG,
];


export async function runCacheTeacher(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('cache-teacher', 'Fill the teacher cache of a dataset for train, as one share of a batch job (Slurm array, Kubernetes Indexed Job) or whole.', CACHE_TEACHER_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, CACHE_TEACHER_FLAGS, 'cache-teacher');
  for (const req of ['data', 'model'] as const) if (!f[req]) throw new UsageError(`cache-teacher: --${req} is required (see --help)`);
  const share = resolveShare('cache-teacher', f, process.env);
  const cacheDir = resolve(f['cache-dir'] === undefined ? (TRAIN_OPTIONS.cacheDir.default as () => string)() : String(f['cache-dir']));
  const problem = writableProblem(cacheDir);
  if (problem) throw new UsageError(`cache-teacher: --cache-dir ${cacheDir}: ${problem}`);
  const spec = String(f.data);
  let shards: string[] | null = null;
  try {
    if (isShardSpec(spec)) shards = listShards(spec, '--data');
  } catch (e) {
    throw new UsageError(`cache-teacher: ${(e as Error).message}`);
  }
  const dataset = shards ? null : loadDataset(spec, { onWarn: warn });
  const seed = Number(f.seed);
  const precision = String(f.precision) as 'f32' | 'f16';
  const device = await getDevice();
  checkPrecision(device, precision);
  const loaded = loadModel(String(f.model), device, seed, precision);
  const pool = new PreprocessPool();
  try {
    const pre = modelPreprocessing(loaded);
    const model = loaded.model;
    const t0 = performance.now();
    if (shards) {
      const cache = new ShardTeacherCache(cacheDir, modelKey(loaded.source, model.cfg, pre, seed, model.dtype), model.cfg.projectionDim, { warn });
      const mine = shareOf(shards, share.index, share.count);
      warn(`cache-teacher: share ${share.index} of ${share.count} (${share.source}): ${mine.length} of ${shards.length} shard(s)`);
      await warmShardTeacherCache(device, model, pre, mine, cache, Number(f.batch), warn, undefined, pool).catch((e: unknown) => oomHelp(e, { batch: Number(f.batch), accum: 1 }));
      warn(`cache-teacher: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return 0;
    }
    const cache = new TeacherCache(cacheDir, modelKey(loaded.source, model.cfg, pre, seed, model.dtype), model.cfg.projectionDim, cacheRowKeys(dataset!.pairs.map((p) => p.real)), {
      warn,
      ...(f['block-rows'] === undefined ? {} : { blockRows: Number(f['block-rows']) }),
    });
    const mine = shareOf(cache.blocks, share.index, share.count);
    warn(`cache-teacher: share ${share.index} of ${share.count} (${share.source}): ${mine.length} of ${cache.blocks.length} block(s), ${mine.reduce((a, b) => a + b.keys.length, 0)} real images`);
    await warmTeacherCache(device, model, pre, dataset!.pairs, cache, Number(f.batch), warn, undefined, pool, mine).catch((e: unknown) => oomHelp(e, { batch: Number(f.batch), accum: 1 }));
    warn(`cache-teacher: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    await pool.close();
    loaded.model.dispose();
  }
}
