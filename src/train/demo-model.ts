// The demo's teacher: a tiny CLIP pretrained from scratch on procedural "real" scenes of the demo
// dataset's generator and their captions (scripts/make-demo-model.ts runs it and commits the
// result to models/demo-clip).
//
//   the demo dataset (ensureDemoDataset) → the demo trainer's held-out split (its --val-fraction
//   and --seed), never trained on → training pairs: `extraDataDir`, more real scenes of the same
//   generator built with another seed (the script's default: 2048 of them), or without it the
//   demo's own train split (200 pairs, which a model this size memorises rather than learns
//   from: docs/benchmarks.md) → real images preprocessed as the model's
//   preprocessor_config.json says → ClipPretrainer, each image in one of its 8 dihedral
//   orientations (rotations and flips: the captions say which shapes, colours and background a
//   scene has, never where or which way up, so all 8 fit the caption), its caption read half of
//   the time as "a photo of a <caption>" (web alt-text, CLIP's data, often starts so; without it
//   the words of CLIP's zero-shot prompt "a photo of a {}." would be tokens the model never saw)
//   → retrieval and zero-shot measured on the trained-on, held-out and unseen demo pairs. The
//   class words of the zero-shot prompt are learned only from the captions, which name every
//   shape; the labels themselves are never trained on.
//
// Everything is seeded (initial weights, batch order, orientations, prefixes) and the GPU work
// is the same from run to run, so two runs give the same bytes.
import type { Device } from '../gpu/device.ts';
import { loadDataset, splitByValFraction, type Pair } from '../io/dataset.ts';
import { defaultPreprocess, preprocessImage } from '../io/image.ts';
import type { ClipTokenizer } from '../io/tokenizer.ts';
import { NAMED_CONFIGS, NAMED_TEXT_CONFIGS, type ClipTextConfig, type ClipVisionConfig } from '../nn/config.ts';
import { mulberry32 } from '../nn/init.ts';
import { ClipTextModel } from '../nn/text.ts';
import { ClipVisionModel } from '../nn/vit.ts';
import { noGrad } from '../tensor/autograd.ts';
import { fromArray, type Tensor } from '../tensor/tensor.ts';
import { ClipPretrainer, type ClipStepResult } from './clip-pretrain.ts';
import { retrievalRanks } from './metrics.ts';

/** The classes of the demo's `label` field (the kind of the largest shape of a scene). */
export const DEMO_CLASSES = ['circle', 'ring', 'square', 'diamond', 'triangle', 'bar'] as const;
/** Retrieval on the training pairs is measured among the first this many (the demo's train split has 200). */
export const EVAL_PAIRS = 200;
/** Put in front of half of the training captions (see the file header). */
export const CAPTION_PREFIX = 'a photo of a ';
/** The zero-shot prompt. */
export const DEMO_PROMPT = 'a photo of a {}.';

export interface DemoModelOptions {
  /** The demo dataset (ensureDemoDataset's folder): its held-out split is measured, never trained on. */
  dataDir: string;
  /**
   * More scenes from the demo's generator to train on (another ensureDemoDataset folder, other
   * seed): then every pair of it is trained on and none of dataDir, whose train split is measured
   * as unseen data too. Without it the model trains on dataDir's train split.
   */
  extraDataDir?: string;
  tokenizer: ClipTokenizer;
  device: Device;
  /** Side of the model's images in pixels (demoVisionConfig; default 32). */
  imageSize?: number;
  /** Optimizer steps. */
  steps: number;
  /** Pairs per step. */
  batch: number;
  /** Peak learning rate. */
  lr: number;
  /** Linear warmup steps. */
  warmup: number;
  /** Seed of the initial weights, the batch order and the orientations. */
  seed: number;
  /** Held-out fraction and its seed: the demo trainer's (--val-fraction, --seed). */
  valFraction: number;
  splitSeed: number;
  /** Steps between progress lines (0: none). */
  logEvery?: number;
  log?: (line: string) => void;
}

export interface RetrievalScores {
  n: number;
  /** image → text and text → image recall at 1 and 5. */
  i2t_r1: number;
  i2t_r5: number;
  t2i_r1: number;
  t2i_r5: number;
  /** Zero-shot top-1 accuracy on the `label` of each pair ("a photo of a {label}."); null when the data has no labels. */
  zeroshot: number | null;
}

export interface DemoModelReport {
  /** Pairs trained on (the first EVAL_PAIRS of them). */
  train: RetrievalScores;
  /** The demo's held-out pairs. */
  heldOut: RetrievalScores;
  /** The demo's train split, when the model trained on extraDataDir instead (unseen then). */
  demoTrain: RetrievalScores | null;
  /** Pairs trained on. */
  trainPairs: number;
  /** Loss of the first and last step. */
  firstLoss: number;
  lastLoss: number;
  logitScale: number;
  steps: number;
}

export interface DemoModel {
  vision: ClipVisionModel;
  text: ClipTextModel;
  logitScale: number;
  report: DemoModelReport;
}

