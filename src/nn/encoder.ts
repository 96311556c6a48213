// The transformer encoder both CLIP towers share (HF CLIPEncoder): L pre-norm blocks
//   h = h + out_proj(attn(layer_norm1(h)))      (q scaled by head_dim^-0.5; q/k/v/out have biases)
//   h = h + fc2(act(fc1(layer_norm2(h))))       (act = hidden_act: quick_gelu or gelu)
// The vision tower runs it unmasked, the text tower with the causal mask (fused into the
// attention kernel). Each linear layer is a plain `linear`, or a fused LoRA projection when the
// adapter has a pair for its HF module path. The same weight-map helpers (shapes, checks,
// random init) serve both towers.
import { Parameter, Tensor, fromArrayAs, shapeStr, type DType } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import { listWithRest, LIST_LIMIT } from '../gpu/problem-list.ts';
import { attention, layerNorm, linear, loraLinear, matmul, reshape, toF16, toF32 } from '../ops/index.ts';
import type { Activation } from '../ops/index.ts';
import type { HiddenAct } from './config.ts';
import { modulePath, type LoraAdapter, type LoraTarget, type Tower } from './lora.ts';
import { mulberry32, randomNormal } from './init.ts';

/** The config fields the encoder reads (CLIPVisionConfig and CLIPTextConfig share them). */
export interface EncoderConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  hiddenAct: HiddenAct;
  layerNormEps: number;
}

/** Adds every encoder tensor of `tower` (HF names) with its shape to `m`. */
export function addEncoderShapes(m: Map<string, number[]>, tower: Tower, cfg: EncoderConfig): void {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `${tower}.encoder.layers.${i}`;
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
}

/**
 * Checks uploaded weights against the expected names, shapes and dtype; one error listing the
 * problems (`what` names the tower: "CLIP vision weights").
 */
export function checkWeights(what: string, expected: Map<string, number[]>, weights: Map<string, Tensor>, dtype: DType): void {
  const problems: string[] = [];
  for (const [name, shape] of expected) {
    const t = weights.get(name);
    if (!t) problems.push(`missing ${name} (expected ${shapeStr(shape)})`);
    else if (shapeStr(t.shape) !== shapeStr(shape)) problems.push(`${name}: expected ${shapeStr(shape)}, found ${shapeStr(t.shape)}`);
    else if (t.dtype !== dtype) problems.push(`${name}: is ${t.dtype}, the model is ${dtype}`);
  }
  if (problems.length) throw new Error(`${what} do not fit the config (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${listWithRest(problems, LIST_LIMIT, '- ')}`);
}

/**
 * Seeded random weights with CLIP-like scales (tests, benchmarks, presets), in the order of
 * `expected`: LayerNorm weights 1, biases 0, embeddings N(0, 0.02²) (a class embedding
 * N(0, 1/D)), every other matrix N(0, (2/√fan_in)²): twice the usual fan-in scale, so that
 * attention and the MLP respond to their input and random presets give spread-out embeddings
 * (mean cosine between different demo images ≈ 0.37) instead of nearly identical ones.
 */
export function randomWeights(expected: Map<string, number[]>, hiddenSize: number, seed: number, device: Device, dtype: DType): Map<string, Tensor> {
  const rnd = mulberry32(seed);
  const weights = new Map<string, Tensor>();
  for (const [name, shape] of expected) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight') || name.includes('layrnorm.weight') || name.includes('layer_norm1.weight') || name.includes('layer_norm2.weight')) {
      data = new Float32Array(n).fill(1);
    } else if (name.endsWith('.bias')) {
      data = new Float32Array(n);
    } else if (name.includes('embedding')) {
      data = randomNormal(n, name.includes('class') ? hiddenSize ** -0.5 : 0.02, rnd);
    } else {
      const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
      data = randomNormal(n, 2 * fanIn ** -0.5, rnd);
    }
    weights.set(name, fromArrayAs(data, shape, dtype, device).keep());
  }
  return weights;
}

/**
 * Makes every weight of a tower trainable in place (CLIP pretraining, full fine-tuning): each
 * entry of `weights` becomes a Parameter named by its HF name that shares the frozen tensor's
 * storage (no copy; the map keeps owning it and the model's dispose() frees it). Returns them in
 * the map's order. f32 only: AdamW updates f32 masters. `what` names the model in errors.
 */
