// CLIP vision transformer, computing what HF CLIPVisionModelWithProjection computes:
//   patch embedding (stride-P conv without bias, as unfold + matmul) → prepend class embedding
//   → + position embedding → pre_layrnorm → L pre-norm blocks:
//       h = h + out_proj(attn(layer_norm1(h)))      (q scaled by head_dim^-0.5; q/k/v/out have biases)
//       h = h + fc2(act(fc1(layer_norm2(h))))       (act = hidden_act: quick_gelu or gelu)
//   → post_layernorm on the CLS token → visual_projection (no bias).
//
// Weights are frozen Tensors keyed by HF names. The teacher runs the model under noGrad; the
// student runs the same weights with a LoraAdapter (every adapted linear layer is one fused
// LoRA projection) and optionally its own trainable projection ("dual projection").
import { Tensor, fromArrayAs, shapeStr, type DType } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import { listWithRest, LIST_LIMIT } from '../gpu/problem-list.ts';
import { add, attention, gatherRows, layerNorm, linear, loraLinear, matmul, patchify, reshape, concat, toF16, toF32 } from '../ops/index.ts';
import type { Activation } from '../ops/index.ts';
import type { ClipVisionConfig } from './config.ts';
import { numPatches, numTokens } from './config.ts';
import { LoraAdapter, modulePath, type LoraTarget } from './lora.ts';
import { mulberry32, randomNormal } from './init.ts';

