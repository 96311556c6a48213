// Batched embedding of image files with a CLIP vision model (teacher or LoRA student), with
// decoding of the next batch overlapped with the GPU work of the current one. The files are
// preprocessed in a PreprocessPool of worker threads (io/preprocess-pool.ts): hooks.pool, or one
// started for the call and ended before it returns, whatever the outcome. Unreadable
// images are skipped (reported through onSkip) and marked in `ok`. A batch whose embeddings
// are not finite (diverged LoRA weights, a broken checkpoint) stops with NonFiniteEmbeddingError:
// NaN rows would otherwise flow silently into files and metrics.
import type { Device } from '../gpu/device.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import type { LoraAdapter } from '../nn/lora.ts';
import { ImageDecodeError, decodeReason, type ImageSource, type PreprocessConfig } from '../io/image.ts';
import { PreprocessPool } from '../io/preprocess-pool.ts';

export interface EmbedHooks {
  onProgress?: (done: number, total: number) => void;
  /** An image that could not be decoded; `reason` is the decoder's message without the path. */
  onSkip?: (path: string, reason: string) => void;
  /**
   * Names the model in the error for non-finite embeddings, with what to do about it, e.g.
   * "the LoRA student (--lora DIR)". Default: "the LoRA student" or "the base model".
   */
  model?: { name: string; hint?: string };
  projection?: import('../tensor/tensor.ts').Tensor;
  /** Polled after each batch; true stops early (ok then covers only the files processed). */
  shouldStop?: () => boolean;
  /** Worker pool that preprocesses the files (not closed here); default: one for this call. */
  pool?: PreprocessPool;
  /** Where a "path" is read from when it names no file (a tar member's bytes, io/shard-stream.ts); default: the file. */
  source?: (path: string) => ImageSource;
}

/** The model gave NaN or ±Inf embeddings; the message names the model and the first image. */
export class NonFiniteEmbeddingError extends Error {}

export interface EmbeddedFiles {
  /** ok[i] is false for files that could not be decoded. */
  ok: boolean[];
  /** Rows for the ok files only, in input order: [count(ok), dim]. */
  embeds: Float32Array;
  dim: number;
}

async function decodeAll(pool: PreprocessPool, paths: string[], pre: PreprocessConfig, onSkip?: (p: string, r: string) => void, source?: (path: string) => ImageSource): Promise<(Float32Array | null)[]> {
  return Promise.all(
    paths.map(async (p) => {
      try {
        return await pool.preprocess(source ? source(p) : p, pre);
      } catch (e) {
        if (e instanceof ImageDecodeError) {
          onSkip?.(p, decodeReason(p, e));
          return null;
        }
        throw e;
      }
    }),
  );
}

export { embedPixels } from '../nn/embed-pixels.ts';
import { embedPixels } from '../nn/embed-pixels.ts';

export async function embedPaths(device: Device, model: ClipVisionModel, lora: LoraAdapter | undefined, paths: string[], pre: PreprocessConfig, batch: number, hooks: EmbedHooks = {}): Promise<EmbeddedFiles> {
  const [out] = await embedPathsWith(device, model, [{ lora, projection: hooks.projection, name: hooks.model }], paths, pre, batch, hooks);
  return out;
}

/** One way to embed the images in embedPathsWith: the plain model, a LoRA student (with its projection), or another model of the same config (a fully fine-tuned student). */
export interface EmbedVariant {
  /** Runs this model instead of embedPathsWith's (same vision config). */
  model?: ClipVisionModel;
  lora?: LoraAdapter;
  projection?: import('../tensor/tensor.ts').Tensor;
  /** Names it in the non-finite error (EmbedHooks.model). */
  name?: { name: string; hint?: string };
}

/**
 * embedPaths for several variants of one model (e.g. eval's teacher and student on the same
 * generated images): each batch is decoded once and embedded by every variant in turn, so the
 * images are read and preprocessed once instead of once per variant. Every result has the same
 * `ok` (a file that does not decode is skipped for all). hooks.model and hooks.projection are
 * ignored here (each variant carries its own).
 */
