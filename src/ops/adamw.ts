// Fused AdamW over flat optimizer buffers with global-norm clipping (kernels/adamw.wgsl).
// Not differentiable: these are the dispatches src/train/optimizer.ts runs once per step.
//
// A step is: gradSumSquaresPartials over each element range that has gradients (stage 1 of
// the norm, a few partial sums per range, written side by side into one partials buffer), one
// gradNormFromPartials (stage 2, one workgroup, writes the norm), then adamwUpdate over each
// range, which reads the norm and applies the clip factor itself. No atomics: the norm and
// every update are bit-reproducible.
import { Tensor } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import { checkInputs, grid1d, params } from './util.ts';

/**
 * Blocking per adapter class. GPUs: 256-wide workgroups, ≤ 1024 partials per range. CPU
 * adapters (lavapipe): the reductions run 8-wide workgroups (one SIMD vector, so the tree's
 * barriers are nearly free) over large chunks, ≤ 64 partials per range; measured on lavapipe
 * over the ViT-B/32 LoRA set (docs/kernels.md). The class is device.blockingClass (the detected
 * one unless device.settings.blockingClass says otherwise).
 */
interface Blocking {
  /** Workgroup size of sumsq_partials and norm_finalize. */
  reduceWg: number;
  /** Most stage-1 workgroups (partials) per range. */
  maxPartials: number;
  /** Workgroup size and elements per invocation of update. */
  updateWg: number;
  items: number;
}

const BLOCKING: Record<'cpu' | 'gpu', Blocking> = {
  gpu: { reduceWg: 256, maxPartials: 1024, updateWg: 256, items: 4 },
  cpu: { reduceWg: 8, maxPartials: 64, updateWg: 8, items: 32 },
};

function blocking(device: Device): Blocking {
  return BLOCKING[device.blockingClass];
}

/** An element range [begin, end) of the flat buffers. */
export interface FlatRange {
  begin: number;
  end: number;
}

/** How many partial sums gradSumSquaresPartials writes on this device for a range of `len` elements. */
export function partialCount(device: Device, len: number): number {
  if (len <= 0) return 0;
  return Math.ceil(len / partialChunk(blocking(device), len));
}

function partialChunk(b: Blocking, len: number): number {
  // At least 4 elements per invocation, and no more than maxPartials workgroups.
  return Math.max(b.reduceWg * 4, Math.ceil(len / b.maxPartials));
}

function checkRange(op: string, r: FlatRange, size: number): void {
  if (!Number.isInteger(r.begin) || !Number.isInteger(r.end) || r.begin < 0 || r.end > size || r.begin >= r.end) {
    throw new Error(`${op}: range [${r.begin}, ${r.end}) is empty or outside the flat buffer of ${size} elements`);
  }
}

/**
 * Stage 1 of the global gradient norm: writes partialCount(end - begin) sums of squares of
 * gradScale · grad[begin, end) into partials starting at outOffset. Returns how many it wrote.
 */
export function gradSumSquaresPartials(grad: Tensor, range: FlatRange, partials: Tensor, outOffset: number, gradScale = 1): number {
  const device = checkInputs('gradSumSquaresPartials', { grad, partials });
  checkRange('gradSumSquaresPartials', range, grad.size);
  const len = range.end - range.begin;
  const b = blocking(device);
  const chunk = partialChunk(b, len);
  const count = Math.ceil(len / chunk);
  if (outOffset + count > partials.size) {
    throw new Error(`gradSumSquaresPartials: ${count} partials at offset ${outOffset} do not fit ${partials.describe()}`);
  }
  device.batch.dispatch(
    { file: 'adamw', entry: 'sumsq_partials', overrides: { WG: b.reduceWg } },
    params([range.begin, range.end, chunk, outOffset], [gradScale]),
    [grad.buffer],
    [partials.buffer],
    [count, 1, 1],
  );
  return count;
}

/** Stage 2 of the global gradient norm: norm[0] = sqrt(sum of partials[0, nPartials)), one workgroup. */
export function gradNormFromPartials(partials: Tensor, nPartials: number, norm: Tensor): void {
  const device = checkInputs('gradNormFromPartials', { partials, norm });
  if (!Number.isInteger(nPartials) || nPartials < 1 || nPartials > partials.size) {
    throw new Error(`gradNormFromPartials: nPartials ${nPartials} outside 1..${partials.size}`);
  }
  if (norm.size !== 1) throw new Error(`gradNormFromPartials: norm must hold one element, got ${norm.describe()}`);
  device.batch.dispatch(
    { file: 'adamw', entry: 'norm_finalize', overrides: { WG: blocking(device).reduceWg } },
    params([nPartials]),
    [partials.buffer],
    [norm.buffer],
    [1, 1, 1],
  );
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
  /** Multiplies every gradient before use: 1/loss_scale for gradients of a scaled loss (default 1). */
  gradScale?: number;
}

export interface AdamWBuffers {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  /** [] or [1]: the global gradient norm before clipping, from gradNormFromPartials. */
  norm: Tensor;
}

/**
 * The AdamW update of param/m/v over one range, clipping fused in:
 * clip factor c = min(1, maxNorm / (norm + 1e-6)), g = c * grad, decoupled weight decay
 * p *= 1 - lr * wd, then the bias-corrected Adam step (torch.optim.AdamW order).
 */
export function adamwUpdate(b: AdamWBuffers, range: FlatRange, s: AdamWStepScalars): void {
  const device = checkInputs('adamwUpdate', { ...b });
  const n = b.param.size;
  for (const [k, t] of Object.entries({ grad: b.grad, m: b.m, v: b.v })) {
    if (t.size !== n) throw new Error(`adamwUpdate: flat '${k}' has ${t.size} elements, param has ${n}`);
  }
  if (b.norm.size !== 1) throw new Error(`adamwUpdate: norm must hold one element, got ${b.norm.describe()}`);
  if (!Number.isInteger(s.step) || s.step < 1) throw new Error(`adamwUpdate: step must be a positive integer, got ${s.step}`);
  checkRange('adamwUpdate', range, n);
  const bc1 = 1 - Math.pow(s.beta1, s.step);
  const bc2 = 1 - Math.pow(s.beta2, s.step);
  const u32 = [range.begin, range.end, 0, 0];
  const f32 = [1 - s.lr * s.weightDecay, s.lr / bc1, 1 / Math.sqrt(bc2), s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2, s.eps, s.maxNorm, s.gradScale ?? 1];
  const bl = blocking(device);
  device.batch.dispatch(
    { file: 'adamw', entry: 'update', overrides: { WG: bl.updateWg, ITEMS: bl.items } },
    params(u32, f32),
    [b.grad.buffer, b.norm.buffer],
    [b.param.buffer, b.m.buffer, b.v.buffer],
    grid1d(device, Math.ceil((range.end - range.begin) / bl.items), bl.updateWg),
  );
}
