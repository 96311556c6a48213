// The GMAIL training loop, as named stages that train() runs top to bottom:
//
//   openRun        create and lock the run directory (a new run: only a new or empty one), or
//                  lock it and read where a crash left it (--resume); nothing is changed yet
//   buildStudent   model, preprocessing, student (LoRA, or with --rank 0 a full copy of the
//                  vision tower; student.ts) and AdamW, restored from the checkpoint
//   prepareRun     the teacher cache, then (everything checked) the crash repair, config.json
//   stepLoop       dataset → loader (decode + preprocess off the main thread, prefetched)
//                  → teacher f_r(real) (frozen: from the embedding cache, or a noGrad forward)
//                  → student f_g(generated) (same weights + LoRA, or its own) → InfoNCE gen→real (Eq. 1,
//                    + --cosine-weight λ · mean(1 − cos) of the pairs when λ > 0)
//                  → backward (student only) → AdamW (+ global-norm clipping, warmup + cosine)
//                  → metrics.jsonl → checkpoint and publish (checkpoint.ts) every --save-every
//   finalEval      alignment measures and Figure 3 on the held-out pairs
//
// Every file operation on the run directory goes through one FileOps (hooks.files), so the
// crash-consistency test can fail or kill the process at each of them.
//
// Gradient accumulation: the effective batch is batch × accum pairs. The teacher embeddings of
// the whole effective batch are known before the student runs (cache or noGrad forward), so
// every micro-batch's loss uses all effective-batch reals as negatives. Each generated row's
// loss depends only on its own student embedding and the fixed teacher matrix, so summing
// micro-batch gradients (each scaled by 1/accum) gives exactly the full-batch gradient.
import { existsSync, readFileSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Device } from '../gpu/device.ts';
import { OutOfMemoryError } from '../gpu/encoder.ts';
import { BufferTooLargeError } from '../gpu/pool.ts';
import { FileOpError, errnoReason, makeDirs, nodeFiles, removeTree, writableProblem, writeFileAtomic, type FileOps } from '../platform/atomic-file.ts';
import { fromArray, scope, type Parameter, type Tensor } from '../tensor/tensor.ts';
import { backward, noGrad } from '../tensor/autograd.ts';
import { infoNceGenToReal } from '../ops/index.ts';
import type { LoraAdapter } from '../nn/lora.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import { hasTextTower, isModelDir, loadModel, modelPreprocessing, type LoadedModel } from '../io/hf-checkpoint.ts';
import type { PreprocessConfig } from '../io/image.ts';
import { inValSplit, loadDataset, splitByValFraction, type Pair } from '../io/dataset.ts';
import { PairLoader, epochBatches, type LoaderMember, type PairBatch } from '../io/loader.ts';
import { ShardBatchSource, readShardPairs, sampleSources, type StreamPosition } from '../io/shard-stream.ts';
import { isShardSpec, listShards, readShard, shardSizes, type ShardSample } from '../io/webdataset.ts';
import { sourceName, type ImageSource } from '../io/image.ts';
import { PreprocessPool } from '../io/preprocess-pool.ts';
import { readRegularTextFile } from '../platform/regular-file.ts';
import { AdamW } from './optimizer.ts';
import { GradScaler, GRAD_SCALER_DEFAULTS, type GradScalerOptions } from './grad-scaler.ts';
import { learningRate, type ScheduleOptions } from './schedule.ts';
import {
  CHECKPOINTS_DIR, METRICS_FILE, PUBLISH_DIRS, formatOf, saveCheckpoint, loadCheckpoint, inspectRun, repairRun, isRunTemp, isNoSpace, setAsideDivergedCheckpoint,
  checkpointName, type Checkpoint, type RunInspection, type TrainerState,
} from './checkpoint.ts';
import { configHash, configHashBeforeSchema, savedOptions, type TrainOptions } from './options.ts';
import { ShardTeacherCache, TeacherCache, cacheRowKeys, modelKey, fileKey, shardRowKey, type CacheBlock, type RowCache } from './teacher-cache.ts';
import { embedPaths } from './embedding.ts';
import { evaluatePairs, type EvalOutput } from './evaluate.ts';
import { textTowerFor } from './text-tower.ts';
import { broadcastWeights, deviceCount, devicesProblem, disposeReplicas, openReplicas, sumGradients, type Replica } from './data-parallel.ts';
import { disposeStudent, makeStudent, restoreStudent, studentFiles, studentForward, studentFormat, studentProblem, studentVariant, type StudentState } from './student.ts';

export type { TrainOptions } from './options.ts';
export { makeStudent, type StudentState } from './student.ts';

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  /** --cosine-weight λ > 0: the loss's two terms, loss = loss_infonce + λ · loss_cosine. */
  loss_infonce?: number;
  /** --cosine-weight λ > 0: mean over the pairs of 1 − cos(student(generated_i), teacher(real_i)). */
  loss_cosine?: number;
  accuracy: number;
  lr: number;
  /** Global gradient norm before clipping (unscaled); not finite on a step skipped for overflow. */
  grad_norm: number;
  images_per_s: number;
  elapsed_s: number;
  /** --precision f16: the loss scale this step's backward used. */
  loss_scale?: number;
  /** --precision f16: the scaled gradients overflowed, so no update was applied and the scale was lowered. */
  skipped?: boolean;
}

/** What the caller plugs into a run: progress callbacks, Ctrl-C, and the file operations. */
export interface TrainHooks {
  /** trainPairs/valPairs: null for shards (streamed, not counted). */
  onStart?: (info: { totalSteps: number; startStep: number; trainPairs: number | null; valPairs: number | null; runDir: string; adapter: string }) => void;
  /** After each step is logged and (when due) checkpointed; the loop waits for a returned promise. */
  onStep?: (r: StepRecord, totalSteps: number) => void | Promise<void>;
  log?: (line: string) => void;
  /** Polled after every step; true stops the run after a checkpoint (Ctrl-C). */
  shouldStop?: () => boolean;
  /** Every mutation of the run directory (default: the real file system). */
  files?: FileOps;
  /** The worker pool that preprocesses images for the whole run (not closed by train); default: one of the run's own. */
  pool?: PreprocessPool;
  /**
   * Sees the loss of each step (1-based) before it is checked, and may replace it: tests make
   * a step's loss NaN to exercise the divergence handling.
   */
  transformLoss?: (step: number, loss: number) => number;
  /** --precision f16: the loss scaler's settings (default PyTorch's); tests start it high to make steps overflow. */
  gradScaler?: GradScalerOptions;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  stoppedEarly: boolean;
  lastLoss: number | null;
  valPairs: Pair[];
  model: LoadedModel;
  /** The trained student (free it with disposeStudent, and the model with model.model.dispose()). */
  student: StudentState;
  /** The student's adapter (LoRA runs) or null (--rank 0). */
  lora: LoraAdapter | null;
  projection: Parameter | null;
  pre: PreprocessConfig;
  teacherCache: TeacherCache | ShardTeacherCache | null;
  /** The final eval (when --eval and at least 2 val pairs), else null. */
  eval: EvalOutput | null;
}

export class NonFiniteLossError extends Error {}

/** Fails before training if the disk of the run directory is nearly full. */
function checkFreeSpace(runDir: string, neededBytes: number): void {
  let free: number;
  try {
    const fs = statfsSync(runDir);
    free = fs.bavail * fs.bsize;
  } catch {
    return; // statfs unsupported: a full disk shows up as a named ENOSPC error instead
  }
  if (free < neededBytes) {
    throw new Error(`Not enough disk space in ${runDir}: ${(free / 2 ** 20).toFixed(1)} MiB free, checkpoints need about ${(neededBytes / 2 ** 20).toFixed(1)} MiB. Free space or choose another --out.`);
  }
}

