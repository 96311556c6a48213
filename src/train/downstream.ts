// The paper's downstream measures on host embedding matrices (row-major [n, dim] Float32Arrays):
//
//   retrieval  text→image and image→text R@K among n (image_i, caption_i) pairs, K = 1, 5, 10,
//              with eval's rank and tie rule (src/train/metrics.ts retrievalRanks: rank_i =
//              1 + #{j : s_ij > s_ii}, cosine similarities, so a caption listed twice counts in
//              the query's favour);
//   zero-shot  CLIP's prompt ensembling: each template filled with the class name, the text
//              embeddings normalised, averaged over templates, normalised again; an image's
//              class scores are cosines with those; top-1 / top-5 accuracy per class and overall
//              (an image is top-k correct when fewer than k OTHER classes score at least as high
//              as its own: a tie counts against it, so a model that cannot tell classes apart,
//              e.g. every prompt pooled at the same token, scores 0 rather than 100%);
//   probe      multinomial logistic regression ("train on generated, test on real"), fitted on
//              the GPU with genalign's own linear, crossEntropy, backward and AdamW, full batch,
//              from zero weights (so deterministic: the kernels sum in a fixed order).
import type { Device } from '../gpu/device.ts';
import { fromArray, parameter, scope } from '../tensor/tensor.ts';
import { backward, noGrad } from '../tensor/autograd.ts';
import { crossEntropy, linear } from '../ops/index.ts';
import { AdamW } from './optimizer.ts';
import { retrievalRanks } from './metrics.ts';
import { mulberry32 } from '../io/loader.ts';

export const RETRIEVAL_KS = [1, 5, 10] as const;

/** R@K (K = 1, 5, 10) of text→image and image→text over n pairs, keyed `t2i_r<K>_<suffix>` / `i2t_r<K>_<suffix>`. */
export function retrievalMetrics(images: Float32Array, texts: Float32Array, n: number, dim: number, suffix: string): Record<string, number> {
  const out: Record<string, number> = {};
  const t2i = retrievalRanks(texts, images, n, dim);
  const i2t = retrievalRanks(images, texts, n, dim);
  for (const k of RETRIEVAL_KS) {
    out[`t2i_r${k}_${suffix}`] = fractionAtMost(t2i, k);
    out[`i2t_r${k}_${suffix}`] = fractionAtMost(i2t, k);
  }
  return out;
}

function fractionAtMost(ranks: Int32Array, k: number): number {
  let hits = 0;
  for (const r of ranks) if (r <= k) hits++;
  return ranks.length ? hits / ranks.length : 0;
}

/** Normalises each row in place (float64 norm); a zero row is an error naming `what`. */
export function normalizeRows(x: Float32Array, n: number, dim: number, what: string): Float32Array {
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += x[i * dim + j] * x[i * dim + j];
    const norm = Math.sqrt(s);
    if (!(norm > 0) || !Number.isFinite(norm)) throw new Error(`${what}: row ${i} has norm ${norm}; cannot normalise it (is the model producing zero or non-finite embeddings?)`);
    for (let j = 0; j < dim; j++) x[i * dim + j] /= norm;
  }
  return x;
}

/**
 * Class embeddings by prompt ensembling. `prompts` is [templates × classes, dim] in template-major
 * order (row t·C + c is template t filled with class c), unnormalised; returns [C, dim], unit rows.
 */
export function ensembleClassEmbeddings(prompts: Float32Array, templates: number, classes: number, dim: number): Float32Array {
  if (prompts.length !== templates * classes * dim) throw new Error(`ensembleClassEmbeddings: got ${prompts.length} values for ${templates} templates × ${classes} classes × ${dim}`);
  const unit = normalizeRows(Float32Array.from(prompts), templates * classes, dim, 'zero-shot prompt embeddings');
  const out = new Float32Array(classes * dim);
  for (let t = 0; t < templates; t++) {
    for (let c = 0; c < classes; c++) for (let j = 0; j < dim; j++) out[c * dim + j] += unit[(t * classes + c) * dim + j];
  }
  return normalizeRows(out, classes, dim, 'zero-shot class embeddings');
}

export interface ClassAccuracy {
  name: string;
  n: number;
  top1: number;
  top5: number;
}

export interface ZeroShotResult {
  top1: number;
  top5: number;
  n: number;
  per_class: ClassAccuracy[];
}

/** Zero-shot accuracy of images (unnormalised rows) with labels in [0, C) against unit class embeddings. */
export function zeroShotAccuracy(images: Float32Array, labels: readonly number[], classEmb: Float32Array, classNames: readonly string[], dim: number): ZeroShotResult {
  const n = labels.length;
  const C = classNames.length;
  const x = normalizeRows(Float32Array.from(images), n, dim, 'zero-shot image embeddings');
  const hit1 = new Array<number>(C).fill(0);
  const hit5 = new Array<number>(C).fill(0);
  const count = new Array<number>(C).fill(0);
  const scores = new Float64Array(C);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += x[i * dim + j] * classEmb[c * dim + j];
      scores[c] = s;
    }
    const y = labels[i];
    let above = 0;
    for (let c = 0; c < C; c++) if (c !== y && scores[c] >= scores[y]) above++;
    count[y]++;
    if (above < 1) hit1[y]++;
    if (above < 5) hit5[y]++;
  }
  const sum = (a: number[]): number => a.reduce((s, v) => s + v, 0);
  return {
    top1: n ? sum(hit1) / n : 0,
    top5: n ? sum(hit5) / n : 0,
    n,
    per_class: classNames.map((name, c) => ({ name, n: count[c], top1: count[c] ? hit1[c] / count[c] : 0, top5: count[c] ? hit5[c] / count[c] : 0 })),
  };
}

