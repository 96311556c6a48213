// toF16 / toF32: dtype conversion (kernels/cast.wgsl), with backward (the gradient is cast back).
// f16 tensors hold packed binary16 pairs; the cast kernel needs no shader-f16 support, so f16
// storage works on every device (f16 arithmetic, e.g. the f16 matmul, needs 'shader-f16').
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, grid1d, params, F32_F16 } from './util.ts';

const WG = 256;

function castRaw(x: Tensor, to: 'f16' | 'f32'): Tensor {
  const device = x.device;
  const out = Tensor.empty(x.shape, device, to);
  if (x.size === 0) return out;
  const n = to === 'f16' ? Math.ceil(x.size / 2) : x.size;
  device.batch.dispatch({ file: 'cast', entry: to === 'f16' ? 'to_f16' : 'to_f32' }, params([x.size]), [x.buffer], [out.buffer], grid1d(device, n, WG));
  return out;
}

function cast(x: Tensor, to: 'f16' | 'f32'): Tensor {
  const op = to === 'f16' ? 'toF16' : 'toF32';
  checkInputs(op, { x }, F32_F16);
  if (x.dtype === to) return record(op, [x], x.view(), [], (g) => [g.view()]);
  const out = castRaw(x, to);
  const from = x.dtype;
  return record(op, [x], out, [], (g) => [castRaw(g, from)]);
}

/** Rounds an f32 tensor to f16 storage (nearest; overflow becomes ±inf). f16 input: a view. */
export function toF16(x: Tensor): Tensor {
  return cast(x, 'f16');
}

/** Widens an f16 tensor to f32 (exact). f32 input: a view. */
export function toF32(x: Tensor): Tensor {
  return cast(x, 'f32');
}