/**
 * What a non-finite loss or gradient at step `step + 1` means for the checkpoints: the one
 * written after step `step` holds the weights that produced it, so it is set aside, and the
 * message says which checkpoint --resume would now continue from. At step 0 no update has been
 * applied, so the learning rate cannot be the cause.
 */
function divergedCheckpointNote(runDir: string, step: number, lr: number, files: FileOps, model: string): string {
  if (step === 0) {
    return `No update had been applied yet, so the learning rate is not the cause: the base model (--model ${model}) or the images give non-finite values. Check the model with \`npm run embed -- --model ${model} --images DIR --out x.safetensors\`.`;
  }
  const { setAside, latest } = setAsideDivergedCheckpoint(runDir, step, files);
  const dir = join(runDir, CHECKPOINTS_DIR);
  const advice = latest
    ? `Resuming repeats the same steps with the same settings, so it is likely to diverge again: start a new run (another --out) with a lower --lr (now ${lr}), or check the data.`
    : `Start a new run (another --out, or delete ${runDir}) with a lower --lr (now ${lr}), or check the data.`;
  if (setAside) {
    return `The weights saved after step ${step} gave this, so that checkpoint was moved to ${join(dir, setAside)}` +
      (latest ? `; checkpoints/latest and ${formatOf(join(dir, latest)).publishDir}/ now point to ${latest}, the newest checkpoint whose weights gave a finite loss. ` : ', and no earlier checkpoint is left. ') + advice;
  }
  return (latest ? `The newest checkpoint, ${join(dir, latest)}, is kept (its weights gave a finite loss on the step after it). ` : 'No checkpoint had been written yet. ') + advice;
}

/** Rethrows GPU memory errors with the smaller --batch / larger --accum that keeps the effective batch. */
export function oomHelp(e: unknown, o: Pick<TrainOptions, 'batch' | 'accum'>): never {
  if (e instanceof OutOfMemoryError || e instanceof BufferTooLargeError) {
    if (o.batch === 1) throw new Error(`${(e as Error).message}\nOut of GPU memory at --batch 1: use a smaller model (or a GPU with more memory).`);
    // The largest divisor of the batch up to half of it, so batch × accum stays exactly the same.
    let smaller = Math.floor(o.batch / 2);
    while (o.batch % smaller !== 0) smaller--;
    throw new Error(`${(e as Error).message}\nOut of GPU memory at --batch ${o.batch}: try --batch ${smaller} --accum ${(o.accum * o.batch) / smaller} (same effective batch).`);
  }
  throw e;
}

/** AdamW over the student's parameters with the run's betas, eps, weight decay (not on `noWeightDecay`) and clipping. */
export function makeOptimizer(params: Parameter[], o: Pick<TrainOptions, 'lr' | 'beta1' | 'beta2' | 'eps' | 'weightDecay' | 'clip'>, noWeightDecay: readonly Parameter[] = []): AdamW {
  return new AdamW(params, { lr: o.lr, betas: [o.beta1, o.beta2], eps: o.eps, weightDecay: o.weightDecay, maxGradNorm: o.clip > 0 ? o.clip : undefined, noWeightDecay });
}

/**
 * The student side of one step: per micro-batch, the student forward on its generated images,
 * GMAIL's loss against all teacher embeddings of the step (`teacher` [rows, D], micro-batches in
 * order; each micro-batch's own reals are its positives, every other real a negative), and
 * backward weighted by the micro-batch's share, so the parameters' .grad sum to the gradient of
 * the whole effective batch's loss. Returns that loss and the top-1 accuracy (row-weighted), and
 * with a cosine term (cosineWeight > 0) the loss's two terms, weighted alike.
 */
export async function accumulateGradients(
  device: Device,
  model: ClipVisionModel,
  student: StudentState,
  lossOpts: Pick<TrainOptions, 'tau' | 'cosineWeight'>,
  micro: readonly { generated: Float32Array; n: number; row?: number }[],
  teacher: Float32Array,
  lossScale = 1,
): Promise<{ loss: number; accuracy: number; terms?: { infonce: number; cosine: number } }> {
  const D = model.cfg.projectionDim;
  const S = model.cfg.imageSize;
  const rows = teacher.length / D;
  const lossTensors: Tensor[] = [];
  const accTensors: Tensor[] = [];
  const termTensors: Tensor[] = [];
  let next = 0;
  for (const { generated, n, row } of micro) {
    // Reals of this micro-batch first (the loss takes column i as row i's positive), then
    // every other real of the effective batch as extra negatives. A micro-batch's rows start at
    // `row` in the teacher matrix (data parallel: a device runs some of the step's micro-batches),
    // else right after the previous one's.
    const rowStart = row ?? next;
    next = rowStart + n;
    const r = new Float32Array(rows * D);
    r.set(teacher.subarray(rowStart * D, (rowStart + n) * D), 0);
    r.set(teacher.subarray(0, rowStart * D), n * D);
    r.set(teacher.subarray((rowStart + n) * D), rowStart * D + n * D);
    const [loss, acc, terms] = scope(() => {
      const g = studentForward(model, student, fromArray(generated, [n, 3, S, S], device));
      const res = infoNceGenToReal(g, fromArray(r, [rows, D], device), { tau: lossOpts.tau, cosineWeight: lossOpts.cosineWeight });
      // Each micro-batch's loss is a mean over its rows; weight by its share of the batch (and
      // multiply by the loss scale of f16 training, which the optimizer divides out again).
      backward(res.loss, fromArray([(n / rows) * lossScale], [], device));
      return [res.loss.keep(), res.accuracy.keep(), res.terms?.keep()];
    });
    lossTensors.push(loss);
    accTensors.push(acc);
    if (terms) termTensors.push(terms);
  }
  let loss = 0;
  let accuracy = 0;
  const sums = termTensors.length ? { infonce: 0, cosine: 0 } : undefined;
  for (let k = 0; k < micro.length; k++) {
    const w = micro[k].n / rows;
    loss += w * (await lossTensors[k].item());
    accuracy += w * (await accTensors[k].item());
    lossTensors[k].dispose();
    accTensors[k].dispose();
    if (sums) {
      const [infonce, cosine] = await termTensors[k].read();
      sums.infonce += w * infonce;
      sums.cosine += w * cosine;
      termTensors[k].dispose();
    }
  }
  return sums ? { loss, accuracy, terms: sums } : { loss, accuracy };
}

/**
 * Teacher embeddings [n, D] for the real images of a batch, from the cache or computed now
 * (noGrad). A non-finite row is an error naming where it came from: the cache file (damaged) or
 * the base model (its weights overflow on that image), never the learning rate.
 */
async function teacherEmbeddings(device: Device, model: ClipVisionModel, batch: PairBatch, cache: RowCache | null, modelName: string): Promise<Float32Array> {
  const D = model.cfg.projectionDim;
  const n = batch.ids.length;
  const out = new Float32Array(n * D);
  const S = model.cfg.imageSize;
  const per = 3 * S * S;
  const toCompute: number[] = [];
  for (let i = 0; i < n; i++) {
    const row = cache?.get(batch.realKeys[i] ?? fileKey(batch.realPaths[i]));
    if (row && !row.every(Number.isFinite)) {
      throw new Error(`The teacher cache ${cache!.path} holds a non-finite embedding for ${batch.realPaths[i]}: the cache file is damaged. Delete it (it is rebuilt), or pass --no-teacher-cache.`);
    }
    if (row) out.set(row, i * D);
    else toCompute.push(i);
  }
  if (toCompute.length) {
    const pix = new Float32Array(toCompute.length * per);
    toCompute.forEach((i, k) => {
      const r = batch.realRows.indexOf(i);
      if (r < 0) throw new Error(`internal: real image ${batch.realPaths[i]} was not decoded but is not cached`);
      pix.set(batch.real.subarray(r * per, (r + 1) * per), k * per);
    });
    const t = scope(() => noGrad(() => model.forward(fromArray(pix, [toCompute.length, 3, S, S], device))).keep());
    const emb = await t.read();
    t.dispose();
    toCompute.forEach((i, k) => {
      const row = emb.slice(k * D, (k + 1) * D);
      if (!row.every(Number.isFinite)) {
        throw new Error(`The teacher (the base model, --model ${modelName}) gives a non-finite embedding for ${batch.realPaths[i]}: its weights hold NaN/Inf or overflow float32 on this image. Check the checkpoint.`);
      }
      out.set(row, i * D);
      cache?.set(batch.realKeys[i] ?? fileKey(batch.realPaths[i]), row);
    });
  }
  return out;
}