/**
 * The image tower: the tiny preset (width 64, 2 layers, 4 heads, projection 32) at `imageSize`
 * pixels (default the preset's 32) cut into 4 × 4 patches, so it always has 17 tokens; a larger
 * image only widens the patch embedding.
 */
export function demoVisionConfig(imageSize: number = NAMED_CONFIGS.tiny.imageSize): ClipVisionConfig {
  if (!Number.isInteger(imageSize) || imageSize < 4 || imageSize % 4 !== 0) throw new Error(`demo model: image size must be a multiple of 4 pixels, got ${imageSize}`);
  return { ...NAMED_CONFIGS.tiny, imageSize, patchSize: imageSize / 4 };
}

/** The text tower: the tiny preset's sizes with the tokenizer's vocabulary and special ids. */
export function demoTextConfig(tokenizer: ClipTokenizer): ClipTextConfig {
  return { ...NAMED_TEXT_CONFIGS.tiny, vocabSize: tokenizer.vocabSize, bosTokenId: tokenizer.bosId, eosTokenId: tokenizer.eosId, padTokenId: tokenizer.padId };
}

interface Example {
  pair: Pair;
  caption: string;
  label: string | null;
}

/** The pairs with their captions and labels. */
function examples(dataDir: string): Example[] {
  return loadDataset(dataDir).pairs.map((pair) => {
    if (pair.caption === undefined) throw new Error(`${dataDir}: pair '${pair.id}' has no caption; CLIP pretraining needs one per image`);
    return { pair, caption: pair.caption, label: pair.label ?? null };
  });
}

/** Image `src` [3, S, S] in dihedral orientation k (0..7: k & 3 quarter turns, then a flip when k & 4). */
function orient(src: Float32Array, S: number, k: number): Float32Array {
  if (k === 0) return src;
  const out = new Float32Array(src.length);
  for (let c = 0; c < 3; c++) {
    const base = c * S * S;
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        let u = x;
        let v = y;
        for (let r = 0; r < (k & 3); r++) [u, v] = [S - 1 - v, u];
        if (k & 4) u = S - 1 - u;
        out[base + v * S + u] = src[base + y * S + x];
      }
    }
  }
  return out;
}

/** Token ids of every caption, padded to the longest (CLIP's pad token after the end-of-text). */
function tokenize(tokenizer: ClipTokenizer, texts: readonly string[]): number[][] {
  const longest = Math.max(...texts.map((t) => tokenizer.encode(t).ids.length));
  return texts.map((t) => tokenizer.encode(t, { padding: true, maxLength: longest }).ids);
}

/** L2-normalised embeddings of every row, in chunks of `batch`. */
async function embed(n: number, batch: number, run: (from: number, to: number) => Tensor): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for (let from = 0; from < n; from += batch) {
    const e = noGrad(() => run(from, Math.min(n, from + batch)));
    parts.push(await e.read());
    e.dispose();
  }
  const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return all;
}

function recall(ranks: Int32Array, k: number): number {
  let hits = 0;
  for (const r of ranks) if (r <= k) hits++;
  return hits / ranks.length;
}

/** Retrieval among the pairs `ex` (pixels in the same order) and zero-shot accuracy on their labels. */
export async function retrievalScores(vision: ClipVisionModel, text: ClipTextModel, tokenizer: ClipTokenizer, pixels: Float32Array, ex: readonly Example[]): Promise<RetrievalScores> {
  const S = vision.cfg.imageSize;
  const P = vision.cfg.projectionDim;
  const n = ex.length;
  const img = await embed(n, 64, (a, b) => {
    const px = fromArray(pixels.subarray(a * 3 * S * S, b * 3 * S * S), [b - a, 3, S, S], vision.device);
    const e = vision.forward(px);
    px.dispose();
    return e;
  });
  const ids = tokenize(tokenizer, ex.map((e) => e.caption));
  const txt = await embed(n, 64, (a, b) => text.forward(ids.slice(a, b)));
  const i2t = retrievalRanks(img, txt, n, P);
  const t2i = retrievalRanks(txt, img, n, P);
  let zeroshot: number | null = null;
  if (ex.every((e) => e.label !== null)) {
    const classIds = tokenize(tokenizer, DEMO_CLASSES.map((c) => DEMO_PROMPT.replace('{}', c)));
    const cls = await embed(DEMO_CLASSES.length, 64, (a, b) => text.forward(classIds.slice(a, b)));
    const unit = (v: Float32Array, i: number): Float32Array => {
      const row = v.subarray(i * P, (i + 1) * P);
      const norm = Math.hypot(...row) || 1;
      return row.map((x) => x / norm);
    };
    const classes = DEMO_CLASSES.map((_, c) => unit(cls, c));
    let right = 0;
    ex.forEach((e, i) => {
      const u = unit(img, i);
      const scores = classes.map((c) => c.reduce((s, x, j) => s + x * u[j], 0));
      // Ties count against the image, as in `npm run zeroshot`.
      const want = DEMO_CLASSES.indexOf(e.label as (typeof DEMO_CLASSES)[number]);
      if (want >= 0 && scores.every((s, c) => c === want || s < scores[want])) right++;
    });
    zeroshot = right / n;
  }
  return { n, i2t_r1: recall(i2t, 1), i2t_r5: recall(i2t, 5), t2i_r1: recall(t2i, 1), t2i_r5: recall(t2i, 5), zeroshot };
}

