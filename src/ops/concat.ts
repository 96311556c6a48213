// concat and slice along one axis (kernels/concat.wgsl), with backward.
// Both are slab copies on tensors viewed as [outer, axis_len, inner]: concat's backward slices
// the gradient, slice's backward scatters the gradient into zeros. f32 and f16 tensors (pure
// copies; concat's inputs share one dtype); outputs and gradients keep the dtype.
import { Tensor, shapeStr } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, checkInputsOneDtype, F32_F16, grid1d, normAxis, params, product, shapeError } from './util.ts';

const WG = 256;

interface Slab {
  outer: number;
  inner: number;
}

function slabOf(shape: readonly number[], axis: number): Slab {
  return { outer: product(shape.slice(0, axis)), inner: product(shape.slice(axis + 1)) };
}

/** dst[o, dstOff + a, i] = src[o, srcOff + a, i] for a < len. */
function copySlab(src: Tensor, srcOff: number, dst: Tensor, dstOff: number, axis: number, len: number): void {
  const { outer, inner } = slabOf(src.shape, axis);
  const n = outer * len * inner;
  if (n === 0) return;
  const device = src.device;
  device.batch.dispatch(
    { file: 'concat', entry: 'copy_slab', dtype: src.dtype },
    params([n, len, inner, src.shape[axis], srcOff, dst.shape[axis], dstOff, 0]),
    [src.buffer],
    [dst.buffer],
    grid1d(device, n, WG),
  );
}

/** x[..., start:end, ...] along axis as a new tensor (no validation). */
function sliceRaw(x: Tensor, axis: number, start: number, end: number): Tensor {
  const out = Tensor.empty(x.shape.map((d, i) => (i === axis ? end - start : d)), x.device, x.dtype);
  copySlab(x, start, out, 0, axis, end - start);
  return out;
}

/** A tensor of `shape` that is zero except out[..., start:start+len, ...] = g. */
function padRaw(g: Tensor, shape: readonly number[], axis: number, start: number): Tensor {
  const device = g.device;
  const out = Tensor.empty(shape, device, g.dtype);
  if (out.size === 0) return out;
  const { inner } = slabOf(shape, axis);
  device.batch.dispatch(
    { file: 'concat', entry: 'pad_slab', dtype: g.dtype },
    params([out.size, g.shape[axis], inner, g.shape[axis], 0, shape[axis], start, 0]),
    [g.buffer],
    [out.buffer],
    grid1d(device, out.size, WG),
  );
  return out;
}

/** Joins tensors along `axis` like torch.cat; all other dims must match. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error('concat: needs at least one tensor');
  const named: Record<string, Tensor> = {};
  xs.forEach((t, i) => (named[`xs[${i}]`] = t));
  const device = checkInputsOneDtype('concat', named);
  const first = xs[0];
  const rank = first.shape.length;
  const ax = normAxis('concat', axis, rank);
  for (let k = 1; k < xs.length; k++) {
    const s = xs[k].shape;
    if (s.length !== rank || s.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw shapeError('concat', `xs[${k}] does not match xs[0] on the dims other than axis ${ax}`, named);
    }
  }
  const lens = xs.map((t) => t.shape[ax]);
  const outShape = first.shape.map((d, i) => (i === ax ? lens.reduce((a, b) => a + b, 0) : d));
  const out = Tensor.empty(outShape, device, first.dtype);
  let off = 0;
  for (const t of xs) {
    copySlab(t, 0, out, off, ax, t.shape[ax]);
    off += t.shape[ax];
  }
  const needsGrad = xs.map((t) => t.requiresGrad);
  return record('concat', [...xs], out, [], (g) => {
    let start = 0;
    return lens.map((len, k) => {
      const s = start;
      start += len;
      return needsGrad[k] ? sliceRaw(g, ax, s, s + len) : null;
    });
  });
}

/** x[..., start:end, ...] along `axis` (like x.narrow); negative axis/start/end count from the end. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  checkInputs('slice', { x }, F32_F16);
  const ax = normAxis('slice', axis, x.shape.length);
  const dim = x.shape[ax];
  const s = start < 0 ? start + dim : start;
  const e = end < 0 ? end + dim : end;
  if (!Number.isInteger(s) || !Number.isInteger(e) || s < 0 || e > dim || s > e) {
    throw new Error(`slice: range ${start}:${end} is out of range for axis ${ax} (length ${dim}) of x=${shapeStr(x.shape)}`);
  }
  const out = sliceRaw(x, ax, s, e);
  const inShape = x.shape;
  return record('slice', [x], out, [], (g) => [padRaw(g, inShape, ax, s)]);
}