/**
 * Fills the teacher cache for the given real images (one pass before training), block by block
 * (each block's chunk is written as soon as it is embedded, so an interrupted fill resumes at the
 * next block). `blocks` limits it to some of the cache's blocks (cache-teacher --shard).
 * Returns false when shouldStop interrupted it (the blocks embedded so far are saved).
 */
export async function warmTeacherCache(
  device: Device, model: ClipVisionModel, pre: PreprocessConfig, pairs: Pair[], cache: TeacherCache, batch: number, log: (l: string) => void,
  shouldStop?: () => boolean, pool?: PreprocessPool, blocks: readonly CacheBlock[] = cache.blocks,
): Promise<boolean> {
  const pathOf = new Map<string, string>();
  for (const p of pairs) pathOf.set(fileKey(p.real), p.real);
  const todo = blocks.map((b) => ({ block: b, keys: cache.missingKeys(b).filter((k) => pathOf.has(k)) })).filter((t) => t.keys.length > 0);
  const missing = todo.reduce((a, t) => a + t.keys.length, 0);
  const rows = blocks.reduce((a, b) => a + b.keys.length, 0);
  if (!missing) {
    log(`teacher cache: all ${rows} real images cached (${cache.path})`);
    return true;
  }
  log(`teacher cache: embedding ${missing} real images in ${todo.length} block(s) (${rows - missing} already cached) → ${cache.path}`);
  const t0 = Date.now();
  const D = model.cfg.projectionDim;
  let embedded = 0;
  for (const { keys } of todo) {
    const paths = keys.map((k) => pathOf.get(k)!);
    const res = await embedPaths(device, model, undefined, paths, pre, batch, {
      onSkip: (p, r) => log(`warning: teacher cache: skipping ${p}: ${r}`),
      shouldStop,
      ...(pool ? { pool } : {}),
    });
    let row = 0;
    keys.forEach((k, i) => {
      if (!res.ok[i]) return;
      cache.set(k, res.embeds.slice(row * D, (row + 1) * D));
      row++;
    });
    cache.save();
    embedded += row;
    if (res.ok.length < keys.length || shouldStop?.()) {
      log(`teacher cache: stopped after ${embedded} of ${missing} (${cache.path})`);
      return false;
    }
  }
  log(`teacher cache: ${embedded} embedded in ${((Date.now() - t0) / 1000).toFixed(1)} s → ${cache.path}`);
  return true;
}

/**
 * Fills the teacher cache of WebDataset shards (one chunk per shard): the real images of every
 * shard whose chunk is not complete, read out of the tar (nothing extracted), embedded in groups,
 * and the shard's chunk written when it is done. An interrupted fill writes what it embedded
 * (an incomplete chunk), so running again embeds only the rest. Returns false when shouldStop
 * interrupted it.
 */
export async function warmShardTeacherCache(
  device: Device, model: ClipVisionModel, pre: PreprocessConfig, shards: readonly string[], cache: ShardTeacherCache, batch: number, log: (l: string) => void,
  shouldStop?: () => boolean, pool?: PreprocessPool,
): Promise<boolean> {
  const todo = shards.filter((sh) => !cache.isComplete(fileKey(sh)));
  if (!todo.length) {
    log(`teacher cache: the real images of all ${shards.length} shard(s) are cached (${cache.path})`);
    return true;
  }
  log(`teacher cache: embedding the real images of ${todo.length} of ${shards.length} shard(s) → ${cache.path}`);
  const t0 = Date.now();
  const D = model.cfg.projectionDim;
  let embedded = 0;
  for (const shard of todo) {
    const identity = fileKey(shard);
    const rows = new Map<string, Float32Array>();
    let group: ShardSample[] = [];
    const flush = async (): Promise<void> => {
      const sources = new Map<string, ImageSource>();
      for (const x of group) {
        const real = sampleSources(x).real;
        sources.set(sourceName(real), real);
      }
      const res = await embedPaths(device, model, undefined, [...sources.keys()], pre, batch, {
        onSkip: (p, r) => log(`warning: teacher cache: skipping ${p}: ${r}`),
        source: (n) => sources.get(n)!,
        ...(pool ? { pool } : {}),
      });
      let row = 0;
      group.forEach((x, i) => {
        if (!res.ok[i]) return;
        rows.set(x.key, res.embeds.slice(row * D, (row + 1) * D));
        row++;
      });
      embedded += row;
      group = [];
    };
    let stopped = false;
    for await (const x of readShard(shard, (p) => log(`warning: teacher cache: ${p.shard}: sample ${p.key} left out: ${p.reason}`))) {
      if (cache.has(shardRowKey(identity, x.key))) continue;
      group.push(x);
      if (group.length >= batch * 4) {
        await flush();
        if (shouldStop?.()) {
          stopped = true;
          break;
        }
      }
    }
    if (!stopped && group.length) await flush();
    cache.writeChunk(identity, rows, !stopped);
    if (stopped) {
      log(`teacher cache: stopped after ${embedded} images (${cache.path})`);
      return false;
    }
  }
  log(`teacher cache: ${embedded} embedded in ${((Date.now() - t0) / 1000).toFixed(1)} s → ${cache.path}`);
  return true;
}

/** The batch settings against the number of training pairs (checked before any GPU work). */
export function checkBatchFits(o: Pick<TrainOptions, 'batch' | 'accum'>, trainPairs: number): void {
  if (trainPairs < 2) throw new Error(`Only ${trainPairs} training pair(s): contrastive training needs at least 2 (lower --val-fraction or add data).`);
  const effective = o.batch * o.accum;
  if (effective < 2) {
    throw new Error(`Effective batch ${effective} (--batch ${o.batch} × --accum ${o.accum}): the InfoNCE loss needs at least 2 pairs per step, because the other real images of a step are each generated image's negatives. Raise --batch or --accum.`);
  }
  if (o.batch > trainPairs) throw new Error(`--batch ${o.batch} is larger than the ${trainPairs} training pairs. Use --batch ${trainPairs} or less (or add data, or lower --val-fraction).`);
  if (effective > trainPairs) {
    throw new Error(
      `Effective batch ${effective} (--batch ${o.batch} × --accum ${o.accum}) is larger than the ${trainPairs} training pairs: a step would hold some pairs twice, ` +
        `and a repeated pair's real image would be a negative of its own generated image. Use --accum ${Math.floor(trainPairs / o.batch)} or less (or add data).`,
    );
  }
}

// --- the run's data ----------------------------------------------------------------------------------

/** The run's data: pairs in memory (a folder or pairs.jsonl dataset), or WebDataset shards streamed. */
export type RunData =
  | { kind: 'pairs'; train: Pair[]; val: Pair[] }
  | { kind: 'shards'; shards: string[]; valShards: string[] | null };

/** Whether a shard sample belongs to the training split: with --val-data every sample of --data does; else those whose id hashes at or above --val-fraction (splitByValFraction's rule). */
function inTrainSplit(o: Pick<TrainOptions, 'valData' | 'valFraction' | 'seed'>): (s: ShardSample) => boolean {
  if (o.valData !== null || o.valFraction === 0) return () => true;
  return (s) => !inValSplit(s.id, o.valFraction, o.seed);
}