export function makeTrainable(what: string, weights: Map<string, Tensor>): Parameter[] {
  const bad = [...weights].filter(([, t]) => t.dtype !== 'f32').map(([n, t]) => `${n} (${t.dtype})`);
  if (bad.length) throw new Error(`${what}: only an f32 model can be trained in full; these weights are not f32: ${listWithRest(bad, LIST_LIMIT, '')}. Load it with dtype 'f32'.`);
  const params: Parameter[] = [];
  for (const [name, t] of weights) {
    const p = t instanceof Parameter ? t : Parameter.fromTensor(t, name);
    weights.set(name, p);
    params.push(p);
  }
  return params;
}

export interface EncoderRun {
  tower: Tower;
  cfg: EncoderConfig;
  /** The frozen weight of an HF name. */
  w: (name: string) => Tensor;
  /** Causal self-attention (text); false: unmasked (vision). */
  causal: boolean;
  lora?: LoraAdapter;
}

/** Linear layer `target` of layer `layer`: frozen, or a fused LoRA projection when the adapter adapts it. */
function projection(run: EncoderRun, x: Tensor, layer: number, target: LoraTarget, activation: Activation = 'none', residual?: Tensor): Tensor {
  const path = modulePath(layer, target, run.tower);
  const W = run.w(`${path}.weight`);
  const b = run.w(`${path}.bias`);
  const pair = run.lora?.get(path);
  // loraLinear reads the f32 A/B masters as they are (in f16 too) and returns f32 gradients.
  if (pair) return loraLinear(x, W, b, pair.a, pair.b, run.lora!.scaling, activation, residual);
  return linear(x, W, b, activation, residual);
}

/**
 * Runs every layer on h [B, N, D] and returns the last hidden state. Takes ownership of h:
 * intermediates are disposed as soon as they are consumed. Tensors backward needs stay alive
 * through the tape's own references, so this is safe with or without grad, and under noGrad
 * nothing but the running activation stays allocated.
 */
export function runEncoder(h: Tensor, run: EncoderRun): Tensor {
  const { cfg } = run;
  const [B, N, D] = h.shape;
  const H = cfg.numAttentionHeads;
  const dh = D / H;
  const eps = cfg.layerNormEps;
  const act: Activation = cfg.hiddenAct === 'gelu' ? 'gelu' : 'quick_gelu';
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `${run.tower}.encoder.layers.${i}`;
    const t = layerNorm(h, run.w(`${p}.layer_norm1.weight`), run.w(`${p}.layer_norm1.bias`), eps);
    const q = projection(run, t, i, 'q_proj');
    const k = projection(run, t, i, 'k_proj');
    const v = projection(run, t, i, 'v_proj');
    t.dispose();
    const heads = [q, k, v].map((z) => reshape(z, [B, N, H, dh]));
    const a = attention(heads[0], heads[1], heads[2], { scale: dh ** -0.5, causal: run.causal });
    disposeAll(q, k, v, ...heads);
    const aFlat = reshape(a, [B, N, D]);
    const h2 = projection(run, aFlat, i, 'out_proj', 'none', h);
    disposeAll(a, aFlat, h);
    const t2 = layerNorm(h2, run.w(`${p}.layer_norm2.weight`), run.w(`${p}.layer_norm2.bias`), eps);
    const u = projection(run, t2, i, 'fc1', act);
    t2.dispose();
    h = projection(run, u, i, 'fc2', 'none', h2);
    disposeAll(u, h2);
  }
  return h;
}

/** A trainable f32 tensor in a model's storage type: itself (f32), or its differentiable f16 cast. */
export function asStorage(t: Tensor, dtype: DType): Tensor {
  return t.dtype === dtype ? t : dtype === 'f16' ? toF16(t) : toF32(t);
}

/**
 * pooled [B, D] · projWᵀ (a bias-free projection [P, D], frozen or trainable f32) → embeddings
 * [B, P] in f32 (the loss, the metrics and the host all work in f32). Takes ownership of pooled.
 */
export function projectPooled(pooled: Tensor, projW: Tensor): Tensor {
  const projection = asStorage(projW, pooled.dtype);
  const out = matmul(pooled, projection, { transB: true });
  pooled.dispose();
  if (projection !== projW) projection.dispose();
  if (out.dtype === 'f32') return out;
  const wide = toF32(out);
  out.dispose();
  return wide;
}

export function disposeAll(...ts: Tensor[]): void {
  for (const t of ts) t.dispose();
}
