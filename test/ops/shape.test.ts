import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { permute, transpose, concat, slice, gatherRows, reshape, patchify, toF16, toF32 } from '../../src/ops/index.ts';
import { backward, noGrad } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { fixture, expectTensor, gradCheck, device, randn, type Tolerance } from '../helpers/fixtures.ts';
import { testF16, f16Tol, checkF16Case, checkF16LeafGradients } from '../helpers/f16.ts';

type Fn = (xs: Tensor[]) => Tensor;

/** Pure data movement: every output element is one input element, bit for bit. */
const EXACT: Tolerance = { rtol: 0, atol: 0 };
/** Gather backward sums repeated rows in f32; the float64 reference differs by at most ~1 ulp. */
const SUM_TOL: Tolerance = { rtol: 1e-6, atol: 1e-6 };

function idxOf(name: string): number[] {
  return Array.from(fixture('shape').get(`${name}.idx`).data);
}

const CASES: [string, number, Fn, Tolerance?][] = [
  ['permute3', 1, ([x]) => permute(x, [2, 0, 1])],
  ['permute4_heads', 1, ([x]) => permute(x, [0, 2, 1, 3])],
  ['permute4_rev', 1, ([x]) => permute(x, [-1, 1, 0, -2])],
  ['permute5', 1, ([x]) => permute(x, [2, 0, 3, 1, 4])],
  ['transpose_last', 1, ([x]) => transpose(x, -2, -1)],
  ['concat_axis0', 3, (xs) => concat(xs, 0)],
  ['concat_cls', 2, (xs) => concat(xs, 1)],
  ['concat_last', 2, (xs) => concat(xs, -1)],
  ['slice_cls', 1, ([x]) => slice(x, 1, 0, 1)],
  ['slice_patches', 1, ([x]) => slice(x, 1, 1, 50)],
  ['slice_last', 1, ([x]) => slice(x, -1, 2, 5)],
  ['gather_cls', 1, ([x]) => gatherRows(x, idxOf('gather_cls'), 1)],
  ['gather_repeat', 1, ([x]) => gatherRows(x, Int32Array.from(idxOf('gather_repeat'))), SUM_TOL],
  ['gather_mid', 1, ([x]) => gatherRows(x, idxOf('gather_mid'), -3), SUM_TOL],
  // F.unfold(x, P, stride=P).transpose(1, 2); backward is the fold (patches do not overlap).
  ['patchify_p4', 1, ([x]) => patchify(x, 4)],
  ['patchify_p1', 1, ([x]) => patchify(x, 1)],
  ['patchify_p16', 1, ([x]) => patchify(x, 16)],
];

test.before(async () => {
  await device();
});

for (const [name, nIn, fn, gradTol] of CASES) {
  test(`${name}: forward and backward match PyTorch`, async () => {
    const fx = fixture('shape');
    const ins = Array.from({ length: nIn }, (_, i) => fx.tensor(`${name}.in${i}`, true).keep());
    try {
      const out = scope(() => fn(ins).keep());
      await expectTensor(out, fx.get(`${name}.out`), EXACT, `${name} forward`);
      scope(() => backward(out, fx.tensor(`${name}.gout`)));
      out.dispose();
      for (let i = 0; i < nIn; i++) {
        assert.ok(ins[i].grad, `${name}: input ${i} has a gradient`);
        await expectTensor(ins[i].grad!, fx.get(`${name}.grad${i}`), gradTol ?? EXACT, `${name} grad ${i}`);
      }
    } finally {
      for (const t of ins) t.dispose();
    }
  });
}

test('finite differences: permute, transpose, concat, slice, gather, patchify', async () => {
  await gradCheck('permute', ([x]) => permute(x, [1, 2, 0]), [{ shape: [2, 3, 4], data: randn(24, 1) }]);
  await gradCheck('transpose_then_slice', ([x]) => slice(transpose(x, 0, 1), 0, 1, 3), [{ shape: [3, 4], data: randn(12, 2) }]);
  await gradCheck('concat_same_input_twice', ([a, b]) => concat([a, b, a], 1), [
    { shape: [2, 1, 3], data: randn(6, 3) },
    { shape: [2, 2, 3], data: randn(12, 4) },
  ]);
  await gradCheck('gather_repeat', ([x]) => gatherRows(x, [2, 0, 2, 2], 1), [{ shape: [2, 3, 2], data: randn(12, 5) }]);
  await gradCheck('patchify', ([x]) => patchify(x, 2), [{ shape: [2, 3, 4, 6], data: randn(144, 6) }], { probes: 24 });
});

