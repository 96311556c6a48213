// CLIP pretraining (Radford et al. 2021): both towers trained in full, every weight a Parameter,
// with the symmetric image↔text InfoNCE and a learnable logit scale.
//
// One step, top to bottom:
//   pixels [B, 3, H, W] → vision tower → image embeddings [B, P]
//   token ids [B][N]    → text tower   → text embeddings  [B, P]
//   loss = ½ (CE over rows + CE over columns) of S = î t̂ᵀ · exp(logit_scale)     (HF CLIPModel's clip_loss)
//   backward → AdamW (global-norm clipping, decoupled decay on the weight matrices) → clamp logit_scale
//
// The loss is the fused infoNceGenToReal with `symmetric` and a learnable temperature
// (logTau = −logit_scale). That op treats its second input as a frozen teacher: it returns no
// gradient for r. The symmetric loss is symmetric in its two inputs (S(t, i) = S(i, t)ᵀ: the
// row and column terms swap), so the text tower's gradient is that of a second call with the
// roles swapped, infoNce(text, image), whose temperature is a no-grad copy: the logit scale takes
// its gradient from the first call only. The two calls' graphs are disjoint (image tower +
// logit_scale; text tower), and one backward through their sum gives every gradient once.
//
// logit_scale is HF's CLIPModel parameter of that name, log(1/τ), initialised to log(1/0.07) and
// clamped to at most log(100) after each update, as CLIP's training does.
//
// Weight decay, as CLIP's and open_clip's training: the weight matrices (linear layers, the patch
// embedding, both projections) decay; biases, LayerNorm gains and biases, the token, position and
// class embeddings and logit_scale do not. Decaying the token table would shrink the rows of
// tokens a batch does not use towards 0 (their gradient is 0, so only the decay acts on them).
import type { ClipVisionModel } from '../nn/vit.ts';
import type { ClipTextModel } from '../nn/text.ts';
import { Parameter, Tensor, fromArray, scope, shapeStr } from '../tensor/tensor.ts';
import { backward, noGrad } from '../tensor/autograd.ts';
import { add, infoNceGenToReal, neg } from '../ops/index.ts';
import { AdamW } from './optimizer.ts';
import { learningRate } from './schedule.ts';

/** HF CLIPConfig's logit_scale_init_value: log(1/0.07), a temperature of 0.07. */
export const INIT_LOGIT_SCALE = Math.log(1 / 0.07);
/** CLIP clamps logit_scale here (a temperature of at least 0.01). */
export const MAX_LOGIT_SCALE = Math.log(100);

export interface ClipPretrainOptions {
  /** Peak learning rate (after warmup). */
  lr: number;
  /** Learning rate at the end of the cosine (default 0). */
  minLr?: number;
  /** Linear warmup steps (default 0). */
  warmupSteps?: number;
  /** Steps of the whole run: the cosine decays from lr to minLr over the steps after warmup. */
  totalSteps: number;
  /** Decoupled weight decay of the weight matrices (default 0.2, CLIP's). */
  weightDecay?: number;
  /** Adam betas (default [0.9, 0.98], CLIP's). */
  betas?: [number, number];
  /** Adam epsilon (default 1e-6, CLIP's). */
  eps?: number;
  /** Clip the global gradient norm to this (default 1; 0 = off). */
  maxGradNorm?: number;
  /** Initial logit_scale (default INIT_LOGIT_SCALE). */
  logitScale?: number;
}

export interface ClipStepResult {
  /** The symmetric InfoNCE of the batch, before the update. */
  loss: number;
  /** Fraction of images whose best-scoring caption in the batch is their own. */
  accuracy: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** The learning rate this step used. */
  lr: number;
  /** logit_scale after the update (and the clamp). */
  logitScale: number;
}

/** Whether AdamW decays parameter `name` (an HF name; see the file header). */
export function decaysWeight(name: string): boolean {
  if (!name.endsWith('.weight')) return false; // biases, class_embedding, logit_scale
  if (/norm|layrnorm/.test(name)) return false;
  if (name.endsWith('token_embedding.weight') || name.endsWith('position_embedding.weight')) return false;
  return true;
}

/**
 * Trains a vision tower and a text tower together. Takes the two models (f32) and makes every
 * weight of both trainable in place; the models stay the caller's to dispose. The pretrainer
 * owns logit_scale and the optimizer state: dispose() frees them.
 */
export class ClipPretrainer {
  readonly logitScale: Parameter;
  /** Every trainable tensor: the decayed ones first, then the rest (one AdamW range each). */
  readonly parameters: Parameter[];
  private readonly optimizer: AdamW;
  private readonly opts: Required<Omit<ClipPretrainOptions, 'logitScale'>>;
  private steps = 0;

