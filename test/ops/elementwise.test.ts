import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { add, sub, mul, affine, scale, neg, sum, mean, biasAdd, axpyNoGrad, toF16, toF32 } from '../../src/ops/index.ts';
import { backward, noGrad } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { fixture, expectTensor, assertClose, F32_TOL, gradCheck, device, randn, scaledTol } from '../helpers/fixtures.ts';
import { testF16, f16Tol, checkF16Case, checkF16LeafGradients } from '../helpers/f16.ts';

type Fn = (xs: Tensor[]) => Tensor;

const CASES: [string, number, Fn, { rtol: number; atol: number }?][] = [
  ['add_same', 2, ([a, b]) => add(a, b)],
  ['add_bias', 2, ([a, b]) => biasAdd(a, b)],
  ['add_rows', 2, ([a, b]) => add(a, b)],
  ['add_left', 2, ([a, b]) => add(a, b)],
  ['sub_bcast', 2, ([a, b]) => sub(a, b)],
  ['mul_same', 2, ([a, b]) => mul(a, b)],
  ['mul_bcast', 2, ([a, b]) => mul(a, b)],
  ['affine', 1, ([x]) => affine(x, 0.37, -1.25)],
  ['sum_axis0', 1, ([x]) => sum(x, 0)],
  ['sum_axis1', 1, ([x]) => sum(x, 1)],
  ['sum_last', 1, ([x]) => sum(x, -1)],
  ['mean_axis1', 1, ([x]) => mean(x, 1)],
  ['mean_all', 1, ([x]) => mean(x)],
  // Sequential f32 summation of 197 terms vs float64: error grows ~ sqrt(n)·eps·|terms|.
  ['sum_all', 1, ([x]) => sum(x), { rtol: 1e-5, atol: 2e-5 }],
];

test.before(async () => {
  await device();
});

for (const [name, nIn, fn, tol] of CASES) {
  test(`${name}: forward and backward match PyTorch`, async () => {
    const fx = fixture('elementwise');
    const ins = Array.from({ length: nIn }, (_, i) => fx.tensor(`${name}.in${i}`, true).keep());
    try {
      const out = scope(() => fn(ins).keep());
      await expectTensor(out, fx.get(`${name}.out`), tol ?? F32_TOL, `${name} forward`);
      scope(() => backward(out, fx.tensor(`${name}.gout`)));
      out.dispose();
      for (let i = 0; i < nIn; i++) {
        assert.ok(ins[i].grad, `${name}: input ${i} has a gradient`);
        // Broadcast gradients sum up to 300 terms in f32: atol 2e-6 × max|grad| (scaledTol)
        // follows the size of the sums, and of mean's 1/n gradients (~5e-3), which a fixed
        // atol would not. The worst measured on lavapipe is below 0.1 of it.
        const want = fx.get(`${name}.grad${i}`);
        await expectTensor(ins[i].grad!, want, scaledTol(want.data, 2e-6), `${name} grad ${i}`);
      }
    } finally {
      for (const t of ins) t.dispose();
    }
  });
}

test('finite differences: broadcast mul, bias add, mean', async () => {
  await gradCheck('mul_bcast', ([a, b]) => mul(a, b), [
    { shape: [3, 5], data: randn(15, 1) },
    { shape: [5], data: randn(5, 2) },
  ]);
  // b enters through a broadcast add and a same-shape product, so its gradient is
  // sum-over-the-leading-axis(w) - 2·b·sum(w) and a wrong broadcast reduction cannot cancel.
  await gradCheck('add_sub_bcast', ([a, b]) => sub(add(a, b), mul(b, b)), [
    { shape: [2, 3, 4], data: randn(24, 3) },
    { shape: [3, 4], data: randn(12, 4) },
  ]);
  await gradCheck('biasAdd', ([x, bias]) => biasAdd(x, bias), [
    { shape: [4, 3, 5], data: randn(60, 6) },
    { shape: [5], data: randn(5, 7) },
  ]);
  await gradCheck('mean_axis0', ([a]) => mean(a, 0), [{ shape: [7, 3], data: randn(21, 5) }]);
});

test('shape mismatch names the op and shapes', async () => {
  const a = fromArray(randn(6, 1), [2, 3]);
  const b = fromArray(randn(4, 1), [4]);
  assert.throws(() => add(a, b), /add: shapes do not broadcast.*a=\[2, 3\], b=\[4\]/);
  assert.throws(() => biasAdd(a, fromArray(randn(2, 1), [2])), /biasAdd: bias must be \[3\]/);
  a.dispose();
  b.dispose();
});