/**
 * The data and the run's length, checked before the run directory is touched: a folder dataset
 * is read and split; shards are listed and checked to exist (they are read while training).
 */
function openData(o: TrainOptions, log: (l: string) => void): { data: RunData; totalSteps: number } {
  if (!isShardSpec(o.data)) {
    if (o.valData !== null) throw new Error(`--val-data names held-out shards, which go with shard --data; ${o.data} is a folder dataset, whose val split is --val-fraction`);
    const dataset = loadDataset(o.data, { onWarn: log });
    const { train: trainPairs, val: valPairs } = splitByValFraction(dataset.pairs, o.valFraction, o.seed);
    log(`data: ${dataset.pairs.length} pairs in ${o.data} (${trainPairs.length} train, ${valPairs.length} val)`);
    checkBatchFits(o, trainPairs.length);
    const totalSteps = o.steps > 0 ? o.steps : (o.epochs * epochBatches(trainPairs.length, o.batch, trainPairs.length >= 2 * o.batch, o.accum)) / o.accum;
    return { data: { kind: 'pairs', train: trainPairs, val: valPairs }, totalSteps };
  }
  const shards = listShards(o.data, '--data');
  const valShards = o.valData === null ? null : listShards(o.valData, '--val-data');
  const both = valShards?.filter((v) => shards.includes(v)) ?? [];
  if (both.length) throw new Error(`--val-data ${o.valData}: ${both[0]} is also a training shard (--data); a held-out shard must not be trained on`);
  const effective = o.batch * o.accum;
  if (effective < 2) throw new Error(`Effective batch ${effective} (--batch ${o.batch} × --accum ${o.accum}): the InfoNCE loss needs at least 2 pairs per step. Raise --batch or --accum.`);
  let totalSteps = o.steps;
  const split = valShards ? `val: ${valShards.length} held-out shard(s)` : o.valFraction > 0 ? `val: ids hashing below --val-fraction ${o.valFraction}` : 'no val split';
  if (totalSteps === 0) {
    const sizes = shardSizes(shards);
    if (typeof sizes === 'string') throw new Error(`--epochs with shard --data needs each shard's sample count, but ${sizes}. Give --steps N instead, or write the counts there (npm run make-shards writes sizes.json).`);
    const samples = sizes.reduce((a, b) => a + b, 0);
    const trainSamples = valShards ? samples : Math.round(samples * (1 - o.valFraction));
    totalSteps = Math.floor((o.epochs * trainSamples) / effective);
    log(`data: ${shards.length} shard(s), ${samples} samples by sizes.json (about ${trainSamples} for training; ${split}); ${o.epochs} epoch(s) ≈ ${totalSteps} steps of ${effective}`);
  } else log(`data: ${shards.length} shard(s) in ${o.data}, streamed (${split}; shuffle buffer ${o.shuffleBuffer})`);
  return { data: { kind: 'shards', shards, valShards }, totalSteps };
}

/**
 * The val pairs of a shard run for the final eval: the first --eval-max samples (in shard order)
 * of the held-out shards, or of the training shards' val ids, with their images' bytes (the
 * pairs' "paths" are the members' names, resolved through `source`).
 */
async function shardValPairs(data: Extract<RunData, { kind: 'shards' }>, o: TrainOptions, log: (l: string) => void): Promise<{ pairs: Pair[]; source: Map<string, ImageSource> }> {
  if (!data.valShards && o.valFraction === 0) return { pairs: [], source: new Map() };
  const train = inTrainSplit(o);
  return readShardPairs(data.valShards ?? data.shards, {
    max: o.evalMax,
    ...(data.valShards ? {} : { take: (x: ShardSample) => !train(x) }),
    onProblem: (p) => log(`warning: eval: ${p.shard}: sample ${p.key} left out: ${p.reason}`),
  });
}

// --- openRun: the run directory and its lock -----------------------------------------------------

const LOCK_FILE = 'run.lock';

/** The run directory, locked by this process. */
interface OpenRun {
  runDir: string;
  /** This process created the directory, so it may remove it again if the run fails before its first step. */
  created: boolean;
  /** What a crash left there (for a new run: only temporary files), put right by prepareRun. */
  inspection: RunInspection;
  /** The checkpoint to continue from (--resume), or null: the run starts at step 0. */
  checkpoint: Checkpoint | null;
  release(): void;
}

interface LockOwner {
  pid: number;
  host: string | null;
  text: string;
  /** The line was written whole (a lock cut short by a crash has no newline). */
  complete: boolean;
  /** How long ago the lock file was last written. */
  ageMs: number;
}

/** How long a lock may be seen without its line before it counts as cut short by a crash (its writer gone). */
const LOCK_WRITE_GRACE_MS = 10_000;