export async function embedPathsWith(device: Device, model: ClipVisionModel, variants: readonly EmbedVariant[], paths: string[], pre: PreprocessConfig, batch: number, hooks: EmbedHooks = {}): Promise<EmbeddedFiles[]> {
  const S = model.cfg.imageSize;
  if (pre.cropHeight !== S || pre.cropWidth !== S) {
    throw new Error(`preprocessing crops to ${pre.cropWidth}x${pre.cropHeight} but the model expects ${S}x${S} (check preprocessor_config.json)`);
  }
  const dim = model.cfg.projectionDim;
  for (const v of variants) {
    if (v.model && (v.model.cfg.imageSize !== S || v.model.cfg.projectionDim !== dim)) {
      throw new Error(`${v.name?.name ?? 'a student model'} takes ${v.model.cfg.imageSize}px images to ${v.model.cfg.projectionDim}-d embeddings, the base model ${S}px to ${dim}-d: they must match`);
    }
  }
  const ok: boolean[] = [];
  const chunks: Float32Array[][] = variants.map(() => []);
  const batches: string[][] = [];
  for (let i = 0; i < paths.length; i += batch) batches.push(paths.slice(i, i + batch));
  const ownPool = hooks.pool || batches.length === 0 ? null : new PreprocessPool();
  const pool = hooks.pool ?? ownPool;
  let next = batches.length ? decodeAll(pool!, batches[0], pre, hooks.onSkip, hooks.source) : null;
  try {
    let done = 0;
    for (let b = 0; b < batches.length; b++) {
      const cur = await next!;
      // Decode the next batch while the GPU works on this one.
      next = b + 1 < batches.length ? decodeAll(pool!, batches[b + 1], pre, hooks.onSkip, hooks.source) : null;
      const good = cur.filter((p): p is Float32Array => p !== null);
      for (const p of cur) ok.push(p !== null);
      if (good.length) {
        for (let v = 0; v < variants.length; v++) {
          const { lora, projection, name } = variants[v];
          const rows = await embedPixels(device, variants[v].model ?? model, lora, good, projection);
          const problem = nonFiniteProblem(rows, dim, batches[b].filter((_, i) => cur[i] !== null), lora, name);
          if (problem) throw new NonFiniteEmbeddingError(problem);
          chunks[v].push(rows);
        }
      }
      done += batches[b].length;
      hooks.onProgress?.(done, paths.length);
      if (hooks.shouldStop?.()) break;
    }
  } finally {
    // No decode outlives the call, and the pool started here ends with it.
    await next?.catch(() => null);
    await ownPool?.close();
  }
  return chunks.map((cs) => {
    const embeds = new Float32Array(cs.reduce((a, c) => a + c.length, 0));
    let off = 0;
    for (const c of cs) {
      embeds.set(c, off);
      off += c.length;
    }
    return { ok: [...ok], embeds, dim };
  });
}

/** The error message when a row of `rows` ([files.length, dim]) holds NaN or ±Inf, else null. */
function nonFiniteProblem(rows: Float32Array, dim: number, files: string[], lora: LoraAdapter | undefined, named: { name: string; hint?: string } | undefined): string | null {
  const bad: number[] = [];
  for (let r = 0; r < files.length; r++) {
    for (let j = r * dim; j < (r + 1) * dim; j++) {
      if (!Number.isFinite(rows[j])) {
        bad.push(r);
        break;
      }
    }
  }
  if (bad.length === 0) return null;
  const name = named?.name ?? (lora ? 'the LoRA student' : 'the base model');
  const hint =
    named?.hint ??
    (lora
      ? 'Its LoRA weights have likely diverged during training (too high a learning rate): use an earlier checkpoint of the run, or retrain with a lower --lr.'
      : 'The model weights hold NaN/Inf or overflow in float32: check the checkpoint.');
  return `embeddings of ${name} are not finite (NaN or ±Inf) for ${bad.length} of ${files.length} image(s) in a batch, first: ${files[bad[0]]}. ${hint}`;
}