test('identity permute and full slice copy (not alias) and keep values', async () => {
  const data = randn(24, 11);
  const x = fromArray(data, [2, 3, 4]);
  const p = permute(x, [0, 1, 2]);
  const s = slice(x, 2, 0, 4);
  assert.is.not(p.buffer, x.buffer);
  assert.equal(Array.from(await p.read()), Array.from(data));
  assert.equal(Array.from(await s.read()), Array.from(data));
  for (const t of [x, p, s]) t.dispose();
});

test('empty pieces: zero-length slice, concat with an empty input, gather of no rows', async () => {
  const x = fromArray(randn(12, 12), [3, 4]);
  x.requiresGrad = true;
  const e = fromArray([], [3, 0]);
  const out = scope(() => {
    const s = slice(x, 1, 2, 2);
    assert.equal([...s.shape], [3, 0]);
    const c = concat([e, x, s], 1);
    const g = gatherRows(x, [], 0);
    assert.equal([...g.shape], [0, 4]);
    return c;
  });
  assert.equal(Array.from(await out.read()), Array.from(await x.read()));
  scope(() => backward(out, fromArray(new Float32Array(12).fill(2), [3, 4])));
  assert.equal(Array.from(await x.grad!.read()), new Array(12).fill(2));
  for (const t of [x, e, out]) t.dispose();
});

test('rank 6 permute matches a host reference', async () => {
  const shape = [2, 3, 1, 4, 2, 3];
  const perm = [5, 3, 0, 4, 2, 1];
  const data = randn(144, 13);
  const x = fromArray(data, shape);
  const y = noGrad(() => permute(x, perm));
  const got = await y.read();
  const inStride = [72, 24, 24, 6, 3, 1];
  const outShape = perm.map((d) => shape[d]);
  let i = 0;
  for (let a = 0; a < outShape[0]; a++)
    for (let b = 0; b < outShape[1]; b++)
      for (let c = 0; c < outShape[2]; c++)
        for (let d = 0; d < outShape[3]; d++)
          for (let e = 0; e < outShape[4]; e++)
            for (let f = 0; f < outShape[5]; f++) {
              const j = [a, b, c, d, e, f];
              const src = j.reduce((acc, v, k) => acc + v * inStride[perm[k]], 0);
              assert.is(got[i++], data[src], `element ${i - 1}`);
            }
  x.dispose();
  y.dispose();
});

test('large tensor: 1-D grid folds past 65535 workgroups (16.8M elements)', async () => {
  // 65535 workgroups * 256 = 16,776,960 invocations fit in x; this needs a second row of y.
  const rows = 2;
  const cols = 8_390_000;
  const n = rows * cols;
  const data = new Float32Array(n);
  // Values stay below 2^24 so each is exact in f32 (and distinct within any 2^23 window).
  for (let i = 0; i < n; i++) data[i] = i % 8_388_608;
  const x = fromArray(data, [rows, cols]);
  const y = noGrad(() => transpose(x, 0, 1));
  const got = await y.read();
  // y[c, r] = x[r, c] = data[r * cols + c]; checks every element, reports the first mismatch.
  let bad = -1;
  for (let flat = 0; flat < n && bad < 0; flat++) {
    if (got[flat] !== data[(flat % rows) * cols + Math.floor(flat / rows)]) bad = flat;
  }
  assert.is(bad, -1, `first wrong element of the transposed tensor (past 16,776,960 means the y fold is wrong)`);
  x.dispose();
  y.dispose();
});

test('gather scratch index buffers go back to the pool', async () => {
  const dev = await device();
  const x = fromArray(randn(20, 14), [5, 4]);
  x.requiresGrad = true;
  const before = dev.pool.stats().liveBuffers;
  scope(() => backward(reshape(gatherRows(x, [4, 4, 1]), [12]), fromArray(new Float32Array(12).fill(1), [12])));
  await dev.sync();
  x.grad!.dispose();
  x.grad = null;
  assert.is(dev.pool.stats().liveBuffers, before);
  x.dispose();
});