/** Who holds `path` ("<pid> <host>"), or null when it is gone. A directory in its place is an error that says what to do. */
function readLock(path: string): LockOwner | null {
  let text: string;
  try {
    text = readRegularTextFile(path, `the lock file of a training run ("<pid> <host>"); if no trainer uses this directory, remove ${path} and run the command again`);
  } catch (e) {
    if (!existsSync(path)) return null; // released meanwhile
    throw e;
  }
  const [pid, host] = text.trim().split(/\s+/);
  let ageMs = 0;
  try {
    ageMs = Date.now() - statSync(path).mtimeMs;
  } catch {
    // released meanwhile: judged by its content
  }
  return { pid: Number(pid), host: host ?? null, text, complete: text.endsWith('\n'), ageMs };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Why `owner` still holds the run directory, or null when its lock is stale (its process is gone, or it is this process's own). */
function lockHeldProblem(runDir: string, path: string, owner: LockOwner): string | null {
  if (!owner.complete) {
    // Being written this very moment, or cut short by a crash long ago.
    return owner.ageMs < LOCK_WRITE_GRACE_MS ? `${runDir} is being locked by another training process right now (${path}); nothing there was changed. Try again in a moment.` : null;
  }
  if (owner.host !== null && owner.host !== hostname()) {
    return `${runDir} is locked by a training process on another machine (pid ${owner.pid} on ${owner.host}, see ${path}); nothing there was changed. If no trainer runs there any more, delete ${path}.`;
  }
  if (Number.isInteger(owner.pid) && owner.pid > 0 && owner.pid !== process.pid && processAlive(owner.pid)) {
    return `${runDir} is in use by another training process (pid ${owner.pid}, see ${path}); nothing there was changed. Wait for it, or choose another --out. (If no trainer uses this directory, another program has that pid now: delete ${path}.)`;
  }
  return null;
}

/** Errors of link() on file systems without hard links (FAT, some network or FUSE mounts). */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

/**
 * Creates run.lock with `line` as its whole content, failing with EEXIST when it exists: the
 * line is written to a temporary file first and hard-linked to run.lock (link() never replaces
 * a file), so a lock is never seen half written, even after a crash. Without hard links, an
 * O_EXCL create and write, whose part written on failure is removed again.
 */
function createLockFile(path: string, line: string, files: FileOps): void {
  const tmp = join(dirname(path), `.${LOCK_FILE}.${process.pid}.${Date.now()}.tmp`);
  try {
    files.write(tmp, [line]);
    try {
      files.link(tmp, path);
    } catch (e) {
      if (!(e instanceof FileOpError) || !NO_LINKS.has(e.code ?? '')) throw e;
      try {
        files.write(path, [line], { exclusive: true });
      } catch (w) {
        // O_EXCL succeeded and the write failed (a full disk): that lock is this process's.
        if (w instanceof FileOpError && w.code !== 'EEXIST' && existsSync(path) && line.startsWith(readFileSync(path, 'utf8'))) files.unlink(path);
        throw w;
      }
    }
  } finally {
    if (existsSync(tmp)) files.unlink(tmp);
  }
}

/**
 * Takes run.lock (created whole by createLockFile, holding "<pid> <host>") and returns its release. A lock
 * whose process is gone (kill -9) is taken over: renamed aside first, so that of two trainers
 * that both found it stale only one can take it, and checked after the rename in case a live
 * lock had replaced it meanwhile (that one is put back).
 */
function acquireLock(runDir: string, files: FileOps, log: (l: string) => void): () => void {
  const path = join(runDir, LOCK_FILE);
  const mine = `${process.pid} ${hostname()}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      createLockFile(path, mine, files);
      let held = true;
      return () => {
        if (!held) return;
        held = false;
        try {
          files.unlink(path);
        } catch (e) {
          // A lock that stays behind is stale once this process exits; the next start takes it over.
          log(`warning: ${(e as Error).message}`);
        }
      };
    } catch (e) {
      if (!(e instanceof FileOpError) || e.code !== 'EEXIST') {
        if (e instanceof FileOpError) throw new FileOpError(e.op, path, e.code, e.detail, `Output directory ${runDir}: cannot create ${path} (${errnoReason(e)}). Choose another --out.`);
        throw e;
      }
    }
    const owner = readLock(path);
    if (!owner) continue;
    const held = lockHeldProblem(runDir, path, owner);
    if (held) throw new Error(held);
    const aside = join(runDir, `.run.lock.stale-${process.pid}`);
    try {
      files.rename(path, aside);
    } catch (e) {
      if ((e as FileOpError).code === 'ENOENT') continue;
      throw e;
    }
    const moved = readLock(aside);
    if (moved && moved.text !== owner.text) {
      try {
        files.link(aside, path);
      } finally {
        files.unlink(aside);
      }
      throw new Error(lockHeldProblem(runDir, path, moved) ?? `${runDir} is in use by another training process (see ${path}).`);
    }
    files.unlink(aside);
  }
  throw new Error(`${path}: could not take the lock (another process keeps replacing it); nothing there was changed.`);
}

/** A short list of directory entries for messages. */
function entryList(names: string[]): string {
  return names.length > 5 ? `${names.slice(0, 5).join(', ')}, … ${names.length} entries` : names.join(', ');
}

/** Entries of a directory that are not this trainer's own lock or temporary files. */
function contentOf(runDir: string): string[] {
  return readdirSync(runDir).filter((f) => f !== LOCK_FILE && !isRunTemp(f)).sort();
}

/**
 * Why a new run may not use `runDir`, or null when it may: a new run only uses a directory
 * that does not exist yet or is empty (but for a stale lock and temporary files), so nothing a
 * user or another run put there can be overwritten.
 */
function newRunProblem(runDir: string): string | null {
  if (!existsSync(runDir)) return null;
  if (!statSync(runDir).isDirectory()) return `Output directory ${runDir} is a file, not a directory. Choose another --out.`;
  const lock = join(runDir, LOCK_FILE);
  if (existsSync(lock)) {
    const owner = readLock(lock);
    const held = owner && lockHeldProblem(runDir, lock, owner);
    if (held) return held;
  }
  const content = contentOf(runDir);
  if (!content.length) return null;
  const runFiles = content.filter((f) => f === METRICS_FILE || f === CHECKPOINTS_DIR || PUBLISH_DIRS.includes(f) || (f === 'config.json' && isRunConfig(join(runDir, f))));
  if (runFiles.length) {
    const hasCheckpoint = inspectRunQuietly(runDir);
    return hasCheckpoint
      ? `${runDir} already holds a run (${runFiles.join(', ')}); nothing there was changed. Continue it with: npm run train -- --resume ${runDir}, or choose another --out.`
      : `${runDir} already holds a run that stopped before its first checkpoint (${runFiles.join(', ')}); nothing there was changed. Start it again from step 0 with its saved options: npm run train -- --resume ${runDir}, or choose another --out.`;
  }
  return `Output directory ${runDir} is not empty (${entryList(content)}): a new run uses only a new or empty directory, so that nothing already there is overwritten; nothing there was changed. Choose another --out (it is created).`;
}

/** Whether the run directory has a checkpoint to continue from (false when it cannot tell). */
function inspectRunQuietly(runDir: string): boolean {
  try {
    return inspectRun(runDir).latest !== null;
  } catch {
    return true;
  }
}

/** Whether `path` is the config.json of a genalign run (it records configHash), not e.g. an HF model's. */
function isRunConfig(path: string): boolean {
  try {
    const j = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    return typeof j.configHash === 'string';
  } catch {
    return false;
  }
}

/** Creates `runDir` (and missing parents); true when this call created it, false when it existed. */
function createRunDir(runDir: string, files: FileOps): boolean {
  let d = dirname(runDir);
  while (!existsSync(d)) d = dirname(d);
  if (!statSync(d).isDirectory()) throw new Error(`Output directory ${runDir}: ${d} is a file, so nothing can be created under it. Choose another --out.`);
  try {
    makeDirs(dirname(runDir), files);
    files.mkdir(runDir);
    return true;
  } catch (e) {
    if (e instanceof FileOpError && e.code === 'EEXIST' && existsSync(runDir) && statSync(runDir).isDirectory()) return false;
    if (e instanceof FileOpError) throw new Error(`Output directory ${runDir}: cannot create it (${errnoReason(e)}). Choose another --out.`);
    throw e;
  }
}

/**
 * Opens the run directory for this run, with nothing in it changed but the lock: a new run
 * creates the directory (or takes an empty one) and locks it; --resume locks it, reads where a
 * crash left it and loads the checkpoint to continue from, which must fit the run's options.
 */
function openRun(o: TrainOptions, totalSteps: number, files: FileOps, log: (l: string) => void): OpenRun {
  const runDir = resolve(o.out);
  if (!o.resume) {
    const early = newRunProblem(runDir);
    if (early) throw new Error(early);
    const created = createRunDir(runDir, files);
    let release: () => void;
    try {
      release = acquireLock(runDir, files, log);
    } catch (e) {
      // The directory this call made is empty unless another process uses it now: rmdir removes
      // only an empty directory, so nobody else's file can go with it.
      if (created) {
        try {
          files.rmdir(runDir);
        } catch {
          // In use by someone else, or already gone.
        }
      }
      throw e;
    }
    try {
      // Checked again under the lock: another process may have used the directory meanwhile.
      const late = newRunProblem(runDir);
      if (late) throw new Error(late);
      return { runDir, created, inspection: inspectRun(runDir), checkpoint: null, release };
    } catch (e) {
      release();
      throw e;
    }
  }
  if (!existsSync(runDir) || !statSync(runDir).isDirectory()) throw new Error(`--resume ${o.resume}: not a directory`);
  const release = acquireLock(runDir, files, log);
  try {
    const inspection = inspectRun(runDir);
    const checkpoint = inspection.latest ? loadCheckpoint(inspection.latest.dir) : null;
    if (checkpoint) {
      const saved = checkpoint.state.configHash;
      if (saved !== configHash(o) && saved !== configHashBeforeSchema(o)) {
        throw new Error(`--resume ${o.resume}: ${checkpoint.dir} was trained with other options than ${join(runDir, 'config.json')} holds (model, data, batch, lr, LoRA or seed); nothing was changed. Resume with the run's own config.json.`);
      }
      if (totalSteps < checkpoint.state.step) {
        throw new Error(`--resume ${o.resume}: the run is already at step ${checkpoint.state.step}, past the ${totalSteps} steps asked for; nothing was changed. Resume with --steps ${checkpoint.state.step} or more.`);
      }
    }
    return { runDir, created: false, inspection, checkpoint, release };
  } catch (e) {
    release();
    throw e;
  }
}

/**
 * A new run that fails before its first step leaves nothing behind in a directory it created:
 * its own files are removed, then the directory if it is empty (anything else put there stays).
 */
