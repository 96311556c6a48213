// CLIP text transformer, computing what HF CLIPTextModelWithProjection computes:
//   token embedding (a row gather) + position embedding (positions 0..N-1) → the shared pre-norm
//   encoder (encoder.ts) with causal self-attention → final_layer_norm → the hidden state at the
//   end-of-text token of each sequence (pooled) → text_projection (no bias).
//
// Pooling as HF: with the legacy eos_token_id 2 at the argmax of the ids (CLIP's end-of-text
// token has the highest id), otherwise at the first position holding eos_token_id (position 0
// when a sequence has none, as HF's argmax over an all-false mask).
//
// Masks. HF applies the causal mask plus an optional padding attention_mask. genalign applies the
// causal mask only. That gives HF's pooled output and embeddings for any padding: the pooled
// position is the end-of-text token, which sees only itself and the tokens before it, never the
// padding after it, so a padding mask changes nothing there. It only changes last_hidden_state
// at the padding positions themselves (which HF's padding mask would stop from seeing the padding
// before them); those rows are not used for embeddings.
//
// Weights are Tensors keyed by HF names, frozen for a teacher; every op records on the tape like
// the vision model, so a tower whose weights require grad (CLIP pretraining) is differentiable,
// the token embedding included (gatherRows' backward scatters into the table).
import { Tensor, type DType, type Parameter } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import { add, gatherRows, layerNorm, reshape } from '../ops/index.ts';
import { LEGACY_EOS_TOKEN_ID, type ClipTextConfig } from './config.ts';
import { addEncoderShapes, checkWeights, disposeAll, makeTrainable, projectPooled, randomWeights, runEncoder } from './encoder.ts';

/** Every tensor the text model needs, with its expected shape (HF names). */
export function expectedTextShapes(cfg: ClipTextConfig): Map<string, number[]> {
  const D = cfg.hiddenSize;
  const m = new Map<string, number[]>();
  m.set('text_model.embeddings.token_embedding.weight', [cfg.vocabSize, D]);
  m.set('text_model.embeddings.position_embedding.weight', [cfg.maxPositionEmbeddings, D]);
  addEncoderShapes(m, 'text_model', cfg);
  m.set('text_model.final_layer_norm.weight', [D]);
  m.set('text_model.final_layer_norm.bias', [D]);
  m.set('text_projection.weight', [cfg.projectionDim, D]);
  return m;
}

/** Where HF pools each sequence: see the file header. */
export function poolPositions(ids: readonly (readonly number[])[], eosTokenId: number): number[] {
  return ids.map((row) => {
    let at = 0;
    if (eosTokenId === LEGACY_EOS_TOKEN_ID) {
      for (let i = 1; i < row.length; i++) if (row[i] > row[at]) at = i;
      return at;
    }
    const first = row.indexOf(eosTokenId);
    return first < 0 ? 0 : first;
  });
}

export interface TextOutputs {
  /** [B, N, D] after final_layer_norm (HF last_hidden_state); only with `hidden: true`. */
  lastHiddenState?: Tensor;
  /** [B, D] at the pooling positions (HF pooler_output), in the model's dtype. */
  pooled: Tensor;
  /** [B, projection_dim] f32, not normalised (HF text_embeds). */
  embeds: Tensor;
}

export class ClipTextModel {
  private constructor(
    readonly cfg: ClipTextConfig,
    readonly device: Device,
    readonly weights: Map<string, Tensor>,
    /** Storage type of the weights and activations; 'f16' is mixed precision as in ClipVisionModel. */
    readonly dtype: DType = 'f32',
  ) {}

  /** Takes ownership of `weights` (uploaded tensors of `dtype` with HF names and validated shapes). */
  static fromWeights(cfg: ClipTextConfig, weights: Map<string, Tensor>, device: Device, dtype: DType = 'f32'): ClipTextModel {
    checkWeights('CLIP text weights', expectedTextShapes(cfg), weights, dtype);
    for (const t of weights.values()) t.keep();
    return new ClipTextModel(cfg, device, weights, dtype);
  }

