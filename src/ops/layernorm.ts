// LayerNorm over the last dim (kernels/layernorm.wgsl), fused forward and backward.
// Forward: one workgroup per row computes the statistics in one sweep and writes y, saving
// mean and rstd ([rows] each) for backward. Backward: dx with one workgroup per row from the
// saved statistics; dweight / dbias reduced over all rows in two deterministic stages
// (per-chunk partial sums, then a sum over chunks) — no atomics.
// f32 and f16 tensors: x, weight and bias in one dtype (frozen f16 base weights with f16
// activations), f16 storage with f32 math. mean / rstd and the dweight / dbias partial sums are
// f32 whatever the dtype (small, and the backward needs them unrounded); y and every gradient
// have the input's dtype.
import { Tensor, type DType } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, checkSameDtype, grid1d, params, shapeError, F32_F16 } from './util.ts';

/** Workgroup size of the column kernels (dweight / dbias). */
const COLUMN_WG = 64;
/** Rows summed per chunk in the first dweight / dbias stage (grown if chunks would pass 65535). */
const CHUNK_ROWS = 64;

/** Workgroup size for a row of length d: a power of two in [32, 256], no wider than the row needs. */
function rowWorkgroupSize(d: number): number {
  let wg = 32;
  while (wg < d && wg < 256) wg *= 2;
  return wg;
}

interface RowLayout {
  rows: number;
  d: number;
  /** Storage type of x, weight, bias, y and the gradients (the kernel's T). */
  dtype: DType;
}

function rowKernel(entry: string, layout: RowLayout, eps: number, inputs: Tensor[], outputs: Tensor[]): void {
  const device = inputs[0].device;
  if (layout.rows === 0) return;
  device.batch.dispatch(
    { file: 'layernorm', entry, dtype: layout.dtype, overrides: { WG: rowWorkgroupSize(layout.d) } },
    params([layout.rows, layout.d, 0, 0], [eps]),
    inputs.map((t) => t.buffer),
    outputs.map((t) => t.buffer),
    grid1d(device, layout.rows, 1),
  );
}

/** dweight = sum over rows of g * xhat, dbias = sum over rows of g, both [D]. */
function paramGrads(x: Tensor, weight: Tensor, g: Tensor, mean: Tensor, rstd: Tensor, { rows, d, dtype }: RowLayout): [Tensor, Tensor] {
  const device = x.device;
  const dweight = Tensor.empty([d], device, dtype);
  const dbias = Tensor.empty([d], device, dtype);
  const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
  const chunkRows = Math.max(CHUNK_ROWS, Math.ceil(rows / maxGroups));
  const chunks = Math.ceil(rows / chunkRows);
  // f32 partial sums for either dtype; only the final sums are rounded to the storage type.
  const partials = Tensor.empty([2, chunks, d], device);
  const u = params([rows, d, chunkRows, chunks], [0]);
  device.batch.dispatch(
    { file: 'layernorm', entry: 'ln_backward_params_partial', dtype, overrides: { WG: COLUMN_WG } },
    u,
    [x.buffer, weight.buffer, g.buffer, mean.buffer, rstd.buffer],
    [partials.buffer],
    [Math.ceil(d / COLUMN_WG), chunks, 1],
  );
  device.batch.dispatch(
    { file: 'layernorm', entry: 'ln_backward_params_final', dtype, overrides: { WG: COLUMN_WG } },
    u,
    [partials.buffer],
    [dweight.buffer, dbias.buffer],
    grid1d(device, d, COLUMN_WG),
  );
  partials.dispose();
  return [dweight, dbias];
}

/**
 * LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias, with the biased
 * variance (as PyTorch). weight and bias must be [D] with D the last dim of x, and have its
 * dtype (f32 or f16).
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  checkInputs('layerNorm', { x, weight, bias }, F32_F16);
  const dtype = checkSameDtype('layerNorm', { x, weight, bias });
  if (x.shape.length === 0) throw shapeError('layerNorm', 'x must have at least one dimension (it is normalised over the last one)', { x, weight, bias });
  const d = x.shape[x.shape.length - 1];
  if (weight.shape.length !== 1 || weight.shape[0] !== d || bias.shape.length !== 1 || bias.shape[0] !== d) {
    throw shapeError('layerNorm', `weight and bias must both be [${d}] (the last dim of x)`, { x, weight, bias });
  }
  if (d === 0) throw shapeError('layerNorm', 'the last dim of x must not be 0', { x, weight, bias });
  if (!Number.isFinite(eps) || eps < 0) throw new Error(`layerNorm: eps must be a finite number >= 0 (got ${eps})`);
  const layout: RowLayout = { rows: x.size / d, d, dtype };
  const device = x.device;
  const y = Tensor.empty(x.shape, device, dtype);
  const mean = Tensor.empty([layout.rows], device);
  const rstd = Tensor.empty([layout.rows], device);
  rowKernel('ln_forward', layout, eps, [x, weight, bias], [y, mean, rstd]);
  // Backward computes only the gradients autograd needs (needs[i] for x, weight, bias): a frozen
  // LayerNorm skips the dweight / dbias kernels, an input that needs no gradient skips dx.
  const out = record('layerNorm', [x, weight, bias], y, [x, weight, mean, rstd], (g, [xs, ws, ms, rs], needs) => {
    const [needX, needWeight, needBias] = needs;
    checkSameDtype('layerNorm backward', { x: xs, g });
    let dx: Tensor | null = null;
    if (needX) {
      dx = Tensor.empty(xs.shape, xs.device, dtype);
      rowKernel('ln_backward_input', layout, 0, [xs, ws, g, ms, rs], [dx]);
    }
    if (!needWeight && !needBias) return [dx, null, null];
    const [dweight, dbias] = paramGrads(xs, ws, g, ms, rs, layout);
    if (!needWeight) dweight.dispose();
    if (!needBias) dbias.dispose();
    return [dx, needWeight ? dweight : null, needBias ? dbias : null];
  });
  // The tape holds its own views of mean / rstd (or nothing was recorded): drop ours.
  mean.dispose();
  rstd.dispose();
  return out;
}