export interface ProbeOptions {
  /** Full-batch AdamW steps. Default 300. */
  steps?: number;
  /** Default 0.1 (features are unit vectors scaled by `featureScale`). */
  lr?: number;
  /** Default 1e-4. */
  weightDecay?: number;
  /** Features are multiplied by this before the fit (unit rows give tiny logits otherwise). Default √dim. */
  featureScale?: number;
}

export interface LinearProbe {
  /** [C, dim] and [C], on the host. */
  weight: Float32Array;
  bias: Float32Array;
  classes: number;
  dim: number;
  featureScale: number;
  /** Mean cross-entropy on the training set after the last step. */
  trainLoss: number;
}

/**
 * Fits a multinomial logistic regression on normalised `x` ([n, dim], normalised here) with
 * labels in [0, classes) on the GPU: logits = linear(s·x̂, W, b), mean cross-entropy, AdamW.
 */
export async function fitLinearProbe(device: Device, x: Float32Array, labels: readonly number[], classes: number, dim: number, opts: ProbeOptions = {}): Promise<LinearProbe> {
  const n = labels.length;
  if (n === 0) throw new Error('probe: no training images');
  if (x.length !== n * dim) throw new Error(`probe: ${x.length} feature values for ${n} labels × ${dim}`);
  const steps = opts.steps ?? 300;
  const featureScale = opts.featureScale ?? Math.sqrt(dim);
  const feats = normalizeRows(Float32Array.from(x), n, dim, 'probe training embeddings').map((v) => v * featureScale);
  const X = fromArray(feats, [n, dim], device).keep();
  const W = parameter(new Float32Array(classes * dim), [classes, dim], 'probe.weight', device);
  const b = parameter(new Float32Array(classes), [classes], 'probe.bias', device);
  const opt = new AdamW([W, b], { lr: opts.lr ?? 0.1, weightDecay: opts.weightDecay ?? 1e-4 });
  try {
    let lastLoss = scope(() => fromArray([0], [], device).keep());
    for (let s = 0; s < steps; s++) {
      const loss = scope(() => {
        const l = crossEntropy(linear(X, W, b), labels);
        backward(l);
        opt.step().dispose();
        opt.zeroGrad();
        return l.keep();
      });
      lastLoss.dispose();
      lastLoss = loss;
    }
    const trainLoss = (await lastLoss.read())[0];
    lastLoss.dispose();
    return { weight: await W.read(), bias: await b.read(), classes, dim, featureScale, trainLoss };
  } finally {
    opt.dispose();
    W.dispose();
    b.dispose();
    X.dispose();
  }
}

/** Top-1 accuracy of a fitted probe on `x` ([n, dim], normalised here) with `labels`, on the GPU. */
export async function probeAccuracy(device: Device, probe: LinearProbe, x: Float32Array, labels: readonly number[]): Promise<number> {
  const n = labels.length;
  if (n === 0) return 0;
  const feats = normalizeRows(Float32Array.from(x), n, probe.dim, 'probe test embeddings').map((v) => v * probe.featureScale);
  const logits = scope(() =>
    noGrad(() => linear(fromArray(feats, [n, probe.dim], device), fromArray(probe.weight, [probe.classes, probe.dim], device), fromArray(probe.bias, [probe.classes], device))).keep(),
  );
  let host: Float32Array;
  try {
    host = await logits.read();
  } finally {
    logits.dispose();
  }
  let correct = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < probe.classes; c++) if (host[i * probe.classes + c] > host[i * probe.classes + best]) best = c;
    if (best === labels[i]) correct++;
  }
  return correct / n;
}

/**
 * A fixed split of `n` items for the real→real ceiling: a seeded shuffle (mulberry32, a
 * Fisher–Yates pass) per class, the first half of each class (rounded down, at least one item
 * left for testing) for fitting, the rest for testing.
 */
export function stratifiedHalves(labels: readonly number[], seed: number): { fit: number[]; test: number[] } {
  const byClass = new Map<number, number[]>();
  labels.forEach((y, i) => byClass.set(y, [...(byClass.get(y) ?? []), i]));
  const rand = mulberry32(seed);
  const fit: number[] = [];
  const test: number[] = [];
  for (const y of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = byClass.get(y)!;
    for (let i = idx.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    const k = Math.min(Math.floor(idx.length / 2), idx.length - 1);
    fit.push(...idx.slice(0, k));
    test.push(...idx.slice(k));
  }
  return { fit: fit.sort((a, b) => a - b), test: test.sort((a, b) => a - b) };
}
