// Batched embedding of image files with a CLIP vision model (teacher or LoRA student), with
// decoding of the next batch overlapped with the GPU work of the current one. Unreadable
// images are skipped (reported through onSkip) and marked in `ok`.
import type { Device } from '../gpu/device.ts';
import { fromArray, scope } from '../tensor/tensor.ts';
import { noGrad } from '../tensor/autograd.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import type { LoraAdapter } from '../nn/lora.ts';
import { ImageDecodeError, preprocessImage, type PreprocessConfig } from '../io/image.ts';

export interface EmbedHooks {
  onProgress?: (done: number, total: number) => void;
  onSkip?: (path: string, reason: string) => void;
  projection?: import('../tensor/tensor.ts').Tensor;
  /** Polled after each batch; true stops early (ok then covers only the files processed). */
  shouldStop?: () => boolean;
}

export interface EmbeddedFiles {
  /** ok[i] is false for files that could not be decoded. */
  ok: boolean[];
  /** Rows for the ok files only, in input order: [count(ok), dim]. */
  embeds: Float32Array;
  dim: number;
}

async function decodeAll(paths: string[], pre: PreprocessConfig, onSkip?: (p: string, r: string) => void): Promise<(Float32Array | null)[]> {
  return Promise.all(
    paths.map(async (p) => {
      try {
        return await preprocessImage(p, pre);
      } catch (e) {
        if (e instanceof ImageDecodeError) {
          onSkip?.(p, (e as Error).message);
          return null;
        }
        throw e;
      }
    }),
  );
}

/** Embeds pixel arrays (CHW, already preprocessed) in one batch under noGrad. */
export async function embedPixels(device: Device, model: ClipVisionModel, lora: LoraAdapter | undefined, pixels: Float32Array[], projection?: import('../tensor/tensor.ts').Tensor): Promise<Float32Array> {
  const S = model.cfg.imageSize;
  const per = 3 * S * S;
  const n = pixels.length;
  const buf = new Float32Array(n * per);
  pixels.forEach((p, i) => buf.set(p, i * per));
  const out = scope(() => noGrad(() => model.forward(fromArray(buf, [n, 3, S, S], device), { lora, projection })).keep());
  try {
    return await out.read();
  } finally {
    out.dispose();
  }
}

export async function embedPaths(device: Device, model: ClipVisionModel, lora: LoraAdapter | undefined, paths: string[], pre: PreprocessConfig, batch: number, hooks: EmbedHooks = {}): Promise<EmbeddedFiles> {
  const S = model.cfg.imageSize;
  if (pre.cropHeight !== S || pre.cropWidth !== S) {
    throw new Error(`preprocessing crops to ${pre.cropWidth}x${pre.cropHeight} but the model expects ${S}x${S} (check preprocessor_config.json)`);
  }
  const dim = model.cfg.projectionDim;
  const ok: boolean[] = [];
  const chunks: Float32Array[] = [];
  const batches: string[][] = [];
  for (let i = 0; i < paths.length; i += batch) batches.push(paths.slice(i, i + batch));
  let next = batches.length ? decodeAll(batches[0], pre, hooks.onSkip) : null;
  let done = 0;
  for (let b = 0; b < batches.length; b++) {
    const cur = await next!;
    // Decode the next batch while the GPU works on this one.
    next = b + 1 < batches.length ? decodeAll(batches[b + 1], pre, hooks.onSkip) : null;
    const good = cur.filter((p): p is Float32Array => p !== null);
    for (const p of cur) ok.push(p !== null);
    if (good.length) chunks.push(await embedPixels(device, model, lora, good, hooks.projection));
    done += batches[b].length;
    hooks.onProgress?.(done, paths.length);
    if (hooks.shouldStop?.() && next) {
      await next.catch(() => null);
      break;
    }
  }
  const embeds = new Float32Array(chunks.reduce((a, c) => a + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    embeds.set(c, off);
    off += c.length;
  }
  return { ok, embeds, dim };
}
