// The checkers every op test relies on must be able to fail: NaN and ±Infinity on either side,
// length mismatches, and a wrong or non-finite analytic gradient. A NaN compares false against
// every bound, so a check written as `err > bound` silently passes it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { scale } from '../../src/ops/index.ts';
import { noGrad, record } from '../../src/tensor/autograd.ts';
import { fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { assertClose, F32_TOL, device, gradCheck, randn } from './fixtures.ts';

test('assertClose accepts values within the tolerance and equal infinities', () => {
  assertClose([1, 2 + 1e-6, Infinity, -Infinity], [1, 2, Infinity, -Infinity], F32_TOL, 'ok');
});

test('assertClose rejects NaN, mismatched infinities, out-of-tolerance values and length mismatches', () => {
  const cases: [number[], number[], RegExp][] = [
    [[NaN], [1], /element 0 is NaN/],
    [[1], [NaN], /element 0 is 1, expected NaN/],
    [[NaN], [NaN], /element 0 is NaN, expected NaN/],
    [[1], [Infinity], /expected Infinity/],
    [[Infinity], [1], /element 0 is Infinity/],
    [[-Infinity], [Infinity], /element 0 is -Infinity/],
    [[1, 2.001], [1, 2], /element 1 = 2\.001/],
    [[1, 2], [1, 2, 3], /length 2 != expected 3/],
  ];
  for (const [actual, expected, message] of cases) {
    assert.throws(() => assertClose(actual, expected, F32_TOL, 'case'), message, `[${actual}] vs [${expected}]`);
  }
});

/** y = 2x, with a backward chosen by the test (the forward is the real scale op). */
function doubled(gradOf: (g: Tensor) => Tensor): (xs: Tensor[]) => Tensor {
  return ([x]) => {
    const y = noGrad(() => scale(x, 2));
    return record('doubled', [x], y, [], (g) => [gradOf(g)]);
  };
}

test('gradCheck passes a correct backward and fails a wrong, a NaN or a short one', async () => {
  await device();
  const input = [{ shape: [3, 4], data: randn(12, 5) }];
  await gradCheck('correct', doubled((g) => scale(g, 2)), input);
  const broken: [string, (g: Tensor) => Tensor, RegExp][] = [
    ['wrong factor', (g) => scale(g, 3), /analytic .* vs finite-difference/],
    ['NaN', (g) => fromArray(new Float32Array(g.size).fill(NaN), g.shape), /analytic NaN vs finite-difference/],
    ['short', () => fromArray(new Float32Array(11), [11]), /has 11 values, the input 12/],
  ];
  for (const [name, gradOf, message] of broken) {
    let error: unknown = null;
    try {
      await gradCheck(name, doubled(gradOf), input);
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof Error, `gradCheck accepted the ${name} gradient`);
    assert.match((error as Error).message, message);
  }
});

test.run();