/** Pretrains the demo CLIP (see the file header). The caller owns (and disposes) the returned towers. */
export async function pretrainDemoModel(o: DemoModelOptions): Promise<DemoModel> {
  const log = o.log ?? (() => undefined);
  const all = examples(o.dataDir);
  const { train: trainPairs, val: valPairs } = splitByValFraction(all.map((e) => e.pair), o.valFraction, o.splitSeed);
  const byId = new Map(all.map((e) => [e.pair.id, e]));
  const demoTrain = trainPairs.map((p) => byId.get(p.id)!);
  const heldOut = valPairs.map((p) => byId.get(p.id)!);
  const train = o.extraDataDir ? examples(o.extraDataDir) : demoTrain;
  if (train.length < o.batch) throw new Error(`demo model: ${train.length} training pairs, fewer than a batch of ${o.batch}`);

  const visionCfg = demoVisionConfig(o.imageSize);
  const S = visionCfg.imageSize;
  const pre = defaultPreprocess(S);
  const pixelsOf = async (ex: readonly Example[]): Promise<Float32Array> => {
    const out = new Float32Array(ex.length * 3 * S * S);
    for (let i = 0; i < ex.length; i++) out.set(await preprocessImage(ex[i].pair.real, pre), i * 3 * S * S);
    return out;
  };
  const trainPixels = await pixelsOf(train);
  const heldOutPixels = await pixelsOf(heldOut);
  const measuredTrain = train.slice(0, EVAL_PAIRS);
  // Half of the time a caption is read with CAPTION_PREFIX in front (see the file header).
  const bothIds = tokenize(o.tokenizer, [...train.map((e) => e.caption), ...train.map((e) => CAPTION_PREFIX + e.caption)]);
  const captionIds = (ix: number, prefixed: boolean): number[] => bothIds[prefixed ? train.length + ix : ix];

  const vision = ClipVisionModel.random(visionCfg, o.seed, o.device);
  const text = ClipTextModel.random(demoTextConfig(o.tokenizer), o.seed + 1, o.device);
  const pretrainer = new ClipPretrainer(vision, text, { lr: o.lr, warmupSteps: o.warmup, totalSteps: o.steps });
  try {
    log(`demo model: ${train.length} train pairs, ${heldOut.length} held out; ${o.steps} steps of ${o.batch}; ${pretrainer.parameters.reduce((a, p) => a + p.size, 0)} parameters`);
    const rnd = mulberry32(o.seed ^ 0xc11e);
    let order: number[] = [];
    let first: ClipStepResult | null = null;
    let last: ClipStepResult | null = null;
    const img = 3 * S * S;
    for (let step = 0; step < o.steps; step++) {
      if (order.length < o.batch) {
        const perm = train.map((_, i) => i);
        for (let i = perm.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [perm[i], perm[j]] = [perm[j], perm[i]];
        }
        order = perm;
      }
      const picked = order.splice(0, o.batch);
      const batch = new Float32Array(o.batch * img);
      picked.forEach((ix, b) => batch.set(orient(trainPixels.subarray(ix * img, (ix + 1) * img), S, Math.floor(rnd() * 8)), b * img));
      const px = fromArray(batch, [o.batch, 3, S, S], o.device);
      try {
        last = await pretrainer.step(px, picked.map((ix) => captionIds(ix, rnd() < 0.5)));
      } finally {
        px.dispose();
      }
      first ??= last;
      if (o.logEvery && ((step + 1) % o.logEvery === 0 || step === o.steps - 1)) {
        log(`step ${step + 1}/${o.steps}  loss ${last.loss.toFixed(4)}  batch acc ${last.accuracy.toFixed(3)}  lr ${last.lr.toExponential(2)}  logit_scale ${last.logitScale.toFixed(3)}`);
      }
    }
    const report: DemoModelReport = {
      train: await retrievalScores(vision, text, o.tokenizer, trainPixels.subarray(0, measuredTrain.length * img), measuredTrain),
      heldOut: await retrievalScores(vision, text, o.tokenizer, heldOutPixels, heldOut),
      demoTrain: o.extraDataDir ? await retrievalScores(vision, text, o.tokenizer, await pixelsOf(demoTrain), demoTrain) : null,
      trainPairs: train.length,
      firstLoss: first?.loss ?? NaN,
      lastLoss: last?.loss ?? NaN,
      logitScale: await pretrainer.logitScale.item(),
      steps: o.steps,
    };
    return { vision, text, logitScale: report.logitScale, report };
  } catch (e) {
    vision.dispose();
    text.dispose();
    throw e;
  } finally {
    pretrainer.dispose();
  }
}
