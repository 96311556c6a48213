// Embedding a batch of preprocessed images (CHW float32) with a CLIP vision model, optionally
// through a LoRA adapter and the student's own projection, under noGrad. Used by the Node
// embedding paths (train/embedding.ts) and the browser bundle alike.
import type { Device } from '../gpu/device.ts';
import { fromArray, scope, type Tensor } from '../tensor/tensor.ts';
import { noGrad } from '../tensor/autograd.ts';
import type { ClipVisionModel } from './vit.ts';
import type { LoraAdapter } from './lora.ts';

/** Embeds pixel arrays (CHW, already preprocessed) in one batch under noGrad: [n, projection_dim] rows. */
export async function embedPixels(device: Device, model: ClipVisionModel, lora: LoraAdapter | undefined, pixels: Float32Array[], projection?: Tensor): Promise<Float32Array> {
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