// f16: the same cases on f16 tensors (f16 storage, f32 math: elementwise.wgsl, scale.wgsl and
// reduce.wgsl with the f16 prelude). The fixture inputs are rounded to f16 with toF16 (the leaves
// stay f32, so each gradient comes back as f32 through toF16's backward), the op runs on the f16
// tensors, and toF32 of its f16 output is compared with the PyTorch reference computed from the
// unrounded f32 inputs. backward(toF32(out), gout) rounds gout to f16, so every backward kernel
// runs on f16 tensors too. Tolerance f16Tol(ref, k): |err| ≤ k·U16·(|ref| + max|ref|), U16 = 2^-11.
// k per op, [forward, gradients], from the roundings (round to nearest: ≤ U16·|value| each) and
// the op's amplification; the worst k each case needs on lavapipe is the measured value:
// - add, sub, biasAdd: a and b are rounded, then a ± b once more when stored: U16·(|a| + |b| +
//   |out|), ≤ 2·U16·(|out| + max|out|) while |a|, |b| ≤ max|out| (true here). k = 2. Gradients:
//   gout rounded, and for a broadcast operand sumToShape adds up to 394 rounded terms in f32 (a
//   random walk, far below n·U16) before one more rounding. Measured 0.71 / 0.54.
// - mul: three relative roundings (a, b, out): 3·U16·|out| ≤ 1.5·U16·(|out| + max|out|); its
//   gradients add a fourth (the stored full-size product g·b before sumToShape). k = 2.
//   Measured 0.77 / 0.73.
// - affine (0.37·x − 1.25): x and out rounded, 0.37·|x| ≤ max|out|; the gradient 0.37·g: g and
//   the result rounded, 2·U16·|ref|. k = 1. Measured 0.37 / 0.51.
// - sum / mean over an axis: n rounded inputs (n = 50 to 197, |x| ~ N(0, 1)) whose errors cancel at
//   random, ~U16·sqrt(n)/2 absolute, against max|out| ≈ 2.5·sqrt(n)·(1/n for mean), plus the stored
//   rounding. k = 2. Measured 0.60. The gradient (gout rounded, times 1/n for mean, rounded when
//   stored) is two roundings: k = 1, measured 0.39.
// - sum_all: one output (max|ref| = |ref| = 3.2) from 197 terms whose rounding walk (~7·U16)
//   is about one 2·U16·|ref| per standard deviation. k = 4. Measured 1.65.
const F16_K: Record<string, [number, number]> = {
  add_same: [2, 2],
  add_bias: [2, 2],
  add_rows: [2, 2],
  add_left: [2, 2],
  sub_bcast: [2, 2],
  mul_same: [2, 2],
  mul_bcast: [2, 2],
  affine: [1, 1],
  sum_axis0: [2, 1],
  sum_axis1: [2, 1],
  sum_last: [2, 1],
  mean_axis1: [2, 1],
  mean_all: [2, 1],
  sum_all: [4, 1],
};

for (const c of CASES) {
  const [kOut, kGrad] = F16_K[c[0]];
  testF16(`${c[0]} on f16 tensors: forward and backward match PyTorch (k = ${kOut} / ${kGrad})`, () => checkF16Case('elementwise', c, kOut, kGrad));
}

testF16('f16 leaves get f16 gradients, equal to the ones that reach f32 leaves through toF16', () => checkF16LeafGradients('elementwise', CASES));

testF16('axpyNoGrad, scale and neg on f16 tensors (vec4 and scalar entry points)', async () => {
  // Host references in f64 from the unrounded f32 inputs. axpy is an add (k = 2, as above); scale
  // rounds x and the product (k = 1); neg only x (exact otherwise; k = 1). Measured 0.52, 0.63,
  // 0.37 on lavapipe.
  for (const n of [1024, 1026]) {
    const ad = randn(n, 41);
    const bd = randn(n, 42);
    const [a, b] = [toF16(fromArray(ad, [n])).keep(), toF16(fromArray(bd, [n])).keep()];
    const ys = noGrad(() => [axpyNoGrad(a, b, 0.5), scale(a, 0.37), neg(b)]);
    const refs = [ad.map((v, i) => v + 0.5 * bd[i]), ad.map((v) => 0.37 * v), bd.map((v) => -v)];
    const ks = [2, 1, 1];
    try {
      for (const [j, label] of ['axpyNoGrad', 'scale', 'neg'].entries()) {
        assert.is(ys[j].dtype, 'f16', label);
        assertClose(await ys[j].read(), refs[j], f16Tol(refs[j], ks[j]), `${label} f16 (n = ${n})`);
      }
    } finally {
      for (const t of [a, b, ...ys]) t.dispose();
    }
  }
});

test('mixed f16 / f32 operands are refused, naming the op, the argument and both dtypes', async () => {
  const a = toF16(fromArray(randn(12, 1), [3, 4]));
  const b = fromArray(randn(4, 2), [4]);
  const c = fromArray(randn(12, 3), [3, 4]);
  try {
    assert.throws(() => add(a, b), /add: argument 'b' \(Tensor\[4\]\) is f32 but 'a' \(Tensor\[3, 4\]\) is f16; add runs on tensors of one dtype: convert 'b' with toF16 \(or 'a' with toF32\)/);
    assert.throws(() => sub(b, a), /sub: argument 'b' \(Tensor\[3, 4\]\) is f16 but 'a' \(Tensor\[4\]\) is f32/);
    assert.throws(() => mul(a, c), /mul: argument 'b' .* is f32 but 'a' .* is f16/);
    assert.throws(() => biasAdd(a, b), /biasAdd: argument 'bias' \(Tensor\[4\]\) is f32 but 'x' \(Tensor\[3, 4\]\) is f16/);
    assert.throws(() => axpyNoGrad(c, a, 1), /axpy: argument 'b' .* is f16 but 'a' .* is f32/);
  } finally {
    for (const t of [a, b, c]) t.dispose();
  }
});

test.run();
