// CLIP vision transformer, computing what HF CLIPVisionModelWithProjection computes:
//   patch embedding (stride-P conv without bias, as unfold + matmul) → prepend class embedding
//   → + position embedding → pre_layrnorm → the shared pre-norm encoder (encoder.ts, unmasked)
//   → post_layernorm on the CLS token → visual_projection (no bias).
//
// Weights are frozen Tensors keyed by HF names. The teacher runs the model under noGrad; the
// student runs the same weights with a LoraAdapter (every adapted linear layer is one fused
// LoRA projection) and optionally its own trainable projection ("dual projection").
import { Tensor, shapeStr, type DType, type Parameter } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import { add, gatherRows, layerNorm, matmul, patchify, reshape, concat } from '../ops/index.ts';
import type { ClipVisionConfig } from './config.ts';
import { numPatches, numTokens } from './config.ts';
import type { LoraAdapter } from './lora.ts';
import { addEncoderShapes, asStorage, checkWeights, disposeAll, makeTrainable, projectPooled, randomWeights, runEncoder } from './encoder.ts';

/** Every tensor the vision model needs, with its expected shape (HF names). */
export function expectedShapes(cfg: ClipVisionConfig): Map<string, number[]> {
  const D = cfg.hiddenSize;
  const P = cfg.patchSize;
  const m = new Map<string, number[]>();
  m.set('vision_model.embeddings.class_embedding', [D]);
  m.set('vision_model.embeddings.patch_embedding.weight', [D, cfg.numChannels, P, P]);
  m.set('vision_model.embeddings.position_embedding.weight', [numTokens(cfg), D]);
  for (const ln of ['pre_layrnorm', 'post_layernorm']) {
    m.set(`vision_model.${ln}.weight`, [D]);
    m.set(`vision_model.${ln}.bias`, [D]);
  }
  addEncoderShapes(m, 'vision_model', cfg);
  m.set('visual_projection.weight', [cfg.projectionDim, D]);
  return m;
}

export interface ForwardOptions {
  /** LoRA adapter (student). */
  lora?: LoraAdapter;
  /** Student's own projection [projection_dim, hidden] (dual projection); default: the adapter's
   * projection when it carries one, else the shared one. */
  projection?: Tensor;
}

export class ClipVisionModel {
  private constructor(
    readonly cfg: ClipVisionConfig,
    readonly device: Device,
    readonly weights: Map<string, Tensor>,
    /**
     * The storage type of the frozen weights and of every activation. 'f16' is mixed
     * precision: each op stores f16 and computes in f32 where precision needs it (LayerNorm
     * statistics, softmax, attention and matmul accumulators); loraLinear reads the f32 LoRA
     * masters directly, a student projection is cast to f16 for each forward (its gradient comes
     * back in f32), and the embeddings forward() returns are f32.
     */
    readonly dtype: DType = 'f32',
  ) {}

  /** Takes ownership of `weights` (uploaded tensors of `dtype` with HF names and validated shapes). */
  static fromWeights(cfg: ClipVisionConfig, weights: Map<string, Tensor>, device: Device, dtype: DType = 'f32'): ClipVisionModel {
    checkWeights('CLIP vision weights', expectedShapes(cfg), weights, dtype);
    for (const t of weights.values()) t.keep();
    // The conv weight is used as a [D, C·P·P] matrix.
    const pw = weights.get('vision_model.embeddings.patch_embedding.weight')!;
    weights.set('vision_model.embeddings.patch_embedding.weight', reshapeFrozen(pw, [cfg.hiddenSize, cfg.numChannels * cfg.patchSize ** 2]));
    return new ClipVisionModel(cfg, device, weights, dtype);
  }

  /** Seeded random init with CLIP-like scales (for tests and benchmarks); f16: the same values rounded. */
  static random(cfg: ClipVisionConfig, seed: number, device: Device, dtype: DType = 'f32'): ClipVisionModel {
    const weights = randomWeights(expectedShapes(cfg), cfg.hiddenSize, seed, device, dtype);
    return ClipVisionModel.fromWeights(cfg, weights, device, dtype);
  }

  get numTokens(): number {
    return numTokens(this.cfg);
  }

