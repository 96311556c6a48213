import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { add, sub, mul, affine, sum, mean, biasAdd } from '../../src/ops/index.ts';
import { backward } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { fixture, expectTensor, F32_TOL, gradCheck, device, randn, scaledTol } from '../helpers/fixtures.ts';

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

test.run();
