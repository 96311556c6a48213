// sum / mean over one axis (kernels/reduce.wgsl), with backward. f32 and f16 tensors (f16
// storage, f32 accumulation); the output and the gradient have the input's dtype.
import { Tensor, shapeStr } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, F32_F16, grid1d, normAxis, params, product } from './util.ts';

const WG = 256;

/** Reduces x viewed as [outer, k, inner] over k into a tensor of outShape (outer*inner elements). */
function reduceRaw(x: Tensor, outer: number, k: number, inner: number, alpha: number, outShape: readonly number[]): Tensor {
  const device = x.device;
  const out = Tensor.empty(outShape, device, x.dtype);
  device.batch.dispatch({ file: 'reduce', entry: 'reduce_axis', dtype: x.dtype }, params([outer, k, inner, 0], [alpha]), [x.buffer], [out.buffer], grid1d(device, outer * inner, WG));
  return out;
}

/** Broadcasts g ([outer, inner] elements) along a middle axis of length k into `shape`, times alpha. */
function expandRaw(g: Tensor, shape: readonly number[], outer: number, k: number, inner: number, alpha: number): Tensor {
  const device = g.device;
  if (g.size !== outer * inner) throw new Error(`internal: expandAxis ${g.describe()} to ${shapeStr(shape)} (outer ${outer}, inner ${inner})`);
  const out = Tensor.empty(shape, device, g.dtype);
  device.batch.dispatch({ file: 'reduce', entry: 'expand_axis', dtype: g.dtype }, params([outer, k, inner, 0], [alpha]), [g.buffer], [out.buffer], grid1d(device, outer * k * inner, WG));
  return out;
}

/** Broadcasts g (x's shape with `axis` removed or kept as 1) back to `shape`, times alpha. */
export function expandAxis(g: Tensor, shape: readonly number[], axis: number, alpha: number): Tensor {
  return expandRaw(g, shape, product(shape.slice(0, axis)), shape[axis], product(shape.slice(axis + 1)), alpha);
}

function reduceOp(op: 'sum' | 'mean', x: Tensor, axis: number | undefined, keepDims: boolean): Tensor {
  checkInputs(op, { x }, F32_F16);
  const inShape = x.shape;
  if (axis === undefined) {
    // Reduce everything: x viewed as [1, size, 1].
    if (x.size === 0) throw new Error(`${op}: cannot reduce the empty tensor ${x.describe()}`);
    const alpha = op === 'mean' ? 1 / x.size : 1;
    const out = reduceRaw(x, 1, x.size, 1, alpha, keepDims ? inShape.map(() => 1) : []);
    return record(op, [x], out, [], (g) => [expandRaw(g, inShape, 1, inShape.reduce((a, b) => a * b, 1), 1, alpha)]);
  }
  const ax = normAxis(op, axis, inShape.length);
  const k = inShape[ax];
  if (k === 0) throw new Error(`${op}: cannot reduce over an empty axis ${ax} of ${x.describe()}`);
  const alpha = op === 'mean' ? 1 / k : 1;
  const outShape = keepDims ? inShape.map((d, i) => (i === ax ? 1 : d)) : inShape.filter((_, i) => i !== ax);
  const out = reduceRaw(x, product(inShape.slice(0, ax)), k, product(inShape.slice(ax + 1)), alpha, outShape);
  return record(op, [x], out, [], (g) => [expandAxis(g, inShape, ax, alpha)]);
}

/** Sum over `axis` (all elements when omitted). */
export function sum(x: Tensor, axis?: number, keepDims = false): Tensor {
  return reduceOp('sum', x, axis, keepDims);
}

/** Mean over `axis` (all elements when omitted). */
export function mean(x: Tensor, axis?: number, keepDims = false): Tensor {
  return reduceOp('mean', x, axis, keepDims);
}

/** Sums a broadcast gradient g (shape = output) down to `shape` (a suffix of g's shape). */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  checkInputs('sumToShape', { g }, F32_F16);
  if (g.size === product(shape)) return g.view(shape);
  const inner = product(shape);
  const outer = g.size / inner;
  return reduceRaw(g, 1, outer, inner, 1, shape);
}