  constructor(
    readonly vision: ClipVisionModel,
    readonly text: ClipTextModel,
    opts: ClipPretrainOptions,
  ) {
    if (vision.cfg.projectionDim !== text.cfg.projectionDim) {
      throw new Error(`ClipPretrainer: the towers' projection_dim differ (vision ${vision.cfg.projectionDim}, text ${text.cfg.projectionDim}); both must project into one space`);
    }
    if (!Number.isInteger(opts.totalSteps) || opts.totalSteps < 1) throw new Error(`ClipPretrainer: totalSteps must be a positive integer, got ${opts.totalSteps}`);
    const warmupSteps = opts.warmupSteps ?? 0;
    if (!Number.isInteger(warmupSteps) || warmupSteps < 0 || warmupSteps > opts.totalSteps) throw new Error(`ClipPretrainer: warmupSteps must be an integer in 0..totalSteps (${opts.totalSteps}), got ${warmupSteps}`);
    const init = opts.logitScale ?? INIT_LOGIT_SCALE;
    if (!Number.isFinite(init) || init > MAX_LOGIT_SCALE) throw new Error(`ClipPretrainer: logitScale must be a finite number ≤ log(100) = ${MAX_LOGIT_SCALE.toFixed(4)}, got ${init}`);
    this.opts = { lr: opts.lr, minLr: opts.minLr ?? 0, warmupSteps, totalSteps: opts.totalSteps, weightDecay: opts.weightDecay ?? 0.2, betas: opts.betas ?? [0.9, 0.98], eps: opts.eps ?? 1e-6, maxGradNorm: opts.maxGradNorm ?? 1 };

    const all = [...vision.trainableParameters(), ...text.trainableParameters()];
    this.logitScale = Parameter.fromTensor(fromArray([init], [], vision.device), 'logit_scale');
    const decayed = all.filter((p) => decaysWeight(p.name!));
    const rest = [...all.filter((p) => !decaysWeight(p.name!)), this.logitScale];
    this.parameters = [...decayed, ...rest];
    try {
      this.optimizer = new AdamW(this.parameters, { lr: this.opts.lr, betas: this.opts.betas, eps: this.opts.eps, weightDecay: this.opts.weightDecay, maxGradNorm: this.opts.maxGradNorm, noWeightDecay: rest });
    } catch (e) {
      this.logitScale.dispose();
      throw e;
    }
  }

  /** Number of updates so far. */
  get stepCount(): number {
    return this.steps;
  }

  /** The learning rate of update `step` (0-based): linear warmup, then cosine to minLr. */
  learningRate(step: number): number {
    const o = this.opts;
    return learningRate(step, { baseLr: o.lr, minLr: o.minLr, warmupSteps: o.warmupSteps, totalSteps: o.totalSteps, restartPeriod: 0, restartMult: 1 });
  }

  /**
   * Forward and backward of one batch: leaves every parameter's gradient in .grad (added to what
   * is there) and returns the loss and the image→text top-1 accuracy (scalars the caller owns).
   */
  lossAndGradients(pixels: Tensor, ids: readonly (readonly number[])[]): { loss: Tensor; accuracy: Tensor } {
    if (pixels.shape[0] !== ids.length) throw new Error(`ClipPretrainer: ${pixels.shape[0]} images (pixels ${shapeStr(pixels.shape)}) but ${ids.length} captions; each image needs its caption`);
    if (ids.length < 2) throw new Error('ClipPretrainer: a batch needs at least 2 pairs (the other pairs are the negatives)');
    return scope(() => {
      const image = this.vision.forward(pixels);
      const text = this.text.forward(ids);
      const imageToText = infoNceGenToReal(image, text, { symmetric: true, logTau: neg(this.logitScale) });
      const fixedLogTau = noGrad(() => neg(this.logitScale));
      const textToImage = infoNceGenToReal(text, image, { symmetric: true, logTau: fixedLogTau });
      backward(add(imageToText.loss, textToImage.loss));
      return { loss: imageToText.loss, accuracy: imageToText.accuracy };
    });
  }

  /** One training step on a batch of (image, caption) pairs. */
  async step(pixels: Tensor, ids: readonly (readonly number[])[]): Promise<ClipStepResult> {
    this.optimizer.zeroGrad();
    const lr = this.learningRate(this.steps);
    const { loss, accuracy } = this.lossAndGradients(pixels, ids);
    const norm = this.optimizer.step(lr);
    this.optimizer.zeroGrad();
    this.steps++;
    try {
      const [l, a, n, s] = [await loss.item(), await accuracy.item(), await norm.item(), await this.logitScale.item()];
      let logitScale = s;
      if (s > MAX_LOGIT_SCALE) {
        this.logitScale.write(new Float32Array([MAX_LOGIT_SCALE]));
        logitScale = Math.fround(MAX_LOGIT_SCALE);
      }
      return { loss: l, accuracy: a, gradNorm: n, lr, logitScale };
    } finally {
      loss.dispose();
      accuracy.dispose();
      norm.dispose();
    }
  }

  /** Frees logit_scale and the optimizer state (the towers are the caller's). */
  dispose(): void {
    this.optimizer.dispose();
    this.logitScale.dispose();
  }
}