test('errors name the op and the shapes', async () => {
  const x = fromArray(randn(24, 1), [2, 3, 4]);
  const y = fromArray(randn(10, 1), [2, 5]);
  assert.throws(() => permute(x, [0, 1]), /permute: dims \[0, 1\] must list 3 dims .*x=\[2, 3, 4\]/);
  assert.throws(() => permute(x, [0, 1, 1]), /permute: dims \[0, 1, 1\] is not a permutation.*x=\[2, 3, 4\]/);
  assert.throws(() => permute(x, [0, 1, 3]), /permute: dims \[0, 1, 3\] has 3, out of range for rank 3.*x=\[2, 3, 4\]/);
  assert.throws(() => transpose(x, 0, 3), /transpose: axis 3 is out of range for a rank-3 tensor/);
  assert.throws(() => concat([x, y], 1), /concat: xs\[1\] does not match xs\[0\] on the dims other than axis 1 \(got xs\[0\]=\[2, 3, 4\], xs\[1\]=\[2, 5\]\)/);
  assert.throws(() => concat([], 0), /concat: needs at least one tensor/);
  assert.throws(() => slice(x, 1, 1, 4), /slice: range 1:4 is out of range for axis 1 \(length 3\) of x=\[2, 3, 4\]/);
  assert.throws(() => slice(x, 2, 3, 1), /slice: range 3:1 is out of range/);
  assert.throws(() => gatherRows(x, [0, 3], 1), /gatherRows: index 3 \(at position 1\) is out of range for axis 1 \(length 3\) of x=\[2, 3, 4\]/);
  assert.throws(() => gatherRows(x, [-1]), /gatherRows: index -1 .*out of range/);
  const d = fromArray(randn(2, 1), [2]);
  d.dispose();
  assert.throws(() => slice(d, 0, 0, 1), /slice: argument 'x' .*after dispose/);
  x.dispose();
  y.dispose();
});

// f16: the same cases on f16 tensors (the kernels with the f16 prelude). The fixture inputs are
// rounded to f16 with toF16 (the leaves stay f32: gradients come back through toF16's backward),
// toF32 of the f16 output is compared with the f32 PyTorch reference, and backward(toF32(out),
// gout) rounds gout to f16 and runs every backward kernel on f16 tensors. f16Tol(ref, k) allows
// |err| ≤ k·U16·(|ref| + max|ref|), U16 = 2^-11. These ops copy: each output element is one
// input (or gout) element rounded once, |err| ≤ U16·|ref| ≤ 0.5·U16·(|ref| + max|ref|) with round
// to nearest, and twice that where a device's f32 → f16 conversion picks the other neighbour
// (WGSL allows either): k = 1. gatherRows' backward sums the repeated positions (up to 3 in
// gather_repeat) in f32 from f16-rounded terms and rounds once more; it fits the same k.
// Measured on lavapipe: forward 0.42 (concat_axis0), gradients 0.43 (gather_mid); gather_repeat's
// summed gradient 0.17.
const F16_K = 1;

for (const c of CASES) {
  testF16(`${c[0]} on f16 tensors: forward and backward match PyTorch (k = ${F16_K} / ${F16_K})`, () => checkF16Case('shape', c, F16_K, F16_K));
}

testF16('f16 leaves get f16 gradients, equal to the ones that reach f32 leaves through toF16', () => checkF16LeafGradients('shape', CASES));

test('reshape of an f16 tensor is an f16 view; its gradient stays f16', async () => {
  const data = randn(24, 21);
  const x = toF16(fromArray(data, [2, 3, 4])).keep();
  x.requiresGrad = true;
  const want = Array.from(await x.read());
  const y = reshape(x, [6, -1]);
  try {
    assert.is(y.dtype, 'f16');
    assert.equal([...y.shape], [6, 4]);
    assert.is(y.buffer, x.buffer, 'a view shares the storage');
    assert.equal(Array.from(await y.read()), want);
    scope(() => backward(y, toF16(fromArray(data, [6, 4]))));
    assert.is(x.grad!.dtype, 'f16');
    assert.equal([...x.grad!.shape], [2, 3, 4]);
    assert.equal(Array.from(await x.grad!.read()), want, 'the gradient is gout, f16-rounded like x');
  } finally {
    y.dispose();
    x.dispose();
  }
});

test('concat refuses mixed f16 / f32 inputs, naming the arguments and both dtypes', async () => {
  const a = fromArray(randn(6, 1), [2, 3]);
  const h = toF16(fromArray(randn(6, 2), [2, 3]));
  try {
    assert.throws(() => concat([a, a, h], 0), /concat: argument 'xs\[2\]' \(Tensor\[2, 3\]\) is f16 but 'xs\[0\]' \(Tensor\[2, 3\]\) is f32; concat runs on tensors of one dtype: convert 'xs\[2\]' with toF32 \(or 'xs\[0\]' with toF16\)/);
  } finally {
    a.dispose();
    h.dispose();
  }
});

test.run();
