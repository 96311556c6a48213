// Elementwise bench: bias add x[B*50, 768] + b[768] at ViT-B/32 token shapes (50 tokens per
// image, width 768). Memory bound, so reported in GB/s: read x and b, write the output.
// Reference: the same f32 sum on the host, which is exact, so max_abs_err should be 0.
import { biasAdd } from '../../src/ops/elementwise.ts';
import { uniform, maxAbsDiff, type BenchCase, type Suite } from '../harness.ts';

function biasAddCase(rows: number, width: number, label: string): BenchCase {
  return {
    kernel: 'add',
    variant: 'bias-broadcast',
    shape: `${label} [${rows},${width}]+[${width}]`,
    dtype: 'f32',
    bytes: 4 * (2 * rows * width + width),
    inputs: () => [
      { shape: [rows, width], data: uniform(rows * width, 1) },
      { shape: [width], data: uniform(width, 2) },
    ],
    run: ([x, b]) => biasAdd(x, b),
    check: {
      reference: 'host f32 sum (exact)',
      maxAbsErr(out, [x, b]) {
        const expected = new Float32Array(rows * width);
        for (let i = 0; i < rows; i++) for (let j = 0; j < width; j++) expected[i * width + j] = x.data[i * width + j] + b.data[j];
        return maxAbsDiff(out, expected);
      },
    },
    peer: (peer, [x, b]) => peer.tf.add(x, b),
  };
}

export const elementwiseSuite: Suite = {
  name: 'elementwise',
  cases: ({ quick }) =>
    quick
      ? [biasAddCase(2 * 50, 64, 'B=2')]
      : [biasAddCase(32 * 50, 768, 'B=32'), biasAddCase(256 * 50, 768, 'B=256')],
};
