// Batched embedding of texts with the CLIP text tower: each text is tokenized (CLIP BPE,
// src/io/tokenizer.ts) with <|startoftext|> … <|endoftext|>, truncated to the model's
// max_position_embeddings, and a batch is padded with the pad token to its longest sequence.
// Padding after <|endoftext|> cannot change the pooled embedding: attention is causal and the
// pooled row is the end-of-text position (src/nn/text.ts). Output: [n, projection_dim] f32,
// not normalised (HF text_embeds). Non-finite embeddings are an error naming the first text.
import type { Device } from '../gpu/device.ts';
import { scope } from '../tensor/tensor.ts';
import { noGrad } from '../tensor/autograd.ts';
import type { ClipTextModel } from '../nn/text.ts';
import type { ClipTokenizer } from '../io/tokenizer.ts';

export interface TextEmbedHooks {
  onProgress?: (done: number, total: number) => void;
  /** Names the model in the non-finite error, e.g. "the text tower of --model DIR". */
  model?: string;
}

/** Token ids of `texts`, each truncated to the model's positions, padded to the longest. */
export function tokenizeBatch(tokenizer: ClipTokenizer, texts: readonly string[], maxLength: number): number[][] {
  const rows = texts.map((t) => tokenizer.encode(t, { maxLength, truncation: true }).ids);
  const n = Math.max(...rows.map((r) => r.length));
  return rows.map((r) => (r.length < n ? [...r, ...new Array<number>(n - r.length).fill(tokenizer.padId)] : r));
}

export async function embedTexts(device: Device, model: ClipTextModel, tokenizer: ClipTokenizer, texts: readonly string[], batch: number, hooks: TextEmbedHooks = {}): Promise<Float32Array> {
  const dim = model.cfg.projectionDim;
  const out = new Float32Array(texts.length * dim);
  for (let i = 0; i < texts.length; i += batch) {
    const chunk = texts.slice(i, i + batch);
    const ids = tokenizeBatch(tokenizer, chunk, model.cfg.maxPositionEmbeddings);
    const t = scope(() => noGrad(() => model.forward(ids)).keep());
    let rows: Float32Array;
    try {
      rows = await t.read();
    } finally {
      t.dispose();
    }
    const bad = rows.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      const text = chunk[Math.floor(bad / dim)];
      throw new Error(`text embeddings of ${hooks.model ?? 'the text tower'} are not finite (NaN or ±Inf), first for the text ${JSON.stringify(text.slice(0, 80))}; check the checkpoint's text_model weights`);
    }
    out.set(rows, i * dim);
    hooks.onProgress?.(Math.min(i + batch, texts.length), texts.length);
  }
  return out;
}
