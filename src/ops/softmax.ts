// softmax over the last axis (kernels/softmax.wgsl), with backward. One workgroup per row;
// backward uses the saved output y: dx = y * (g - sum(g * y)) per row. f32 and f16 tensors
// (f16 storage, f32 math: the max, the sum of exponentials and the backward's dot product stay
// f32); the output and the gradient have the input's dtype.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, checkSameDtype, grid1d, params, shapeError, F32_F16 } from './util.ts';

/** Workgroup size for a row of length d: a power of two in [32, 256], no wider than the row needs. */
function rowWorkgroupSize(d: number): number {
  let wg = 32;
  while (wg < d && wg < 256) wg *= 2;
  return wg;
}

function rowKernel(entry: 'softmax_forward' | 'softmax_backward', inputs: Tensor[], shape: readonly number[]): Tensor {
  const device = inputs[0].device;
  const dtype = inputs[0].dtype;
  const out = Tensor.empty(shape, device, dtype);
  if (out.size === 0) return out;
  const d = shape[shape.length - 1];
  const rows = out.size / d;
  device.batch.dispatch(
    { file: 'softmax', entry, dtype, overrides: { WG: rowWorkgroupSize(d) } },
    params([rows, d]),
    inputs.map((t) => t.buffer),
    [out.buffer],
    grid1d(device, rows, 1),
  );
  return out;
}

/** Softmax over the last axis (numerically stable: the row max is subtracted first). */
export function softmax(x: Tensor): Tensor {
  checkInputs('softmax', { x }, F32_F16);
  if (x.shape.length === 0) throw shapeError('softmax', 'x must have at least one dimension (softmax runs over the last axis)', { x });
  const y = rowKernel('softmax_forward', [x], x.shape);
  return record('softmax', [x], y, [y], (g, [ys]) => {
    checkSameDtype('softmax backward', { y: ys, g });
    return [rowKernel('softmax_backward', [ys, g], ys.shape)];
  });
}