function abandonNewRun(run: OpenRun, files: FileOps): void {
  for (const f of ['config.json', METRICS_FILE, CHECKPOINTS_DIR, ...readdirSync(run.runDir).filter(isRunTemp)]) {
    const p = join(run.runDir, f);
    if (existsSync(p)) removeTree(p, files);
  }
  run.release();
  try {
    files.rmdir(run.runDir);
  } catch {
    // Not empty (something else was put there) or already gone: leave it.
  }
}

// --- buildStudent: model, student and optimizer, restored from the checkpoint --------------------

interface Built {
  loaded: LoadedModel;
  pre: PreprocessConfig;
  student: StudentState;
  optimizer: AdamW;
}

/** Refuses --precision f16 on an adapter without shader-f16, before anything is loaded. */
export function checkPrecision(device: Device, precision: 'f32' | 'f16', flag = '--precision'): void {
  if (precision === 'f16' && !device.hasFeature('shader-f16')) {
    throw new Error(`${flag} f16 needs the adapter feature 'shader-f16', which ${device.adapter.name} does not offer. Use ${flag} f32 (the default) on this machine.`);
  }
}

async function buildStudent(device: Device, o: TrainOptions, checkpoint: Checkpoint | null): Promise<Built> {
  const problem = studentProblem(o);
  if (problem) throw new Error(problem);
  checkPrecision(device, o.precision);
  const loaded = loadModel(o.model, device, o.seed, o.precision);
  try {
    const pre = modelPreprocessing(loaded);
    const student = makeStudent(loaded.model, o, device);
    try {
      const optimizer = makeOptimizer(student.params, o, student.noWeightDecay);
      try {
        if (checkpoint) await restoreStudent(device, loaded.model, student, optimizer, checkpoint);
        return { loaded, pre, student, optimizer };
      } catch (e) {
        optimizer.dispose();
        throw e;
      }
    } catch (e) {
      disposeStudent(student);
      throw e;
    }
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
}

// --- prepareRun: teacher cache, crash repair, config.json ----------------------------------------

/** config.json: the saved options, the model's config, the adapter it ran on, and configHash. */
function runConfigText(o: TrainOptions, built: Built, device: Device): string {
  return JSON.stringify({ ...savedOptions(o), model: built.loaded.source, modelConfig: built.loaded.model.cfg, adapter: device.adapter, configHash: configHash(o) }, null, 2) + '\n';
}

/** Rewrites config.json when its content changes (a resume with another --steps, say). */
function writeRunConfig(runDir: string, text: string, files: FileOps): void {
  const path = join(runDir, 'config.json');
  if (existsSync(path) && readFileSync(path, 'utf8') === text) return;
  writeFileAtomic(path, text, files);
}

// --- stepLoop ---------------------------------------------------------------------------------------

interface LoopContext {
  device: Device;
  o: TrainOptions;
  hooks: TrainHooks;
  files: FileOps;
  log: (l: string) => void;
  runDir: string;
  built: Built;
  cache: TeacherCache | ShardTeacherCache | null;
  data: RunData;
  sched: ScheduleOptions;
  totalSteps: number;
  startStep: number;
  start: LoopPosition;
  /** Training time before this process (from the checkpoint). */
  elapsedBefore: number;
  /** --precision f16: the dynamic loss scale (null in f32). */
  scaler: GradScaler | null;
  /** --devices N: devices 1 … N−1 (empty on one device). */
  replicas: readonly Replica[];
}

/** Where the data continues: the epoch and batch of a list of pairs, or a shard stream's position. */
interface LoopPosition {
  epoch: number;
  batch: number;
  stream?: StreamPosition;
}

interface LoopResult {
  step: number;
  stoppedEarly: boolean;
  lastLoss: number | null;
}

/** Writes the checkpoint after `step` (weights checked finite first) and publishes its adapter. */
async function writeCheckpoint(ctx: LoopContext, step: number, position: LoopPosition, lastLoss: number | null, elapsedS: number): Promise<void> {
  const { o, built, runDir } = ctx;
  for (const p of built.student.params) {
    const data = await p.read();
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new NonFiniteLossError(`${p.name ?? 'a trainable tensor'}[${bad}] = ${data[bad]} after step ${step}: not writing ${checkpointName(step)}. ${divergedCheckpointNote(runDir, step, o.lr, ctx.files, o.model)}`);
    }
  }
  const state: TrainerState = {
    step, epoch: position.epoch, batchInEpoch: position.batch, seed: o.seed, configHash: configHash(o), lastLoss,
    schedule: { ...ctx.sched }, elapsedS, ...(ctx.scaler ? { gradScaler: ctx.scaler.stateDict() } : {}),
    ...(position.stream ? { stream: position.stream } : {}),
  };
  saveCheckpoint(runDir, await studentFiles(built.student, built.loaded, o.seed), await built.optimizer.stateDict(), state, o.keepCheckpoints, ctx.files);
}

/**
 * The student side of a step on the run's device, or with --devices N spread over the devices
 * (micro-batch k on device k mod N, all against the whole step's teacher rows), the replicas'
 * gradients then summed into the run's device's; loss, accuracy and terms are the step's.
 */
async function studentSide(ctx: LoopContext, micro: readonly PairBatch[], teacher: Float32Array, lossScale: number): Promise<Awaited<ReturnType<typeof accumulateGradients>>> {
  const { device, o, built, replicas } = ctx;
  const model = built.loaded.model;
  const rows: { generated: Float32Array; n: number; row: number }[] = [];
  let row = 0;
  for (const b of micro) {
    rows.push({ generated: b.generated, n: b.ids.length, row });
    row += b.ids.length;
  }
  if (!replicas.length) return accumulateGradients(device, model, built.student, o, rows, teacher, lossScale);
  const workers = [{ device, model, student: built.student }, ...replicas];
  const parts = await Promise.all(workers.map((w, d) => accumulateGradients(w.device, w.model, w.student, o, rows.filter((_, k) => k % workers.length === d), teacher, lossScale)));
  await sumGradients(built.student, replicas);
  const sum = (f: (p: (typeof parts)[number]) => number): number => parts.reduce((a, p) => a + f(p), 0);
  const terms = parts[0].terms ? { infonce: sum((p) => p.terms!.infonce), cosine: sum((p) => p.terms!.cosine) } : undefined;
  return { loss: sum((p) => p.loss), accuracy: sum((p) => p.accuracy), ...(terms ? { terms } : {}) };
}

