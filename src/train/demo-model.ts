// The demo's teacher: a tiny CLIP pretrained from scratch on the demo dataset's real images and
// their captions (scripts/make-demo-model.ts runs it and commits the result to models/demo-clip).
//
//   demo dataset (ensureDemoDataset) → the trainer's held-out split (the demo's --val-fraction and
//   --seed), so the demo's final eval runs on pairs this model never saw → real images
//   preprocessed as the model's preprocessor_config.json says → ClipPretrainer on the train
//   pairs, each image in one of its 8 dihedral orientations (rotations and flips: the captions say
//   which shapes, colours and background a scene has, never where or which way up, so all 8 fit
//   the caption) → retrieval and zero-shot measured on the train and held-out pairs.
//
// Everything is seeded (initial weights, batch order, orientations) and the GPU work is the same
// from run to run, so two runs give the same bytes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../gpu/device.ts';
import { loadDataset, MANIFEST_NAME, splitByValFraction, type Pair } from '../io/dataset.ts';
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
/** The zero-shot prompt. */
export const DEMO_PROMPT = 'a photo of a {}.';

export interface DemoModelOptions {
  /** The demo dataset (ensureDemoDataset's folder). */
  dataDir: string;
  tokenizer: ClipTokenizer;
  device: Device;
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
  train: RetrievalScores;
  heldOut: RetrievalScores;
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

/** The image tower: the tiny preset (32 px, 8 px patches, width 64, 2 layers, projection 32). */
export function demoVisionConfig(): ClipVisionConfig {
  return { ...NAMED_CONFIGS.tiny };
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

/** The pairs with their captions and labels (`label` is read from pairs.jsonl when it has one). */
function examples(dataDir: string): Example[] {
  const labels = new Map<string, string>();
  for (const line of readFileSync(join(dataDir, MANIFEST_NAME), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const j = JSON.parse(line) as { id?: unknown; label?: unknown };
    if (typeof j.id === 'string' && typeof j.label === 'string') labels.set(j.id, j.label);
  }
  return loadDataset(dataDir).pairs.map((pair) => {
    if (pair.caption === undefined) throw new Error(`${dataDir}: pair '${pair.id}' has no caption; CLIP pretraining needs one per image`);
    return { pair, caption: pair.caption, label: labels.get(pair.id) ?? null };
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
  const train = trainPairs.map((p) => byId.get(p.id)!);
  const heldOut = valPairs.map((p) => byId.get(p.id)!);
  if (train.length < o.batch) throw new Error(`demo model: ${train.length} training pairs, fewer than a batch of ${o.batch}`);

  const visionCfg = demoVisionConfig();
  const S = visionCfg.imageSize;
  const pre = defaultPreprocess(S);
  const pixelsOf = async (ex: readonly Example[]): Promise<Float32Array> => {
    const out = new Float32Array(ex.length * 3 * S * S);
    for (let i = 0; i < ex.length; i++) out.set(await preprocessImage(ex[i].pair.real, pre), i * 3 * S * S);
    return out;
  };
  const trainPixels = await pixelsOf(train);
  const heldOutPixels = await pixelsOf(heldOut);
  const trainIds = tokenize(o.tokenizer, train.map((e) => e.caption));

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
        last = await pretrainer.step(px, picked.map((ix) => trainIds[ix]));
      } finally {
        px.dispose();
      }
      first ??= last;
      if (o.logEvery && ((step + 1) % o.logEvery === 0 || step === o.steps - 1)) {
        log(`step ${step + 1}/${o.steps}  loss ${last.loss.toFixed(4)}  batch acc ${last.accuracy.toFixed(3)}  lr ${last.lr.toExponential(2)}  logit_scale ${last.logitScale.toFixed(3)}`);
      }
    }
    const report: DemoModelReport = {
      train: await retrievalScores(vision, text, o.tokenizer, trainPixels, train),
      heldOut: await retrievalScores(vision, text, o.tokenizer, heldOutPixels, heldOut),
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