/** Every tensor the vision model needs, with its expected shape (HF names). */
export function expectedShapes(cfg: ClipVisionConfig): Map<string, number[]> {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const P = cfg.patchSize;
  const m = new Map<string, number[]>();
  m.set('vision_model.embeddings.class_embedding', [D]);
  m.set('vision_model.embeddings.patch_embedding.weight', [D, cfg.numChannels, P, P]);
  m.set('vision_model.embeddings.position_embedding.weight', [numTokens(cfg), D]);
  for (const ln of ['pre_layrnorm', 'post_layernorm']) {
    m.set(`vision_model.${ln}.weight`, [D]);
    m.set(`vision_model.${ln}.bias`, [D]);
  }
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `vision_model.encoder.layers.${i}`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      m.set(`${p}.self_attn.${n}.weight`, [D, D]);
      m.set(`${p}.self_attn.${n}.bias`, [D]);
    }
    m.set(`${p}.mlp.fc1.weight`, [I, D]);
    m.set(`${p}.mlp.fc1.bias`, [I]);
    m.set(`${p}.mlp.fc2.weight`, [D, I]);
    m.set(`${p}.mlp.fc2.bias`, [D]);
    for (const ln of ['layer_norm1', 'layer_norm2']) {
      m.set(`${p}.${ln}.weight`, [D]);
      m.set(`${p}.${ln}.bias`, [D]);
    }
  }
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
    const expected = expectedShapes(cfg);
    const problems: string[] = [];
    for (const [name, shape] of expected) {
      const t = weights.get(name);
      if (!t) problems.push(`missing ${name} (expected ${shapeStr(shape)})`);
      else if (shapeStr(t.shape) !== shapeStr(shape)) problems.push(`${name}: expected ${shapeStr(shape)}, found ${shapeStr(t.shape)}`);
      else if (t.dtype !== dtype) problems.push(`${name}: is ${t.dtype}, the model is ${dtype}`);
    }
    if (problems.length) throw new Error(`CLIP vision weights do not fit the config (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${listWithRest(problems, LIST_LIMIT, '- ')}`);
    for (const t of weights.values()) t.keep();
    // The conv weight is used as a [D, C·P·P] matrix.
    const pw = weights.get('vision_model.embeddings.patch_embedding.weight')!;
    weights.set('vision_model.embeddings.patch_embedding.weight', reshapeFrozen(pw, [cfg.hiddenSize, cfg.numChannels * cfg.patchSize ** 2]));
    return new ClipVisionModel(cfg, device, weights, dtype);
  }

  /** Seeded random init with CLIP-like scales (for tests and benchmarks); f16: the same values rounded. */
  static random(cfg: ClipVisionConfig, seed: number, device: Device, dtype: DType = 'f32'): ClipVisionModel {
    const rnd = mulberry32(seed);
    const weights = new Map<string, Tensor>();
    const D = cfg.hiddenSize;
    for (const [name, shape] of expectedShapes(cfg)) {
      const n = shape.reduce((a, b) => a * b, 1);
      let data: Float32Array;
      if (name.endsWith('norm.weight') || name.includes('layrnorm.weight') || name.includes('layer_norm1.weight') || name.includes('layer_norm2.weight')) {
        data = new Float32Array(n).fill(1);
      } else if (name.endsWith('.bias')) {
        data = new Float32Array(n);
      } else if (name.includes('embedding')) {
        data = randomNormal(n, name.includes('class') ? D ** -0.5 : 0.02, rnd);
      } else {
        // std 2/√fan_in: twice the usual fan-in scale, so that attention and the MLP respond to
        // image content and random presets give spread-out embeddings (mean cosine between
        // different demo images ≈ 0.37) instead of nearly identical ones.
        const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
        data = randomNormal(n, 2 * fanIn ** -0.5, rnd);
      }
      weights.set(name, fromArrayAs(data, shape, dtype, device).keep());
    }
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

  private proj(x: Tensor, layer: number, target: LoraTarget, lora: LoraAdapter | undefined, activation: Activation = 'none', residual?: Tensor): Tensor {
    const path = modulePath(layer, target);
    const W = this.w(`${path}.weight`);
    const b = this.w(`${path}.bias`);
    const pair = lora?.get(path);
    // loraLinear reads the f32 A/B masters as they are (in f16 too) and returns f32 gradients.
    if (pair) return loraLinear(x, W, b, pair.a, pair.b, lora!.scaling, activation, residual);
    return linear(x, W, b, activation, residual);
  }

  /** A trainable f32 tensor in the model's storage type: itself (f32), or its differentiable f16 cast. */
  private asStorage(t: Tensor): Tensor {
    return t.dtype === this.dtype ? t : this.dtype === 'f16' ? toF16(t) : toF32(t);
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
    const H = cfg.numAttentionHeads;
    const N = this.numTokens;
    const nP = numPatches(cfg);
    const { lora } = opts;

    // Intermediates are disposed as soon as they are consumed: tensors that backward needs
    // are kept alive by the tape's own references, so this is safe with or without grad, and
    // under noGrad (the teacher) nothing but the running activation stays allocated.
    const px = this.asStorage(pixels);
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

    const act: Activation = cfg.hiddenAct === 'gelu' ? 'gelu' : 'quick_gelu';
    const dh = D / H;
    for (let i = 0; i < cfg.numHiddenLayers; i++) {
      const p = `vision_model.encoder.layers.${i}`;
      const t = layerNorm(h, this.w(`${p}.layer_norm1.weight`), this.w(`${p}.layer_norm1.bias`), cfg.layerNormEps);
      const q = this.proj(t, i, 'q_proj', lora);
      const k = this.proj(t, i, 'k_proj', lora);
      const v = this.proj(t, i, 'v_proj', lora);
      t.dispose();
      const heads = [q, k, v].map((z) => reshape(z, [B, N, H, dh]));
      const a = attention(heads[0], heads[1], heads[2], { scale: dh ** -0.5 });
      disposeAll(q, k, v, ...heads);
      const aFlat = reshape(a, [B, N, D]);
      const h2 = this.proj(aFlat, i, 'out_proj', lora, 'none', h);
      disposeAll(a, aFlat, h);
      const t2 = layerNorm(h2, this.w(`${p}.layer_norm2.weight`), this.w(`${p}.layer_norm2.bias`), cfg.layerNormEps);
      const u = this.proj(t2, i, 'fc1', lora, act);
      t2.dispose();
      h = this.proj(u, i, 'fc2', lora, 'none', h2);
      disposeAll(u, h2);
    }
    const clsOut = gatherRows(h, [0], 1);
    const clsFlat = reshape(clsOut, [B, D]);
    disposeAll(h, clsOut);
    const pooled = layerNorm(clsFlat, this.w('vision_model.post_layernorm.weight'), this.w('vision_model.post_layernorm.bias'), cfg.layerNormEps);
    clsFlat.dispose();
    const projW = opts.projection ?? lora?.projection ?? this.w('visual_projection.weight');
    const projection = this.asStorage(projW);
    const out = matmul(pooled, projection, { transB: true });
    pooled.dispose();
    if (projection !== projW) projection.dispose();
    if (out.dtype === 'f32') return out;
    // Embeddings leave the model in f32 (the loss, the metrics and the host all work in f32).
    const wide = toF32(out);
    out.dispose();
    return wide;
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

function disposeAll(...ts: Tensor[]): void {
  for (const t of ts) t.dispose();
}

function reshapeFrozen(t: Tensor, shape: number[]): Tensor {
  const v = t.view(shape, false);
  t.dispose();
  return v;
}
