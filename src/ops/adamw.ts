// Fused AdamW over flat optimizer buffers with global-norm clipping (kernels/adamw.wgsl).
// Not differentiable: these are the dispatches src/train/optimizer.ts runs once per step.
//
// A step is: gradSumSquaresPartials over each element range that has gradients (stage 1 of
// the norm, one partial per workgroup, written side by side into one partials buffer), then
// adamwUpdate over each range; every update workgroup re-sums all partials, so the norm and
// the clip factor need no separate pass and no atomics, and are deterministic.
import { Tensor } from '../tensor/tensor.ts';
import { checkInputs, grid1d, params } from './util.ts';

const WG = 256;
const ITEMS = 4;
/** Most stage-1 workgroups per range: bounds the re-sum every update workgroup does. */
const MAX_PARTIALS_PER_RANGE = 1024;

/** An element range [begin, end) of the flat buffers. */
export interface FlatRange {
  begin: number;
  end: number;
}

/** How many partial sums gradSumSquaresPartials writes for a range of `len` elements. */
export function partialCount(len: number): number {
  if (len <= 0) return 0;
  return Math.ceil(len / partialChunk(len));
}

function partialChunk(len: number): number {
  // At least WG * ITEMS elements per workgroup, and no more than MAX_PARTIALS_PER_RANGE groups.
  return Math.max(WG * ITEMS, Math.ceil(len / MAX_PARTIALS_PER_RANGE));
}

function checkRange(op: string, r: FlatRange, size: number): void {
  if (!Number.isInteger(r.begin) || !Number.isInteger(r.end) || r.begin < 0 || r.end > size || r.begin >= r.end) {
    throw new Error(`${op}: range [${r.begin}, ${r.end}) is empty or outside the flat buffer of ${size} elements`);
  }
}

/**
 * Stage 1 of the global gradient norm: writes partialCount(end - begin) sums of squares of
 * grad[begin, end) into partials starting at outOffset. Returns how many it wrote.
 */
export function gradSumSquaresPartials(grad: Tensor, range: FlatRange, partials: Tensor, outOffset: number): number {
  const device = checkInputs('gradSumSquaresPartials', { grad, partials });
  checkRange('gradSumSquaresPartials', range, grad.size);
  const len = range.end - range.begin;
  const chunk = partialChunk(len);
  const count = Math.ceil(len / chunk);
  if (outOffset + count > partials.size) {
    throw new Error(`gradSumSquaresPartials: ${count} partials at offset ${outOffset} do not fit ${partials.describe()}`);
  }
  device.batch.dispatch(
    { file: 'adamw', entry: 'sumsq_partials' },
    params([range.begin, range.end, chunk, outOffset]),
    [grad.buffer],
    [partials.buffer],
    [count, 1, 1],
  );
  return count;
}

/** Hyperparameters of one AdamW update (already reduced to what the kernel needs). */
export interface AdamWStepScalars {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global L2 norm to this; 0 turns clipping off. */
  maxNorm: number;
  /** The 1-based step count of the parameters in this range (for bias correction). */
  step: number;
}

export interface AdamWBuffers {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  /** Sums of squares from gradSumSquaresPartials over every range of this step. */
  partials: Tensor;
  /** [] or [1]: receives the global norm (before clipping) when writeNorm is set. */
  norm: Tensor;
}

/**
 * Stage 2 of the norm fused with the AdamW update of param/m/v over one range:
 * clip factor c = min(1, maxNorm / (norm + 1e-6)), g = c * grad, decoupled weight decay
 * p *= 1 - lr * wd, then the bias-corrected Adam step (torch.optim.AdamW order).
 */
export function adamwUpdate(b: AdamWBuffers, range: FlatRange, nPartials: number, s: AdamWStepScalars, writeNorm: boolean): void {
  const device = checkInputs('adamwUpdate', { ...b });
  const n = b.param.size;
  for (const [k, t] of Object.entries({ grad: b.grad, m: b.m, v: b.v })) {
    if (t.size !== n) throw new Error(`adamwUpdate: flat '${k}' has ${t.size} elements, param has ${n}`);
  }
  if (b.norm.size !== 1) throw new Error(`adamwUpdate: norm must hold one element, got ${b.norm.describe()}`);
  if (!Number.isInteger(nPartials) || nPartials < 1 || nPartials > b.partials.size) {
    throw new Error(`adamwUpdate: nPartials ${nPartials} outside 1..${b.partials.size}`);
  }
  if (!Number.isInteger(s.step) || s.step < 1) throw new Error(`adamwUpdate: step must be a positive integer, got ${s.step}`);
  checkRange('adamwUpdate', range, n);
  const bc1 = 1 - Math.pow(s.beta1, s.step);
  const bc2 = 1 - Math.pow(s.beta2, s.step);
  const u32 = [range.begin, range.end, nPartials, writeNorm ? 1 : 0];
  const f32 = [1 - s.lr * s.weightDecay, s.lr / bc1, 1 / Math.sqrt(bc2), s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2, s.eps, s.maxNorm];
  device.batch.dispatch(
    { file: 'adamw', entry: 'update' },
    params(u32, f32),
    [b.grad.buffer, b.partials.buffer],
    [b.param.buffer, b.m.buffer, b.v.buffer, b.norm.buffer],
    grid1d(device, Math.ceil((range.end - range.begin) / ITEMS), WG),
  );
}
