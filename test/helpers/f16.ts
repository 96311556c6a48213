// Shared pieces of the f16 op tests: a test runner that is skipped (and counted as skipped by
// uvu, with the reason printed once) on an adapter without 'shader-f16', the f16 unit roundoff,
// and the tolerance rule every f16 op test states its constant for.
import { test } from 'uvu';
import type { Tensor } from '../../src/tensor/tensor.ts';
import { toF16 } from '../../src/ops/index.ts';
import { device, type Tolerance } from './fixtures.ts';

/** Unit roundoff of f16 (binary16, 11-bit significand): |fl(x) − x| ≤ U16·|x| for normal x. */
export const U16 = 2 ** -11;

const hasF16 = (await device()).hasFeature('shader-f16');
if (!hasF16) console.log("  [f16] the adapter has no 'shader-f16': the f16 op tests are skipped");

/** `test` where the adapter has shader-f16, `test.skip` (counted as skipped) where it has not. */
export const testF16 = hasF16 ? test : test.skip;

/**
 * Tolerance for an f16 result against a reference computed from the unrounded f32 inputs.
 * Each f16 rounding (of an input, a stored intermediate, the output) contributes at most U16
 * relative error, amplified by the op's sensitivity to it; `k` is the op's budget of such
 * roundings times its amplification, stated and justified where each test calls this. The
 * bound is relative to the element (rtol) plus relative to the tensor's largest magnitude (atol),
 * because cancellation (sums, LayerNorm's centring, softmax gradients) turns a relative input
 * error into an absolute one on the scale of the largest term.
 */
export function f16Tol(ref: ArrayLike<number>, k: number): Tolerance {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ref[i]));
  return { rtol: k * U16, atol: k * U16 * m };
}

/** toF16 of each tensor, kept (the caller disposes them). */
export function halves(ts: readonly Tensor[]): Tensor[] {
  return ts.map((t) => toF16(t).keep());
}