async function stepLoop(ctx: LoopContext): Promise<LoopResult> {
  const { device, o, hooks, files, built, cache } = ctx;
  const model = built.loaded.model;
  const metricsPath = join(ctx.runDir, METRICS_FILE);
  const common = {
    batchSize: o.batch,
    preprocess: built.pre,
    seed: o.seed,
    prefetch: 2 * o.accum,
    maxBadFraction: o.maxBadFraction,
    onWarn: ctx.log,
    batchesPerStep: o.accum,
    ...(hooks.pool ? { pool: hooks.pool } : {}),
    realNeeded: cache ? (_id: string, m: LoaderMember) => !cache.has(m.realKey ?? fileKey(m.real as string)) : undefined,
  };
  const data = ctx.data;
  let loader: PairLoader;
  if (data.kind === 'pairs') {
    loader = new PairLoader(data.train, { ...common, start: ctx.start, dropLast: data.train.length >= 2 * o.batch });
  } else {
    const source = new ShardBatchSource(
      data.shards,
      { seed: o.seed, bufferSize: o.shuffleBuffer, keep: inTrainSplit(o), ...(ctx.start.stream ? { start: ctx.start.stream } : {}) },
      { batchSize: o.batch, batchesPerStep: o.accum, ...(cache ? { realKey: (x) => shardRowKey(fileKey(x.shard), x.key) } : {}) },
    );
    loader = new PairLoader(source, common);
  }
  const D = model.cfg.projectionDim;
  const t0 = Date.now();
  const elapsed = (): number => ctx.elapsedBefore + (Date.now() - t0) / 1000;
  let lastLoss: number | null = null;
  let step = ctx.startStep;
  let position = ctx.start;
  let stoppedEarly = false;
  try {
    while (step < ctx.totalSteps) {
      const stepStart = Date.now();
      const micro: PairBatch[] = [];
      for (let k = 0; k < o.accum; k++) micro.push(await loader.next());
      const last = micro[micro.length - 1];
      const nextPos: LoopPosition = last.after
        ? { epoch: last.epoch, batch: last.index + 1, stream: last.after }
        : { epoch: last.epoch + Math.floor((last.index + 1) / loader.batchesPerEpoch), batch: (last.index + 1) % loader.batchesPerEpoch };

      // Teacher side for the whole effective batch.
      const rows = micro.reduce((a, b) => a + b.ids.length, 0);
      const teacher = new Float32Array(rows * D);
      let off = 0;
      for (const b of micro) {
        const t = await teacherEmbeddings(device, model, b, cache, o.model);
        teacher.set(t, off);
        off += t.length;
      }

      const scaler = ctx.scaler;
      const lossScale = scaler?.scale ?? 1;
      const res = await studentSide(ctx, micro, teacher, lossScale);
      const loss = hooks.transformLoss ? hooks.transformLoss(step + 1, res.loss) : res.loss;
      if (!Number.isFinite(loss)) {
        built.optimizer.zeroGrad();
        throw new NonFiniteLossError(`Loss became ${loss} at step ${step + 1}; stopping without applying this update. ${divergedCheckpointNote(ctx.runDir, step, o.lr, files, o.model)}`);
      }
      const lr = learningRate(step, ctx.sched);
      let gradNorm: number;
      let skipped = false;
      if (scaler) {
        // GradScaler.step + update: unscale, skip the update when a scaled gradient overflowed.
        ({ norm: gradNorm, skipped } = await built.optimizer.stepUnlessOverflow(lr, 1 / lossScale));
        built.optimizer.zeroGrad();
        if (skipped && lossScale <= 1) {
          throw new NonFiniteLossError(`The gradients at step ${step + 1} are not finite even with the loss scale at ${lossScale} (the loss was ${loss}): this is not an f16 overflow that a smaller scale avoids. ${divergedCheckpointNote(ctx.runDir, step, o.lr, files, o.model)}`);
        }
        scaler.update(skipped);
      } else {
        const normT = built.optimizer.step(lr);
        gradNorm = await normT.item();
        normT.dispose();
        built.optimizer.zeroGrad();
      }
      // Every replica continues from the weights just computed (also after a skipped update: unchanged).
      await broadcastWeights(built.student, ctx.replicas);
      if (!skipped && !Number.isFinite(gradNorm)) {
        // The loss was finite but a gradient was not: the update just applied spoiled the
        // weights in memory, so this step is neither logged nor checkpointed.
        throw new NonFiniteLossError(`The gradient norm became ${gradNorm} at step ${step + 1} (the loss was ${loss}); stopping before this step is logged or saved. ${divergedCheckpointNote(ctx.runDir, step, o.lr, files, o.model)}`);
      }
      step++;
      position = nextPos;
      lastLoss = loss;
      const rec: StepRecord = {
        step, epoch: last.epoch, loss, ...(res.terms ? { loss_infonce: res.terms.infonce, loss_cosine: res.terms.cosine } : {}), accuracy: res.accuracy, lr, grad_norm: gradNorm,
        images_per_s: rows / ((Date.now() - stepStart) / 1000), elapsed_s: elapsed(),
        ...(scaler ? { loss_scale: lossScale, ...(skipped ? { skipped: true } : {}) } : {}),
      };
      files.append(metricsPath, JSON.stringify(rec) + '\n');
      if (step % o.saveEvery === 0 || step === ctx.totalSteps) await writeCheckpoint(ctx, step, position, lastLoss, elapsed());
      await hooks.onStep?.(rec, ctx.totalSteps);
      if (hooks.shouldStop?.() && step < ctx.totalSteps) {
        if (step % o.saveEvery !== 0) await writeCheckpoint(ctx, step, position, lastLoss, elapsed());
        ctx.log(`stopped at step ${step}; checkpoint written. Resume with: npm run train -- --resume ${ctx.runDir}`);
        stoppedEarly = true;
        break;
      }
    }
  } catch (e) {
    await loader.close();
    oomHelp(e, o);
  }
  await loader.close();
  if (loader.badCount > 0) ctx.log(`warning: skipped ${loader.badCount} unreadable image file(s) of ${loader.seenCount} decoded (pairs with them were left out of their batches)`);
  return { step, stoppedEarly, lastLoss };
}

// --- finalEval ------------------------------------------------------------------------------------

async function finalEval(
  device: Device, o: TrainOptions, built: Built, valPairs: Pair[], runDir: string, cache: TeacherCache | null, files: FileOps, log: (l: string) => void, pool: PreprocessPool | undefined,
  source?: ReadonlyMap<string, ImageSource>,
): Promise<EvalOutput | null> {
  if (!o.eval) return null;
  if (valPairs.length < 2) {
    log('eval skipped: fewer than 2 val pairs (raise --val-fraction)');
    return null;
  }
  log(`eval on ${valPairs.length} held-out pairs…`);
  const published = join(runDir, studentFormat(built.student).publishDir);
  // Caption retrieval when the base model is a checkpoint with a text tower and tokenizer files.
  const text = isModelDir(o.model) && hasTextTower(o.model) ? textTowerFor('eval', o.model, undefined, device, o.seed, o.precision, log) : null;
  try {
    const name = built.student.kind === 'full' ? `the fully fine-tuned student (${published})` : `the LoRA student (${published})`;
    return await evaluatePairs(device, built.loaded.model, studentVariant(built.student), built.pre, valPairs, runDir, {
      ...(text ? { text } : {}),
      batch: o.batch,
      plot: o.plot,
      seed: o.seed,
      log,
      files,
      ...(pool ? { pool } : {}),
      ...(source ? { source: (n: string) => source.get(n) ?? n } : {}),
      student: {
        name,
        hint: `Its weights have likely diverged in training (too high a --lr): use an earlier checkpoint of the run (checkpoints/step-*), or retrain with a lower --lr. Nothing was written to ${runDir}.`,
      },
    }, cache);
  } finally {
    text?.model.dispose();
  }
}

// --- train: the stages in order ---------------------------------------------------------------------

export async function train(device: Device, o: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const log = hooks.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const files = hooks.files ?? nodeFiles;

  // Data and flags first: a bad dataset should fail in seconds, before the run directory is
  // touched or any GPU work starts.
  const { data, totalSteps } = openData(o, log);
  const multi = devicesProblem(o);
  if (multi) throw new Error(multi);
  if (!(totalSteps > 0)) throw new Error('Nothing to train: set --steps or --epochs to a positive number.');
  if (o.warmup >= totalSteps) log(`warning: --warmup ${o.warmup} is not shorter than the run (${totalSteps} steps): the learning rate never reaches --lr ${o.lr}`);
  const cacheProblem = o.teacherCache ? writableProblem(o.cacheDir) : null;
  if (cacheProblem) throw new Error(`Teacher cache directory ${o.cacheDir}: ${cacheProblem}. Choose another --cache-dir (or set GENALIGN_CACHE_DIR), or pass --no-teacher-cache.`);

  const run = openRun(o, totalSteps, files, log);
  // One pool of preprocessing workers serves the teacher cache, the loader and the final eval.
  const ownPool = hooks.pool ? null : new PreprocessPool();
  try {
    const built = await buildStudent(device, o, run.checkpoint);
    try {
      return await runStages(device, o, { ...hooks, pool: hooks.pool ?? ownPool! }, files, log, run, built, data, totalSteps);
    } catch (e) {
      // On failure nothing is handed to the caller: free the model and the student here.
      disposeStudent(built.student);
      built.loaded.model.dispose();
      throw e;
    }
  } catch (e) {
    // A run that logged no step has nothing worth keeping in a directory it created.
    const metrics = join(run.runDir, METRICS_FILE);
    if (run.created && !(existsSync(metrics) && statSync(metrics).size > 0)) {
      try {
        abandonNewRun(run, files);
      } catch {
        // Leaving a few files is better than hiding the error that stopped the run.
      }
    }
    if (isNoSpace(e)) {
      const next = existsSync(join(run.runDir, 'config.json')) ? `continue the run with: npm run train -- --resume ${run.runDir}` : 'run the same command again';
      throw new Error(`${(e as Error).message}\nThe disk is full. Nothing already written was lost: free some space, then ${next}`);
    }
    throw e;
  } finally {
    run.release();
    await ownPool?.close();
  }
}

