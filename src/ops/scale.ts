// out = alpha * x + beta (kernels/scale.wgsl), with backward. f32 and f16 tensors (f16 storage,
// f32 math); the output and the gradient have the input's dtype.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, F32_F16, grid1d, params } from './util.ts';

const WG = 256;

function affineRaw(x: Tensor, alpha: number, beta: number): Tensor {
  const out = Tensor.empty(x.shape, x.device, x.dtype);
  x.device.batch.dispatch({ file: 'scale', entry: 'main', dtype: x.dtype }, params([x.size, 0, 0, 0], [alpha, beta]), [x.buffer], [out.buffer], grid1d(x.device, x.size, WG));
  return out;
}

/** alpha * x + beta. */
export function affine(x: Tensor, alpha: number, beta = 0): Tensor {
  checkInputs('affine', { x }, F32_F16);
  if (!Number.isFinite(alpha) || !Number.isFinite(beta)) throw new Error(`affine: alpha (${alpha}) and beta (${beta}) must be finite numbers`);
  const out = affineRaw(x, alpha, beta);
  return record('affine', [x], out, [], (g) => [affineRaw(g, alpha, 0)]);
}

/** alpha * x. */
export function scale(x: Tensor, alpha: number): Tensor {
  return affine(x, alpha, 0);
}

export function neg(x: Tensor): Tensor {
  return affine(x, -1, 0);
}
