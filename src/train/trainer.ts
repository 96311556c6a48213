// The GMAIL training loop.
//
//   dataset → loader (decode + preprocess off the main thread, prefetched)
//   → teacher f_r(real) (frozen: from the embedding cache, or a noGrad forward)
//   → student f_g(generated) (same weights + LoRA) → InfoNCE gen→real (Eq. 1, fused kernel)
//   → backward (LoRA only) → AdamW (+ global-norm clipping, warmup + cosine schedule)
//   → metrics.jsonl / progress → checkpoints (PEFT adapter + trainer state) → eval.
//
// Gradient accumulation: the effective batch is batch × accum pairs. The teacher embeddings of
// the whole effective batch are known before the student runs (cache or noGrad forward), so
// every micro-batch's loss uses all effective-batch reals as negatives. Each generated row's
// loss depends only on its own student embedding and the fixed teacher matrix, so summing
// micro-batch gradients (each scaled by 1/accum) gives exactly the full-batch gradient.
import { closeSync, existsSync, openSync, readFileSync, rmSync, statfsSync, appendFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import type { Device } from '../gpu/device.ts';
import { OutOfMemoryError } from '../gpu/encoder.ts';
import { BufferTooLargeError } from '../gpu/pool.ts';
import { Parameter, fromArray, scope, type Tensor } from '../tensor/tensor.ts';
import { backward, noGrad } from '../tensor/autograd.ts';
import { infoNceGenToReal } from '../ops/index.ts';
import { LoraAdapter, type LoraTarget } from '../nn/lora.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import { loadModel, modelPreprocessing, type LoadedModel } from '../io/hf-checkpoint.ts';
import type { PreprocessConfig } from '../io/image.ts';
import { loadDataset, splitByValFraction, type Pair } from '../io/dataset.ts';
import { PairLoader, type PairBatch } from '../io/loader.ts';
import { readPeftAdapter } from '../io/peft.ts';
import { makeDirs, writableProblem, writeFileAtomic } from '../gpu/atomic-file.ts';
import { AdamW } from './optimizer.ts';
import { learningRate, type ScheduleOptions } from './schedule.ts';
import { saveCheckpoint, loadLatestCheckpoint, loadableCheckpointExists, setAsideDivergedCheckpoint, checkpointName, type TrainerState } from './checkpoint.ts';
import { TeacherCache, modelKey, fileKey } from './teacher-cache.ts';
import { embedPaths } from './embedding.ts';

export interface TrainOptions {
  data: string;
  model: string;
  out: string;
  steps: number;
  epochs: number;
  batch: number;
  accum: number;
  lr: number;
  minLr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  clip: number;
  warmup: number;
  restartPeriod: number;
  restartMult: number;
  rank: number;
  alpha: number;
  targets: LoraTarget[];
  dualProjection: boolean;
  tau: number;
  seed: number;
  valFraction: number;
  teacherCache: boolean;
  cacheDir: string;
  saveEvery: number;
  logEvery: number;
  keepCheckpoints: number;
  maxBadFraction: number;
  eval: boolean;
  plot: 'tsne' | 'pca';
  resume: string | null;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  accuracy: number;
  lr: number;
  grad_norm: number;
  images_per_s: number;
  elapsed_s: number;
}

export interface TrainHooks {
  onStart?: (info: { totalSteps: number; startStep: number; trainPairs: number; valPairs: number; runDir: string; adapter: string }) => void;
  onStep?: (r: StepRecord, totalSteps: number) => void;
  log?: (line: string) => void;
  /** Polled after every step; true stops the run after a checkpoint (Ctrl-C). */
  shouldStop?: () => boolean;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  stoppedEarly: boolean;
  lastLoss: number | null;
  valPairs: Pair[];
  model: LoadedModel;
  lora: LoraAdapter;
  projection: Parameter | null;
  pre: PreprocessConfig;
  teacherCache: TeacherCache | null;
}

export class NonFiniteLossError extends Error {}

// Test-only hooks (used by test/cli and test/train to make failure paths deterministic; never
// set them in real runs):
//   GENALIGN_TEST_NAN_AT_STEP=k     the loss of step k (1-based) is replaced by NaN
//   GENALIGN_TEST_STEP_DELAY_MS=ms  sleep after every step, so a test can signal a run mid-way
function testHook(name: 'GENALIGN_TEST_NAN_AT_STEP' | 'GENALIGN_TEST_STEP_DELAY_MS'): number {
  const v = Number(process.env[name] ?? '');
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/** Options that must be identical when resuming (anything that changes the loss sequence). */
function configHash(o: TrainOptions): string {
  const keyed = {
    data: resolve(o.data), model: o.model, batch: o.batch, accum: o.accum, lr: o.lr, minLr: o.minLr, wd: o.weightDecay,
    b1: o.beta1, b2: o.beta2, eps: o.eps, clip: o.clip, warmup: o.warmup, rp: o.restartPeriod, rm: o.restartMult,
    rank: o.rank, alpha: o.alpha, targets: o.targets, dual: o.dualProjection, tau: o.tau, seed: o.seed, val: o.valFraction,
  };
  return createHash('sha256').update(JSON.stringify(keyed)).digest('hex').slice(0, 16);
}

/** Fails before training if the disk of the run directory (created and checked writable by train()) is nearly full. */
function checkFreeSpace(runDir: string, neededBytes: number): void {
  try {
    const fs = statfsSync(runDir);
    const free = fs.bavail * fs.bsize;
    if (free < neededBytes) {
      throw new Error(`Not enough disk space in ${runDir}: ${(free / 2 ** 20).toFixed(1)} MiB free, checkpoints need about ${(neededBytes / 2 ** 20).toFixed(1)} MiB. Free space or choose another --out.`);
    }
  } catch (e) {
    if ((e as Error).message.startsWith('Not enough disk space')) throw e;
    // statfs unsupported: train()'s write probe is all we can check.
  }
}

/**
 * What a non-finite loss or gradient at step `step + 1` means for the checkpoints: the one
 * written after step `step` holds the weights that produced it, so it is set aside, and the
 * message says which checkpoint --resume would now continue from.
 */
function divergedCheckpointNote(runDir: string, step: number, lr: number): string {
  const { setAside, latest } = setAsideDivergedCheckpoint(runDir, step);
  const dir = join(runDir, 'checkpoints');
  const advice = latest
    ? `Resuming repeats the same steps with the same settings, so it is likely to diverge again: start a new run (another --out) with a lower --lr (now ${lr}), or check the data.`
    : `Start a new run (another --out, or delete ${runDir}) with a lower --lr (now ${lr}), or check the data.`;
  if (setAside) {
    return `The weights saved after step ${step} gave this, so that checkpoint was moved to ${join(dir, setAside)}` +
      (latest ? `; checkpoints/latest and adapter/ now point to ${latest}, the newest checkpoint whose weights gave a finite loss. ` : ', and no earlier checkpoint is left. ') + advice;
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

/** AdamW over the student's parameters with the run's betas, eps, weight decay and clipping. */
export function makeOptimizer(params: Parameter[], o: Pick<TrainOptions, 'lr' | 'beta1' | 'beta2' | 'eps' | 'weightDecay' | 'clip'>): AdamW {
  return new AdamW(params, { lr: o.lr, betas: [o.beta1, o.beta2], eps: o.eps, weightDecay: o.weightDecay, maxGradNorm: o.clip > 0 ? o.clip : undefined });
}

/**
 * The student side of one step: per micro-batch, the student forward on its generated images,
 * GMAIL's loss against all teacher embeddings of the step (`teacher` [rows, D], micro-batches in
 * order; each micro-batch's own reals are its positives, every other real a negative), and
 * backward weighted by the micro-batch's share, so the parameters' .grad sum to the gradient of
 * the whole effective batch's loss. Returns that loss and the top-1 accuracy (row-weighted).
 */
export async function accumulateGradients(
  device: Device,
  model: ClipVisionModel,
  student: StudentState,
  tau: number,
  micro: readonly { generated: Float32Array; n: number }[],
  teacher: Float32Array,
): Promise<{ loss: number; accuracy: number }> {
  const D = model.cfg.projectionDim;
  const S = model.cfg.imageSize;
  const rows = micro.reduce((a, b) => a + b.n, 0);
  const lossTensors: Tensor[] = [];
  const accTensors: Tensor[] = [];
  let rowStart = 0;
  for (const { generated, n } of micro) {
    // Reals of this micro-batch first (the loss takes column i as row i's positive), then
    // every other real of the effective batch as extra negatives.
    const r = new Float32Array(rows * D);
    r.set(teacher.subarray(rowStart * D, (rowStart + n) * D), 0);
    r.set(teacher.subarray(0, rowStart * D), n * D);
    r.set(teacher.subarray((rowStart + n) * D), rowStart * D + n * D);
    rowStart += n;
    const [loss, acc] = scope(() => {
      const g = model.forward(fromArray(generated, [n, 3, S, S], device), { lora: student.lora, projection: student.projection ?? undefined });
      const res = infoNceGenToReal(g, fromArray(r, [rows, D], device), { tau });
      // Each micro-batch's loss is a mean over its rows; weight by its share of the batch.
      backward(res.loss, fromArray([n / rows], [], device));
      return [res.loss.keep(), res.accuracy.keep()];
    });
    lossTensors.push(loss);
    accTensors.push(acc);
  }
  let loss = 0;
  let accuracy = 0;
  for (let k = 0; k < micro.length; k++) {
    const w = micro[k].n / rows;
    loss += w * (await lossTensors[k].item());
    accuracy += w * (await accTensors[k].item());
    lossTensors[k].dispose();
    accTensors[k].dispose();
  }
  return { loss, accuracy };
}

export interface StudentState {
  lora: LoraAdapter;
  projection: Parameter | null;
  params: Parameter[];
}

export function makeStudent(model: ClipVisionModel, o: Pick<TrainOptions, 'rank' | 'alpha' | 'targets' | 'seed' | 'dualProjection'>, device: Device): StudentState {
  const lora = LoraAdapter.create(model.cfg, { rank: o.rank, alpha: o.alpha, targets: o.targets, seed: o.seed }, device);
  let projection: Parameter | null = null;
  if (o.dualProjection) {
    // The student's own projection head starts as a copy of the shared one.
    const w = model.w('visual_projection.weight');
    projection = Parameter.fromTensor(fromArray(new Float32Array(w.size), w.shape, device), 'student.visual_projection.weight');
    device.batch.copy(w.buffer, 0, projection.buffer, 0, w.byteLength);
  }
  // The adapter owns the projection, so the PEFT files (and embed --lora) carry it.
  lora.projection = projection;
  return { lora, projection, params: [...lora.parameters(), ...(projection ? [projection] : [])] };
}

/** Teacher embeddings [n, D] for real paths, from the cache or computed now (noGrad). */
async function teacherEmbeddings(
  device: Device,
  model: ClipVisionModel,
  batch: PairBatch,
  cache: TeacherCache | null,
): Promise<Float32Array> {
  const D = model.cfg.projectionDim;
  const n = batch.ids.length;
  const out = new Float32Array(n * D);
  const S = model.cfg.imageSize;
  const per = 3 * S * S;
  const toCompute: number[] = [];
  for (let i = 0; i < n; i++) {
    const row = cache?.get(fileKey(batch.realPaths[i]));
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
      out.set(row, i * D);
      cache?.set(fileKey(batch.realPaths[i]), row);
    });
  }
  return out;
}

/** Fills the teacher cache for the given real images (one pass before training). */
/** Returns false when shouldStop interrupted it (what was embedded so far is saved). */
export async function warmTeacherCache(device: Device, model: ClipVisionModel, pre: PreprocessConfig, pairs: Pair[], cache: TeacherCache, batch: number, log: (l: string) => void, shouldStop?: () => boolean): Promise<boolean> {
  const missing = [...new Set(pairs.map((p) => p.real))].filter((p) => !cache.has(fileKey(p)));
  if (!missing.length) {
    log(`teacher cache: all ${pairs.length} real images cached (${cache.path})`);
    return true;
  }
  log(`teacher cache: embedding ${missing.length} real images (${cache.size} already cached)`);
  const t0 = Date.now();
  const res = await embedPaths(device, model, undefined, missing, pre, batch, {
    onSkip: (p, r) => log(`warning: teacher cache: skipping ${p}: ${r}`),
    shouldStop,
  });
  const D = model.cfg.projectionDim;
  let row = 0;
  missing.forEach((p, i) => {
    if (!res.ok[i]) return;
    cache.set(fileKey(p), res.embeds.slice(row * D, (row + 1) * D));
    row++;
  });
  cache.save();
  log(`teacher cache: ${row} embedded in ${((Date.now() - t0) / 1000).toFixed(1)} s → ${cache.path}`);
  return res.ok.length === missing.length;
}

export function resolvedConfigPath(runDir: string): string {
  return join(runDir, 'config.json');
}

/**
 * A new run must not write into a directory that holds another run: its metrics.jsonl would
 * be restarted and its adapter/ replaced, and its old checkpoints would mix with the new
 * ones. A config.json alone (a run stopped before its first step) may be replaced.
 */
function refuseExistingRun(runDir: string): void {
  const metrics = join(runDir, 'metrics.jsonl');
  const found = [
    ...(existsSync(metrics) && readFileSync(metrics, 'utf8').trim() ? ['metrics.jsonl'] : []),
    ...['checkpoints', 'adapter'].filter((f) => existsSync(join(runDir, f))),
  ];
  if (!found.length) return;
  if (!loadableCheckpointExists(runDir)) {
    throw new Error(`${runDir} already holds a run that stopped before its first checkpoint (${found.join(', ')}), so there is nothing to resume; nothing there was changed. Choose another --out, or delete that directory to reuse the name.`);
  }
  throw new Error(`${runDir} already holds a run (${found.join(', ')}); nothing there was changed. Continue it with: npm run train -- --resume ${runDir}, or choose another --out.`);
}

/**
 * Marks `runDir` as in use by this process (run.lock holding the pid) and returns the release.
 * A second trainer on the same directory would interleave metrics.jsonl lines and overwrite
 * checkpoints, so it is refused while the pid in the lock is alive; a lock left by a process
 * that died (kill -9) is taken over.
 */
function lockRunDir(runDir: string): () => void {
  const path = join(runDir, 'run.lock');
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
    }
    const pid = Number(readFileSync(path, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new Error(`${runDir} is in use by another training process (pid ${pid}, see ${path}); nothing there was changed. Wait for it, or choose another --out.`);
    }
    rmSync(path, { force: true }); // stale: its process is gone
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
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

export async function train(device: Device, o: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const log = hooks.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const runDir = resolve(o.out);
  if (!o.resume) refuseExistingRun(runDir);
  // A run directory this call creates is removed again if the run fails before its first step.
  const createdRunDir = !existsSync(runDir);

  // Data first: a bad dataset should fail in seconds, before any GPU work.
  const dataset = loadDataset(o.data, { onWarn: log });
  const { train: trainPairs, val: valPairs } = splitByValFraction(dataset.pairs, o.valFraction, o.seed);
  log(`data: ${dataset.pairs.length} pairs in ${o.data} (${trainPairs.length} train, ${valPairs.length} val)`);
  checkBatchFits(o, trainPairs.length);

  let stepped = false;
  try {
    const outProblem = writableProblem(runDir);
    if (outProblem) throw new Error(`Output directory ${runDir}: ${outProblem}. Choose another --out.`);
    const cacheProblem = o.teacherCache ? writableProblem(o.cacheDir) : null;
    if (cacheProblem) throw new Error(`Teacher cache directory ${o.cacheDir}: ${cacheProblem}. Choose another --cache-dir (or set GENALIGN_CACHE_DIR), or pass --no-teacher-cache.`);

    makeDirs(runDir);
    const unlock = lockRunDir(runDir);
    try {
      return await trainLocked(device, o, hooks, log, runDir, trainPairs, valPairs, () => (stepped = true));
    } finally {
      unlock();
    }
  } catch (e) {
    if (createdRunDir && !stepped) {
      try {
        rmSync(runDir, { recursive: true, force: true });
      } catch {
        // Nothing was created there (e.g. --out under a file): the original error is what matters.
      }
    }
    throw e;
  }
}

/** Model, student and the run itself, with the run directory locked. */
async function trainLocked(device: Device, o: TrainOptions, hooks: TrainHooks, log: (l: string) => void, runDir: string, trainPairs: Pair[], valPairs: Pair[], onStepped: () => void): Promise<TrainResult> {
  const loaded = loadModel(o.model, device, o.seed);
  const model = loaded.model;
  let pre: PreprocessConfig;
  try {
    pre = modelPreprocessing(loaded);
  } catch (e) {
    model.dispose();
    throw e;
  }
  const student = makeStudent(model, o, device);
  try {
    return await runTraining(device, o, { ...hooks, onStep: (r, total) => (onStepped(), hooks.onStep?.(r, total)) }, log, runDir, trainPairs, valPairs, loaded, pre, student);
  } catch (e) {
    // On failure nothing is handed to the caller: free the model and the student here.
    student.lora.dispose();
    student.projection?.dispose();
    model.dispose();
    throw e;
  }
}

async function runTraining(
  device: Device,
  o: TrainOptions,
  hooks: TrainHooks,
  log: (l: string) => void,
  runDir: string,
  trainPairs: Pair[],
  valPairs: Pair[],
  loaded: LoadedModel,
  pre: PreprocessConfig,
  student: StudentState,
): Promise<TrainResult> {
  const model = loaded.model;
  const adapterBytes = student.params.reduce((a, p) => a + p.byteLength, 0);
  checkFreeSpace(runDir, 6 * adapterBytes * (o.keepCheckpoints + 1) + 16 * 2 ** 20);

  const microBatch = o.batch;
  const dropLast = trainPairs.length >= 2 * microBatch;
  const loader0 = new PairLoader(trainPairs, { batchSize: microBatch, preprocess: pre, seed: o.seed, prefetch: 0, dropLast, batchesPerStep: o.accum });
  const stepsPerEpoch = loader0.batchesPerEpoch / o.accum;
  await loader0.close();
  const totalSteps = o.steps > 0 ? o.steps : o.epochs * stepsPerEpoch;
  if (!(totalSteps > 0)) throw new Error('Nothing to train: set --steps or --epochs to a positive number.');
  if (o.warmup >= totalSteps) log(`warning: --warmup ${o.warmup} is not shorter than the run (${totalSteps} steps): the learning rate never reaches --lr ${o.lr}`);

  const sched: ScheduleOptions = { baseLr: o.lr, minLr: o.minLr, warmupSteps: o.warmup, totalSteps, restartPeriod: o.restartPeriod, restartMult: o.restartMult };
  const optimizer = makeOptimizer(student.params, o);

  let cache: TeacherCache | null = null;
  if (o.teacherCache) {
    cache = new TeacherCache(o.cacheDir, modelKey(loaded.source, model.cfg, pre, o.seed), model.cfg.projectionDim);
    const complete = await warmTeacherCache(device, model, pre, [...trainPairs, ...valPairs], cache, Math.max(o.batch, 8), log, hooks.shouldStop).catch((e: unknown) => oomHelp(e, o));
    if (!complete) {
      log('stopped while filling the teacher cache; what was embedded is saved, so running the same command again continues from there');
      optimizer.dispose();
      return { runDir, steps: 0, stoppedEarly: true, lastLoss: null, valPairs, model: loaded, lora: student.lora, projection: student.projection, pre, teacherCache: cache };
    }
  }

  // Resume: LoRA weights, optimizer moments, step and data position.
  let startStep = 0;
  let start = { epoch: 0, batch: 0 };
  const metricsPath = join(runDir, 'metrics.jsonl');
  if (o.resume) {
    const ckpt = loadLatestCheckpoint(runDir);
    if (!ckpt) throw new Error(`--resume ${o.resume}: no checkpoint found in ${join(runDir, 'checkpoints')}`);
    if (ckpt.state.configHash !== configHash(o)) {
      throw new Error(`--resume ${o.resume}: the checkpoint was trained with different options (model, data, batch, lr, LoRA or seed); resume with the run's own config.json`);
    }
    const saved = readPeftAdapter(ckpt.dir, model.cfg, device);
    for (const [path, pair] of student.lora.pairs) {
      const s = saved.get(path);
      if (!s) throw new Error(`--resume: checkpoint ${ckpt.dir} has no LoRA weights for ${path}`);
      device.batch.copy(s.a.buffer, 0, pair.a.buffer, 0, pair.a.byteLength);
      device.batch.copy(s.b.buffer, 0, pair.b.buffer, 0, pair.b.byteLength);
    }
    await device.sync();
    if (student.projection) {
      if (!saved.projection) throw new Error(`--resume: checkpoint ${ckpt.dir} has no student projection (visual_projection in adapter_model.safetensors)`);
      device.batch.copy(saved.projection.buffer, 0, student.projection.buffer, 0, student.projection.byteLength);
      await device.sync();
    }
    saved.dispose();
    startStep = ckpt.state.step;
    if (totalSteps < startStep) {
      throw new Error(`--resume ${o.resume}: the run is already at step ${startStep}, past the ${totalSteps} steps asked for; nothing was changed. Resume with --steps ${startStep} or more.`);
    }
    optimizer.loadStateDict(ckpt.optimizer);
    const before = ckpt.state.schedule as unknown as ScheduleOptions;
    const was = learningRate(startStep, before);
    const now = learningRate(startStep, sched);
    if (before.totalSteps !== totalSteps && startStep < totalSteps && Math.abs(now - was) > 1e-9 * Math.max(now, was)) {
      // --steps / --epochs changed: the cosine is laid over the new length, so the learning rate
      // does not continue the way the checkpoint's schedule would have.
      log(
        `warning: the schedule now spans ${totalSteps} steps instead of ${before.totalSteps}: step ${startStep + 1} uses learning rate ` +
          `${now.toExponential(2)} where the run's schedule had ${was.toExponential(2)} (step ${startStep} used ${learningRate(startStep - 1, before).toExponential(2)})`,
      );
    }
    start = { epoch: ckpt.state.epoch, batch: ckpt.state.batchInEpoch };
    // Drop log lines past the checkpoint so metrics.jsonl reads as one run.
    if (existsSync(metricsPath)) {
      // A line cut short by a crash (killed mid-write) is dropped like the steps after the checkpoint.
      const stepOf = (l: string): number => {
        try {
          return (JSON.parse(l) as { step: number }).step;
        } catch {
          return Number.POSITIVE_INFINITY;
        }
      };
      const kept = readFileSync(metricsPath, 'utf8').split('\n').filter((l) => l && stepOf(l) <= startStep);
      writeFileAtomic(metricsPath, kept.map((l) => l + '\n').join(''));
    }
    log(`resumed from ${ckpt.dir} at step ${startStep}`);
  } else if (existsSync(metricsPath)) {
    writeFileAtomic(metricsPath, '');
  }
  // Written once the options are known to fit the run (a resume that is refused keeps the old one).
  writeFileAtomic(resolvedConfigPath(runDir), JSON.stringify({ ...o, data: resolve(o.data), out: runDir, model: loaded.source, adapter: device.adapter, modelConfig: model.cfg, configHash: configHash(o) }, null, 2) + '\n');

  const realById = new Map(trainPairs.map((p) => [p.id, p.real]));
  const loader = new PairLoader(trainPairs, {
    batchSize: microBatch,
    preprocess: pre,
    seed: o.seed,
    prefetch: 2 * o.accum,
    maxBadFraction: o.maxBadFraction,
    onWarn: log,
    start,
    dropLast,
    batchesPerStep: o.accum,
    realNeeded: cache ? (id) => !cache!.has(fileKey(realById.get(id)!)) : undefined,
  });

  hooks.onStart?.({ totalSteps, startStep, trainPairs: trainPairs.length, valPairs: valPairs.length, runDir, adapter: device.adapter.name });
  const D = model.cfg.projectionDim;
  const t0 = Date.now();
  let lastLoss: number | null = null;
  let step = startStep;
  let position = start;
  let stoppedEarly = false;

  const checkpoint = async (): Promise<void> => {
    for (const p of student.params) {
      const data = await p.read();
      const bad = data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        throw new NonFiniteLossError(`${p.name ?? 'a trainable tensor'}[${bad}] = ${data[bad]} after step ${step}: not writing ${checkpointName(step)}. ${divergedCheckpointNote(runDir, step, o.lr)}`);
      }
    }
    const state: TrainerState = {
      step, epoch: position.epoch, batchInEpoch: position.batch, seed: o.seed, configHash: configHash(o), lastLoss,
      schedule: { ...sched },
    };
    await saveCheckpoint(runDir, student.lora, loaded.source, await optimizer.stateDict(), state, o.keepCheckpoints);
  };

  try {
    while (step < totalSteps) {
      const stepStart = Date.now();
      const micro: PairBatch[] = [];
      for (let k = 0; k < o.accum; k++) micro.push(await loader.next());
      const last = micro[micro.length - 1];
      const nextPos = { epoch: last.epoch + Math.floor((last.index + 1) / loader.batchesPerEpoch), batch: (last.index + 1) % loader.batchesPerEpoch };

      // Teacher side for the whole effective batch.
      const teach: Float32Array[] = [];
      for (const b of micro) teach.push(await teacherEmbeddings(device, model, b, cache));
      const rows = micro.reduce((a, b) => a + b.ids.length, 0);
      const all = new Float32Array(rows * D);
      let off = 0;
      for (const t of teach) {
        all.set(t, off);
        off += t.length;
      }

      let { loss, accuracy: acc } = await accumulateGradients(device, model, student, o.tau, micro.map((b) => ({ generated: b.generated, n: b.ids.length })), all);
      if (step + 1 === testHook('GENALIGN_TEST_NAN_AT_STEP')) loss = Number.NaN;
      if (!Number.isFinite(loss)) {
        optimizer.zeroGrad();
        throw new NonFiniteLossError(`Loss became ${loss} at step ${step + 1}; stopping without applying this update. ${divergedCheckpointNote(runDir, step, o.lr)}`);
      }
      const lr = learningRate(step, sched);
      const normT = optimizer.step(lr);
      const gradNorm = await normT.item();
      normT.dispose();
      optimizer.zeroGrad();
      if (!Number.isFinite(gradNorm)) {
        // The loss was finite but a gradient was not: the update just applied spoiled the
        // weights in memory, so this step is neither logged nor checkpointed.
        throw new NonFiniteLossError(`The gradient norm became ${gradNorm} at step ${step + 1} (the loss was ${loss}); stopping before this step is logged or saved. ${divergedCheckpointNote(runDir, step, o.lr)}`);
      }
      step++;
      position = nextPos;
      lastLoss = loss;
      const rec: StepRecord = {
        step, epoch: last.epoch, loss, accuracy: acc, lr, grad_norm: gradNorm,
        images_per_s: rows / ((Date.now() - stepStart) / 1000), elapsed_s: (Date.now() - t0) / 1000,
      };
      appendFileSync(metricsPath, JSON.stringify(rec) + '\n');
      hooks.onStep?.(rec, totalSteps);
      if (step % o.saveEvery === 0 || step === totalSteps) await checkpoint();
      const delay = testHook('GENALIGN_TEST_STEP_DELAY_MS');
      if (delay) await new Promise((r) => setTimeout(r, delay));
      if (hooks.shouldStop?.() && step < totalSteps) {
        if (step % o.saveEvery !== 0) await checkpoint();
        log(`stopped at step ${step}; checkpoint written. Resume with: npm run train -- --resume ${runDir}`);
        stoppedEarly = true;
        break;
      }
    }
  } catch (e) {
    await loader.close();
    optimizer.dispose();
    oomHelp(e, o);
  }
  await loader.close();
  optimizer.dispose();
  if (loader.badCount > 0) log(`warning: skipped ${loader.badCount} unreadable image file(s) of ${loader.seenCount} decoded (pairs with them were left out of their batches)`);
  if (step === startStep && step === totalSteps) log(`nothing to do: the run is already at step ${step}/${totalSteps}`);
  return { runDir, steps: step, stoppedEarly, lastLoss, valPairs, model: loaded, lora: student.lora, projection: student.projection, pre, teacherCache: cache };
}