/**
 * prepareRun: fills the teacher cache (outside the run directory), checks the disk, then, with
 * everything checked, puts right what a crash left and writes config.json. Returns the cache, or
 * null for the cache when Ctrl-C stopped its filling (`stopped`).
 */
async function prepareRun(device: Device, o: TrainOptions, hooks: TrainHooks, files: FileOps, log: (l: string) => void, run: OpenRun, built: Built, data: RunData): Promise<{ cache: TeacherCache | ShardTeacherCache | null; stopped: boolean }> {
  const model = built.loaded.model;
  let cache: TeacherCache | ShardTeacherCache | null = null;
  if (o.teacherCache) {
    const key = modelKey(built.loaded.source, model.cfg, built.pre, o.seed, model.dtype);
    let complete: boolean;
    if (data.kind === 'pairs') {
      const pairs = [...data.train, ...data.val];
      const c = new TeacherCache(o.cacheDir, key, model.cfg.projectionDim, cacheRowKeys(pairs.map((p) => p.real)), { warn: log });
      cache = c;
      complete = await warmTeacherCache(device, model, built.pre, pairs, c, Math.max(o.batch, 8), log, hooks.shouldStop, hooks.pool).catch((e: unknown) => oomHelp(e, o));
    } else {
      const c = new ShardTeacherCache(o.cacheDir, key, model.cfg.projectionDim, { warn: log });
      cache = c;
      complete = await warmShardTeacherCache(device, model, built.pre, data.shards, c, Math.max(o.batch, 8), log, hooks.shouldStop, hooks.pool).catch((e: unknown) => oomHelp(e, o));
    }
    if (!complete) {
      log('stopped while filling the teacher cache; what was embedded is saved, so running the same command again continues from there');
      return { cache, stopped: true };
    }
  }
  const adapterBytes = built.student.params.reduce((a, p) => a + p.byteLength, 0);
  checkFreeSpace(run.runDir, 6 * adapterBytes * (o.keepCheckpoints + 1) + 16 * 2 ** 20);
  repairRun(run.inspection, o.keepCheckpoints, files, log);
  writeRunConfig(run.runDir, runConfigText(o, built, device), files);
  return { cache, stopped: false };
}

/** Says where a resumed run continues, and warns when a changed --steps moves the learning rate. */
function logResume(o: TrainOptions, run: OpenRun, sched: ScheduleOptions, log: (l: string) => void): void {
  const ckpt = run.checkpoint;
  if (!ckpt) {
    if (o.resume) log(`no checkpoint in ${join(run.runDir, CHECKPOINTS_DIR)} yet: starting the run from step 0 with its saved options`);
    return;
  }
  const startStep = ckpt.state.step;
  const before = ckpt.state.schedule as unknown as ScheduleOptions;
  const was = learningRate(startStep, before);
  const now = learningRate(startStep, sched);
  if (before.totalSteps !== sched.totalSteps && startStep < sched.totalSteps && Math.abs(now - was) > 1e-9 * Math.max(now, was)) {
    // --steps / --epochs changed: the cosine is laid over the new length, so the learning rate
    // does not continue the way the checkpoint's schedule would have.
    log(
      `warning: the schedule now spans ${sched.totalSteps} steps instead of ${before.totalSteps}: step ${startStep + 1} uses learning rate ` +
        `${now.toExponential(2)} where the run's schedule had ${was.toExponential(2)} (step ${startStep} used ${learningRate(startStep - 1, before).toExponential(2)})`,
    );
  }
  log(`resumed from ${ckpt.dir} at step ${startStep}`);
}

/** The stages after buildStudent: prepareRun, stepLoop, finalEval. */
async function runStages(device: Device, o: TrainOptions, hooks: TrainHooks, files: FileOps, log: (l: string) => void, run: OpenRun, built: Built, data: RunData, totalSteps: number): Promise<TrainResult> {
  let valPairs = data.kind === 'pairs' ? data.val : [];
  let replicas: Replica[] = [];
  const ckpt = run.checkpoint;
  const sched: ScheduleOptions = { baseLr: o.lr, minLr: o.minLr, warmupSteps: o.warmup, totalSteps, restartPeriod: o.restartPeriod, restartMult: o.restartMult };
  const startStep = ckpt?.state.step ?? 0;
  const result = (steps: number, stoppedEarly: boolean, lastLoss: number | null, cache: TeacherCache | ShardTeacherCache | null, ev: EvalOutput | null): TrainResult => ({
    runDir: run.runDir, steps, stoppedEarly, lastLoss, valPairs, model: built.loaded, student: built.student, lora: built.student.lora, projection: built.student.projection, pre: built.pre, teacherCache: cache, eval: ev,
  });
  try {
    const { cache, stopped } = await prepareRun(device, o, hooks, files, log, run, built, data);
    if (stopped) return result(startStep, true, null, cache, null);
    logResume(o, run, sched, log);
    if (deviceCount(o.devices) > 1) replicas = await openReplicas(o, built.student, log);
    hooks.onStart?.({ totalSteps, startStep, trainPairs: data.kind === 'pairs' ? data.train.length : null, valPairs: data.kind === 'pairs' ? data.val.length : null, runDir: run.runDir, adapter: device.adapter.name });
    const loop = await stepLoop({
      device, o, hooks, files, log, runDir: run.runDir, built, cache, data, sched, totalSteps, startStep,
      start: ckpt ? { epoch: ckpt.state.epoch, batch: ckpt.state.batchInEpoch, ...(ckpt.state.stream ? { stream: ckpt.state.stream } : {}) } : { epoch: 0, batch: 0 },
      elapsedBefore: ckpt?.state.elapsedS ?? 0,
      scaler: o.precision === 'f16' ? new GradScaler(hooks.gradScaler ?? GRAD_SCALER_DEFAULTS, ckpt?.state.gradScaler) : null,
      replicas,
    });
    disposeReplicas(replicas);
    replicas = [];
    if (loop.step === startStep && loop.step === totalSteps) log(`nothing to do: the run is already at step ${loop.step}/${totalSteps}`);
    if (loop.stoppedEarly) return result(loop.step, true, loop.lastLoss, cache, null);
    const published = join(run.runDir, studentFormat(built.student).publishDir);
    log(built.student.kind === 'full' ? `student (HF CLIPVisionModelWithProjection): ${published}` : `adapter (PEFT): ${published}`);
    let source: Map<string, ImageSource> | undefined;
    if (data.kind === 'shards' && o.eval) ({ pairs: valPairs, source } = await shardValPairs(data, o, log));
    const ev = await finalEval(device, o, built, valPairs, run.runDir, cache instanceof TeacherCache ? cache : null, files, log, hooks.pool, source);
    return result(loop.step, false, loop.lastLoss, cache, ev);
  } finally {
    disposeReplicas(replicas);
    built.optimizer.dispose();
  }
}
