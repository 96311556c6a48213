// gatherRows (kernels/gather.wgsl): select rows along one axis by host-side integer indices,
// with backward (scatter-add of the gradient, repeated indices summed without atomics). f32 and
// f16 tensors (f16 storage, the scatter-add in f32); the output and the gradient keep the dtype.
import { Tensor, shapeStr } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import type { Device } from '../gpu/device.ts';
import { checkInputs, F32_F16, grid1d, normAxis, params, product } from './util.ts';

const WG = 256;

/**
 * Runs one gather.wgsl entry with `index` uploaded into a scratch u32 buffer. The buffer goes
 * back to the pool right after the dispatch is recorded: later users of it are recorded later,
 * so batch order keeps this dispatch's reads first.
 */
function dispatchWithIndex(device: Device, entry: 'gather_rows' | 'scatter_rows', src: Tensor, index: Uint32Array, dst: Tensor, axis: number): void {
  const inner = product(dst.shape.slice(axis + 1));
  const buf = device.pool.acquire(Math.max(4, index.byteLength), 'gather indices');
  try {
    device.batch.upload(buf, index);
    device.batch.dispatch({ file: 'gather', entry, dtype: src.dtype }, params([dst.size, inner, src.shape[axis], dst.shape[axis]]), [src.buffer, buf], [dst.buffer], grid1d(device, dst.size, WG));
  } finally {
    device.pool.release(buf);
  }
}

/** [start[0..A+1) | ks[0..K)]: for each row a, the positions k with idx[k] == a, in increasing k. */
function inverseIndex(idx: Uint32Array, rows: number): Uint32Array {
  const out = new Uint32Array(rows + 1 + idx.length);
  for (const a of idx) out[a + 1]++;
  for (let a = 0; a < rows; a++) out[a + 1] += out[a];
  const fill = out.slice(0, rows);
  idx.forEach((a, k) => (out[rows + 1 + fill[a]++] = k));
  return out;
}

/**
 * Rows of x along `axis` (default 0) picked by `indices`, like torch.index_select:
 * gatherRows(h [B, N, D], [0], 1) -> [B, 1, D] (the CLS token). Indices may repeat.
 */
export function gatherRows(x: Tensor, indices: readonly number[] | Int32Array, axis = 0): Tensor {
  const device = checkInputs('gatherRows', { x }, F32_F16);
  const ax = normAxis('gatherRows', axis, x.shape.length);
  const rows = x.shape[ax];
  const idx = new Uint32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const v = indices[k];
    if (!Number.isInteger(v) || v < 0 || v >= rows) {
      throw new Error(`gatherRows: index ${v} (at position ${k}) is out of range for axis ${ax} (length ${rows}) of x=${shapeStr(x.shape)}`);
    }
    idx[k] = v;
  }
  const inShape = x.shape;
  const out = Tensor.empty(inShape.map((d, i) => (i === ax ? idx.length : d)), device, x.dtype);
  if (out.size > 0) dispatchWithIndex(device, 'gather_rows', x, idx, out, ax);
  return record('gatherRows', [x], out, [], (g) => {
    const gx = Tensor.empty(inShape, g.device, g.dtype);
    if (gx.size > 0) dispatchWithIndex(g.device, 'scatter_rows', g, inverseIndex(idx, rows), gx, ax);
    return [gx];
  });
}