  w(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new Error(`internal: no weight ${name}`);
    return t;
  }

  /** pixels [B, 3, H, W] (normalized) → image embeddings [B, projection_dim] (not normalized). */
  forward(pixels: Tensor, opts: ForwardOptions = {}): Tensor {
    const cfg = this.cfg;
    const expect = [cfg.numChannels, cfg.imageSize, cfg.imageSize];
    if (pixels.shape.length !== 4 || pixels.shape.slice(1).join(',') !== expect.join(',')) {
      throw new Error(`ClipVisionModel.forward: pixels must be [B, ${expect.join(', ')}], got ${shapeStr(pixels.shape)}`);
    }
    const B = pixels.shape[0];
    const D = cfg.hiddenSize;
    const nP = numPatches(cfg);
    const { lora } = opts;

    // Intermediates are disposed as soon as they are consumed: tensors that backward needs
    // are kept alive by the tape's own references, so this is safe with or without grad, and
    // under noGrad (the teacher) nothing but the running activation stays allocated.
    const px = asStorage(pixels, this.dtype);
    const patches = patchify(px, cfg.patchSize);
    if (px !== pixels) px.dispose();
    const emb = matmul(patches, this.w('vision_model.embeddings.patch_embedding.weight'), { transB: true });
    patches.dispose();
    const clsRow = reshape(this.w('vision_model.embeddings.class_embedding'), [1, 1, D]);
    const cls = gatherRows(clsRow, new Array<number>(B).fill(0), 0);
    const embTokens = reshape(emb, [B, nP, D]);
    const tokens = concat([cls, embTokens], 1);
    disposeAll(clsRow, cls, emb, embTokens);
    const withPos = add(tokens, this.w('vision_model.embeddings.position_embedding.weight'));
    tokens.dispose();
    let h = layerNorm(withPos, this.w('vision_model.pre_layrnorm.weight'), this.w('vision_model.pre_layrnorm.bias'), cfg.layerNormEps);
    withPos.dispose();

    h = runEncoder(h, { tower: 'vision_model', cfg, w: (name) => this.w(name), causal: false, ...(lora ? { lora } : {}) });
    const clsOut = gatherRows(h, [0], 1);
    const clsFlat = reshape(clsOut, [B, D]);
    disposeAll(h, clsOut);
    const pooled = layerNorm(clsFlat, this.w('vision_model.post_layernorm.weight'), this.w('vision_model.post_layernorm.bias'), cfg.layerNormEps);
    clsFlat.dispose();
    return projectPooled(pooled, opts.projection ?? lora?.projection ?? this.w('visual_projection.weight'));
  }

  /**
   * Makes every weight trainable in place (see makeTrainable in encoder.ts) and returns the
   * Parameters. The patch embedding is held as the [D, C·P·P] matrix forward() multiplies by;
   * `expectedShapes` gives its HF shape [D, C, P, P] (same values, same order).
   */
  trainableParameters(): Parameter[] {
    return makeTrainable('ClipVisionModel', this.weights);
  }

  /**
   * A model with its own copy of every weight (GPU copies, same dtype and shapes): the fully
   * fine-tuned student of `train --rank 0` starts as a copy of the teacher.
   */
  copy(): ClipVisionModel {
    const weights = new Map<string, Tensor>();
    try {
      for (const [name, t] of this.weights) {
        const c = Tensor.empty(t.shape, this.device, t.dtype).keep();
        weights.set(name, c);
        this.device.batch.copy(t.buffer, 0, c.buffer, 0, t.byteLength);
      }
    } catch (e) {
      for (const t of weights.values()) t.dispose();
      throw e;
    }
    return new ClipVisionModel(this.cfg, this.device, weights, this.dtype);
  }

  /** Bytes of GPU memory held by the frozen weights. */
  get weightBytes(): number {
    let n = 0;
    for (const t of this.weights.values()) n += t.byteLength;
    return n;
  }

  dispose(): void {
    for (const t of this.weights.values()) t.dispose();
    this.weights.clear();
  }
}

function reshapeFrozen(t: Tensor, shape: number[]): Tensor {
  const v = t.view(shape, false);
  t.dispose();
  return v;
}