  /** Seeded random init with CLIP-like scales (presets, tests); f16: the same values rounded. */
  static random(cfg: ClipTextConfig, seed: number, device: Device, dtype: DType = 'f32'): ClipTextModel {
    return ClipTextModel.fromWeights(cfg, randomWeights(expectedTextShapes(cfg), cfg.hiddenSize, seed, device, dtype), device, dtype);
  }

  w(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new Error(`internal: no weight ${name}`);
    return t;
  }

  /** Checks token ids: B ≥ 1 rows of one length N in 1..max_position_embeddings, each id in 0..vocab_size-1. */
  private checkIds(ids: readonly (readonly number[])[]): void {
    const cfg = this.cfg;
    const fail = (why: string): never => {
      throw new Error(`ClipTextModel: ${why}`);
    };
    if (ids.length === 0) fail('no sequences given (ids must be [B, N] with B ≥ 1)');
    const n = ids[0].length;
    if (n < 1 || n > cfg.maxPositionEmbeddings) fail(`sequences must have 1..${cfg.maxPositionEmbeddings} tokens (max_position_embeddings), got ${n}`);
    ids.forEach((row, b) => {
      if (row.length !== n) fail(`sequence ${b} has ${row.length} tokens but sequence 0 has ${n}; pad them to one length`);
      row.forEach((id, i) => {
        if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) fail(`token ${i} of sequence ${b} is ${id}, outside the vocabulary 0..${cfg.vocabSize - 1}`);
      });
    });
  }

  /**
   * Token ids [B][N] → text embeddings and the pooled state (and, with `hidden`, the whole last
   * hidden state). Without `hidden` final_layer_norm runs on the pooled rows only (it is per row).
   */
  encode(ids: readonly (readonly number[])[], opts: { hidden?: boolean } = {}): TextOutputs {
    this.checkIds(ids);
    const cfg = this.cfg;
    const B = ids.length;
    const N = ids[0].length;
    const D = cfg.hiddenSize;
    const tokens = gatherRows(this.w('text_model.embeddings.token_embedding.weight'), ids.flat(), 0);
    const tokens3 = reshape(tokens, [B, N, D]);
    const posTable = this.w('text_model.embeddings.position_embedding.weight');
    const positions = N === cfg.maxPositionEmbeddings ? posTable : gatherRows(posTable, Array.from({ length: N }, (_, i) => i), 0);
    let h = add(tokens3, positions);
    disposeAll(tokens, tokens3);
    if (positions !== posTable) positions.dispose();
    h = runEncoder(h, { tower: 'text_model', cfg, w: (name) => this.w(name), causal: true });

    const lnW = this.w('text_model.final_layer_norm.weight');
    const lnB = this.w('text_model.final_layer_norm.bias');
    const rows = poolPositions(ids, cfg.eosTokenId).map((p, b) => b * N + p);
    let lastHiddenState: Tensor | undefined;
    let pooled: Tensor;
    if (opts.hidden) {
      lastHiddenState = layerNorm(h, lnW, lnB, cfg.layerNormEps);
      h.dispose();
      const flat = reshape(lastHiddenState, [B * N, D]);
      pooled = gatherRows(flat, rows, 0);
      flat.dispose();
    } else {
      const flat = reshape(h, [B * N, D]);
      const picked = gatherRows(flat, rows, 0);
      disposeAll(h, flat);
      pooled = layerNorm(picked, lnW, lnB, cfg.layerNormEps);
      picked.dispose();
    }
    // projectPooled consumes its input: hand it a (recorded) view so `pooled` stays the caller's.
    const embeds = projectPooled(reshape(pooled, [B, D]), this.w('text_projection.weight'));
    return { ...(lastHiddenState ? { lastHiddenState } : {}), pooled, embeds };
  }

  /** Token ids [B][N] → text embeddings [B, projection_dim] (f32, not normalised). */
  forward(ids: readonly (readonly number[])[]): Tensor {
    const { pooled, embeds } = this.encode(ids);
    pooled.dispose();
    return embeds;
  }

  /** Makes every weight trainable in place (see makeTrainable in encoder.ts) and returns the Parameters. */
  trainableParameters(): Parameter[] {
    return makeTrainable('ClipTextModel', this.weights);
  }

  /** Bytes of GPU memory held by the weights. */
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
