// Patch unfolding for the ViT patch embedding (kernels/patchify.wgsl), with backward. f32 and
// f16 tensors (pure copies); the output and the gradient keep the dtype.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, F32_F16, grid1d, params, shapeError } from './util.ts';

const WG = 256;

function run(entry: 'unfold' | 'fold', src: Tensor, outShape: readonly number[], dims: [number, number, number, number], patch: number): Tensor {
  const out = Tensor.empty(outShape, src.device, src.dtype);
  const [b, c, h, w] = dims;
  src.device.batch.dispatch({ file: 'patchify', entry, dtype: src.dtype }, params([b, c, h, w, patch, out.size]), [src.buffer], [out.buffer], grid1d(src.device, out.size, WG));
  return out;
}

/**
 * images [B, C, H, W] → patches [B, (H/P)·(W/P), C·P·P], feature order (c, ky, kx) so that
 * patches · reshape(convWeight [D, C, P, P], [D, C·P·P])ᵀ equals a stride-P convolution.
 */
export function patchify(images: Tensor, patch: number): Tensor {
  checkInputs('patchify', { images }, F32_F16);
  if (images.shape.length !== 4) throw shapeError('patchify', 'images must be [B, C, H, W]', { images });
  const [b, c, h, w] = images.shape as [number, number, number, number];
  if (!Number.isInteger(patch) || patch <= 0 || h % patch !== 0 || w % patch !== 0) {
    throw shapeError('patchify', `height and width must be multiples of the patch size ${patch}`, { images });
  }
  const outShape = [b, (h / patch) * (w / patch), c * patch * patch];
  const out = run('unfold', images, outShape, [b, c, h, w], patch);
  const inShape = images.shape;
  return record('patchify', [images], out, [], (g) => [run('fold', g, inShape, [b, c, h, w], patch)]);
}
