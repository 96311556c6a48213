// Shared pieces of the f16 op tests: a test runner that is skipped (and counted as skipped by
// uvu, with the reason printed once) on an adapter without 'shader-f16', the f16 unit roundoff,
// and the tolerance rule every f16 op test states its constant for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { scope, type Tensor } from '../../src/tensor/tensor.ts';
import { backward, noGrad } from '../../src/tensor/autograd.ts';
import { toF16, toF32 } from '../../src/ops/index.ts';
import { device, expectTensor, fixture, type Tolerance } from './fixtures.ts';

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

/** One fixture case of an op: its name (keys `<name>.in<i>`, `.out`, `.gout`, `.grad<i>`), input count and the op. */
export type FixtureCase = readonly [name: string, nIn: number, fn: (xs: Tensor[]) => Tensor, ...rest: unknown[]];

/**
 * A PyTorch fixture case run on f16: the f32 inputs are rounded by toF16 (they stay f32 leaves,
 * so the f16 gradients reach them widened exactly through toF16's backward), the output must be
 * f16 and within f16Tol(ref, kOut) of the fixture's, each gradient within f16Tol(ref, kGrad).
 */
export async function checkF16Case(fixtureName: string, [name, nIn, fn]: FixtureCase, kOut: number, kGrad: number): Promise<void> {
  const fx = fixture(fixtureName);
  const ins = Array.from({ length: nIn }, (_, i) => fx.tensor(`${name}.in${i}`, true).keep());
  try {
    const out = scope(() => {
      const y = fn(ins.map((t) => toF16(t)));
      assert.is(y.dtype, 'f16', `${name}: f16 inputs give an f16 output`);
      return toF32(y).keep();
    });
    const want = fx.get(`${name}.out`);
    await expectTensor(out, want, f16Tol(want.data, kOut), `${name} f16 forward`);
    scope(() => backward(out, fx.tensor(`${name}.gout`)));
    out.dispose();
    for (let i = 0; i < nIn; i++) {
      assert.ok(ins[i].grad, `${name}: input ${i} has a gradient`);
      assert.is(ins[i].grad!.dtype, 'f32');
      const g = fx.get(`${name}.grad${i}`);
      await expectTensor(ins[i].grad!, g, f16Tol(g.data, kGrad), `${name} f16 grad ${i}`);
    }
  } finally {
    for (const t of ins) t.dispose();
  }
}

/** f16 leaves get f16 gradients, bit-equal to the ones that reach f32 leaves through toF16. */
export async function checkF16LeafGradients(fixtureName: string, cases: readonly FixtureCase[]): Promise<void> {
  const fx = fixture(fixtureName);
  for (const [name, nIn, fn] of cases) {
    const ins = Array.from({ length: nIn }, (_, i) => fx.tensor(`${name}.in${i}`, true).keep());
    const leaves = ins.map((t) => {
      const h = noGrad(() => toF16(t)).keep();
      h.requiresGrad = true;
      return h;
    });
    try {
      scope(() => backward(toF32(fn(ins.map((t) => toF16(t)))), fx.tensor(`${name}.gout`)));
      scope(() => backward(fn(leaves), toF16(fx.tensor(`${name}.gout`))));
      for (let i = 0; i < nIn; i++) {
        assert.is(leaves[i].grad!.dtype, 'f16', `${name}: grad ${i} of an f16 leaf`);
        assert.equal(Array.from(await leaves[i].grad!.read()), Array.from(await ins[i].grad!.read()), `${name} grad ${i}`);
      }
    } finally {
      for (const t of [...ins, ...leaves]) t.dispose();
    }
  }
}
