// Row-wise L2 normalisation over the last dim (kernels/l2normalize.wgsl), with backward.
// f32 and f16 tensors (f16 storage, f32 math; the saved row norms stay f32); the output and the
// gradient have the input's dtype.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, checkSameDtype, grid1d, params, shapeError, F32_F16 } from './util.ts';

const KERNEL = 'l2normalize';

/** Workgroup size for one row of n elements: a power of two in [32, 256] (the WGSL default is 256). */
function rowWorkgroup(n: number): { WG: number } | undefined {
  const wg = Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
  return wg === 256 ? undefined : { WG: wg };
}

/**
 * x / max(||x||, eps) over the last dim, like torch.nn.functional.normalize(x, dim=-1).
 * Rows whose norm is at most eps are divided by eps instead (no division by zero).
 */
export function l2Normalize(x: Tensor, eps = 1e-12): Tensor {
  const device = checkInputs('l2Normalize', { x }, F32_F16);
  const dtype = x.dtype;
  if (x.shape.length === 0) throw shapeError('l2Normalize', 'needs at least one dim (rows are normalised over the last dim)', { x });
  const d = x.shape[x.shape.length - 1];
  if (d === 0) throw shapeError('l2Normalize', 'the last dim is empty', { x });
  if (!(eps > 0) || !Number.isFinite(eps)) throw new Error(`l2Normalize: eps must be a positive finite number, got ${eps}`);
  const rows = x.size / d;
  const y = Tensor.empty(x.shape, device, dtype);
  const norms = Tensor.empty([rows], device);
  const u = params([rows, d, 0, 0], [eps]);
  const overrides = rowWorkgroup(d);
  device.batch.dispatch({ file: KERNEL, entry: 'forward', dtype, overrides }, u, [x.buffer], [y.buffer, norms.buffer], grid1d(device, rows, 1));
  const out = record('l2Normalize', [x], y, [y, norms], (g, [sy, sn]) => {
    checkSameDtype('l2Normalize backward', { y: sy, g });
    const gx = Tensor.empty(sy.shape, g.device, dtype);
    g.device.batch.dispatch({ file: KERNEL, entry: 'backward', dtype, overrides }, u, [g.buffer, sy.buffer, sn.buffer], [gx.buffer], grid1d(g.device, rows, 1));
    return [gx];
  });
  norms.dispose();
  return out;
}
