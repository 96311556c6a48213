import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { softmax, gelu, quickGelu, erf, layerNorm, add, l2Normalize, mean, mul, scale, sub, transpose, toF16, toF32 } from '../../src/ops/index.ts';
import { backward, liveGradNodes } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { fixture, expectTensor, assertClose, F32_TOL, gradCheck, device, randn, checkScaled, pickRows, type Tolerance } from '../helpers/fixtures.ts';
import { testF16, f16Tol, U16 } from '../helpers/f16.ts';
import { vitb32Fixture, vitb32Input, vitb32Probe, VITB32 } from '../helpers/vitb32.ts';

/**
 * The upstream gradient of each fixture case, bit-identical to scripts/fixtures/fx_nn.py's
 * upstream(): integer arithmetic, one division in float64, rounding to f32.
 */
function upstream(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((((i * 7919 + seed * 104729) % 2003) - 1001) / 1001);
  return out;
}

// Every comparison below uses F32_TOL (rel 1e-5 / abs 1e-6), including the reductions: softmax
// rows (exp summed in a tree) and dweight / dbias (sums over up to 591 rows, in 64-row chunks
// then over chunks). Measured on lavapipe the worst error is 0.56x that tolerance (dbias of
// ln_3x197x24); everything else is below 0.35x.

interface Case {
  name: string;
  fn: (x: Tensor, extra: Tensor[]) => Tensor;
  params?: boolean;
}

const CASES: Case[] = [
  { name: 'softmax_scores', fn: (x) => softmax(x) },
  { name: 'softmax_197', fn: (x) => softmax(x) },
  { name: 'softmax_3', fn: (x) => softmax(x) },
  { name: 'softmax_1', fn: (x) => softmax(x) },
  { name: 'gelu', fn: (x) => gelu(x) },
  { name: 'quick_gelu', fn: (x) => quickGelu(x) },
  { name: 'erf_grad', fn: (x) => erf(x) },
  { name: 'ln_2x50x64', fn: (x, [w, b]) => layerNorm(x, w, b), params: true },
  { name: 'ln_3x197x24', fn: (x, [w, b]) => layerNorm(x, w, b), params: true },
  { name: 'ln_1x1x768', fn: (x, [w, b]) => layerNorm(x, w, b), params: true },
];

test.before(async () => {
  await device();
});

for (const c of CASES) {
  test(`${c.name}: forward and backward match PyTorch (float64)`, async () => {
    const fx = fixture('nn');
    const x = fx.tensor(`${c.name}.x`, true).keep();
    const extra = c.params ? [fx.tensor(`${c.name}.w`, true).keep(), fx.tensor(`${c.name}.b`, true).keep()] : [];
    try {
      const y = scope(() => c.fn(x, extra).keep());
      await expectTensor(y, fx.get(`${c.name}.y`), F32_TOL, `${c.name} forward`);
      const seed = Number(fx.metadata[`${c.name}.gseed`]);
      assert.ok(Number.isInteger(seed), `${c.name}: fixture metadata has the upstream seed`);
      scope(() => backward(y, fromArray(upstream(y.size, seed), y.shape)));
      y.dispose();
      assert.ok(x.grad, `${c.name}: x has a gradient`);
      await expectTensor(x.grad!, fx.get(`${c.name}.dx`), F32_TOL, `${c.name} dx`);
      if (c.params) {
        await expectTensor(extra[0].grad!, fx.get(`${c.name}.dw`), F32_TOL, `${c.name} dweight`);
        await expectTensor(extra[1].grad!, fx.get(`${c.name}.db`), F32_TOL, `${c.name} dbias`);
      }
    } finally {
      x.dispose();
      for (const t of extra) t.dispose();
    }
  });
}

test('erf: max abs error against float64 erf is below 1.2e-7', async () => {
  const fx = fixture('nn');
  const hi = fx.get('erf.ref_hi').data;
  const lo = fx.get('erf.ref_lo').data;
  const y = scope(() => erf(fx.tensor('erf.x')).keep());
  const got = await y.read();
  y.dispose();
  let worst = 0;
  let at = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - (hi[i] + lo[i]));
    // !(err <= worst) so that a NaN output is reported (and ends the search) instead of skipped.
    if (!(err <= worst)) {
      worst = err;
      at = i;
      if (Number.isNaN(err)) break;
    }
  }
  // The approximation is ~1.3 ulp (7.9e-8) with a correctly rounded exp; a half-ulp f32
  // result alone is up to 3e-8 off, so 1.2e-7 leaves room for a GPU exp a few ulp off.
  assert.ok(worst <= 1.2e-7, `erf max abs error ${worst.toExponential(3)} at x = ${fx.get('erf.x').data[at]}`);
});

test('layerNorm is stable for rows with a large mean (1000 ± 1)', async () => {
  const fx = fixture('nn');
  const x = fx.get('ln_offset.x');
  const [w, b] = [fx.get('ln_offset.w'), fx.get('ln_offset.b')];
  const y = scope(() => layerNorm(fx.tensor('ln_offset.x'), fx.tensor('ln_offset.w'), fx.tensor('ln_offset.b')).keep());
  // x itself is only known to ulp(1000) = 6e-5, and x - mean inherits ~1 ulp of the mean:
  // xhat is accurate to ~1e-4 absolute. E[x^2] - E[x]^2 in f32 would be off by O(1).
  const tol = { rtol: 1e-4, atol: 5e-4 };
  await expectTensor(y, fx.get('ln_offset.y'), tol, 'ln_offset forward');
  y.dispose();
  // The tolerance must reject the unstable formula (so this test can fail).
  const d = 64;
  const naive = new Float32Array(x.data.length);
  for (let r = 0; r < x.data.length / d; r++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < d; i++) {
      const v = x.data[r * d + i];
      s = Math.fround(s + v);
      s2 = Math.fround(s2 + Math.fround(v * v));
    }
    const m = Math.fround(s / d);
    const variance = Math.max(0, Math.fround(Math.fround(s2 / d) - Math.fround(m * m)));
    const rstd = 1 / Math.sqrt(variance + 1e-5);
    for (let i = 0; i < d; i++) naive[r * d + i] = (x.data[r * d + i] - m) * rstd * w.data[i] + b.data[i];
  }
  assert.throws(() => assertClose(naive, fx.get('ln_offset.y').data, tol, 'naive'));
});

test('layerNorm agrees with the composition mean → sub → l2Normalize·√D → mul(γ) → add(β), both directions', async () => {
  // genalign has no rsqrt op, so the composition (the bench's 'genalign-composed' LayerNorm)
  // normalises with l2Normalize: √D·(x−μ)/‖x−μ‖ equals (x−μ)/√(var+ε) up to ε, a relative
  // difference of ≈ D·ε/(2‖x−μ‖²) ≈ 2e-6 for these rows (var ≈ 2.25), inside the tolerance.
  const rows = 100, d = 768;
  const data = [randn(rows * d, 71, 1.5), Float32Array.from(randn(d, 72, 0.3), (v) => 1 + v), randn(d, 73, 0.2)];
  const dy = randn(rows * d, 74);
  const composed = (x: Tensor, w: Tensor, b: Tensor): Tensor => {
    const xt = transpose(x, 0, 1);
    const xc = transpose(sub(xt, mean(xt, 0)), 0, 1);
    return add(mul(scale(l2Normalize(xc), Math.sqrt(d)), w), b);
  };
  const run = async (fused: boolean): Promise<Float32Array[]> => {
    const ins = data.map((v, i) => {
      const t = fromArray(v, i === 0 ? [rows, d] : [d]).keep();
      t.requiresGrad = true;
      return t;
    });
    try {
      const y = scope(() => (fused ? layerNorm(ins[0], ins[1], ins[2]) : composed(ins[0], ins[1], ins[2])).keep());
      scope(() => backward(y, fromArray(dy, [rows, d])));
      const outs = [await y.read(), ...(await Promise.all(ins.map((t) => t.grad!.read())))];
      y.dispose();
      return outs;
    } finally {
      for (const t of ins) t.dispose();
    }
  };
  const f = await run(true);
  const c = await run(false);
  // dγ and dβ sum 100 rows of O(1) terms: atol 2e-5.
  const tols = [{ rtol: 2e-5, atol: 1e-5 }, { rtol: 2e-5, atol: 1e-5 }, { rtol: 2e-5, atol: 2e-5 }, { rtol: 2e-5, atol: 2e-5 }];
  ['y', 'dx', 'dγ', 'dβ'].forEach((name, i) => assertClose(f[i], c[i], tols[i], `fused vs composed ${name}`));
});

test('finite differences: softmax, gelu, quickGelu, erf, layerNorm', async () => {
  await gradCheck('softmax', ([x]) => softmax(x), [{ shape: [3, 7], data: randn(21, 1, 2) }]);
  await gradCheck('gelu', ([x]) => gelu(x), [{ shape: [16], data: randn(16, 2, 2) }]);
  await gradCheck('quickGelu', ([x]) => quickGelu(x), [{ shape: [16], data: randn(16, 3, 2) }]);
  await gradCheck('erf', ([x]) => erf(x), [{ shape: [12], data: randn(12, 4) }]);
  await gradCheck('layerNorm', ([x, w, b]) => layerNorm(x, w, b), [
    { shape: [5, 9], data: randn(45, 5, 1.5) },
    { shape: [9], data: randn(9, 6).map((v) => 1 + 0.3 * v) },
    { shape: [9], data: randn(9, 7, 0.2) },
  ]);
});

test('layerNorm: dweight/dbias are bit-identical across runs; frozen params get no gradient', async () => {
  const xs = randn(300 * 20, 8);
  const grads: Float32Array[] = [];
  for (let run = 0; run < 2; run++) {
    const x = fromArray(xs, [300, 20]).keep();
    const w = fromArray(randn(20, 9), [20]).keep();
    const b = fromArray(randn(20, 10), [20]).keep();
    w.requiresGrad = true;
    b.requiresGrad = true;
    scope(() => backward(layerNorm(x, w, b), fromArray(upstream(6000, 3), [300, 20])));
    grads.push(await w.grad!.read(), await b.grad!.read());
    assert.is(x.grad, null, 'x does not require grad, so no dx is made');
    for (const t of [x, w, b]) t.dispose();
  }
  assert.equal(Array.from(grads[0]), Array.from(grads[2]));
  assert.equal(Array.from(grads[1]), Array.from(grads[3]));

  const x = fromArray(randn(40, 11), [4, 10]).keep();
  x.requiresGrad = true;
  const w = fromArray(randn(10, 12), [10]).keep();
  const b = fromArray(randn(10, 13), [10]).keep();
  scope(() => backward(layerNorm(x, w, b), fromArray(upstream(40, 4), [4, 10])));
  assert.ok(x.grad, 'x gets dx');
  assert.is(w.grad, null);
  assert.is(b.grad, null);
  for (const t of [x, w, b]) t.dispose();
});

// layerNorm's backward follows autograd's needs (which inputs need a gradient): dx is one dispatch
// (ln_backward_input), dγ and dβ two (ln_backward_params_partial, _final) computed together.
test('layerNorm backward dispatches only the kernels for the gradients it needs; results unchanged', async () => {
  const dev = await device();
  const [xd, wd, bd, gd] = [randn(6 * 40, 21), randn(40, 22), randn(40, 23), upstream(240, 5)];
  const run = async (needX: boolean, needW: boolean, needB: boolean): Promise<{ dispatches: number; grads: (Float32Array | null)[] }> => {
    const ts = [fromArray(xd, [6, 40]), fromArray(wd, [40]), fromArray(bd, [40])].map((t) => t.keep());
    [needX, needW, needB].forEach((need, i) => (ts[i].requiresGrad = need));
    const [x, w, b] = ts;
    const y = scope(() => layerNorm(x, w, b).keep());
    const g = fromArray(gd, [6, 40]).keep();
    const before = dev.batch.totalDispatches;
    backward(y, g);
    const dispatches = dev.batch.totalDispatches - before;
    const grads = await Promise.all(ts.map((t) => (t.grad ? t.grad.read() : null)));
    for (const t of [...ts, y, g]) t.dispose();
    return { dispatches, grads };
  };
  const all = await run(true, true, true);
  assert.is(all.dispatches, 3, 'dx, then the two dγ/dβ stages');
  const cases: [boolean, boolean, boolean, number][] = [
    [true, false, false, 1],
    [false, true, false, 2],
    [false, false, true, 2],
  ];
  for (const [nx, nw, nb, want] of cases) {
    const got = await run(nx, nw, nb);
    const label = `needs x=${nx} weight=${nw} bias=${nb}`;
    assert.is(got.dispatches, want, `${label}: dispatches`);
    [nx, nw, nb].forEach((need, i) => {
      if (need) assert.equal(Array.from(got.grads[i]!), Array.from(all.grads[i]!), `${label}: gradient ${i} as with every gradient needed`);
      else assert.is(got.grads[i], null, `${label}: no gradient ${i}`);
    });
  }
});

test('backward uses saved tensors: inputs may be disposed after the forward; nothing leaks', async () => {
  const dev = await device();
  const before = dev.pool.stats().liveBuffers;
  const nodesBefore = liveGradNodes();
  const xData = randn(24, 14);
  const chain = (x: Tensor, w: Tensor, b: Tensor): Tensor => softmax(quickGelu(gelu(layerNorm(x, w, b))));
  const dxOf = async (disposeInputs: boolean): Promise<Float32Array> => {
    const x = fromArray(xData, [4, 6]).keep();
    x.requiresGrad = true;
    const w = fromArray(randn(6, 15), [6]).keep();
    w.requiresGrad = true;
    const b = fromArray(randn(6, 16), [6]).keep();
    const y = scope(() => chain(x, w, b).keep());
    if (disposeInputs) {
      // The user frees the parameters before backward: the tape's saved views keep them alive.
      w.dispose();
      b.dispose();
    }
    scope(() => backward(y, fromArray(upstream(24, 5), [4, 6])));
    const dx = await x.grad!.read();
    for (const t of [y, x, w, b]) t.dispose();
    return dx;
  };
  const reference = await dxOf(false);
  assertClose(await dxOf(true), reference, { rtol: 0, atol: 0 }, 'dx after disposing weight and bias');
  assert.ok(reference.some((v) => v !== 0), 'dx is not trivially zero');
  assert.is(liveGradNodes(), nodesBefore, 'no grad nodes left');
  assert.is(dev.pool.stats().liveBuffers, before, 'no buffers leaked');
});

test('softmax forward and backward with more rows than one grid dimension holds (65535)', async () => {
  // Every row is checked against a float64 host softmax, so a row mapping that wraps at the
  // grid limit (row % 65535) shows up, not only rows that fail to sum to 1.
  const rows = 70000;
  const cols = 3;
  const xData = randn(rows * cols, 17, 2);
  const gData = randn(rows * cols, 18);
  const x = fromArray(xData, [rows, cols]).keep();
  x.requiresGrad = true;
  const y = scope(() => {
    const out = softmax(x);
    backward(out, fromArray(gData, [rows, cols]));
    return out.keep();
  });
  const [got, dx] = [await y.read(), await x.grad!.read()];
  y.dispose();
  x.dispose();
  const wantY = new Float64Array(rows * cols);
  const wantDx = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let max = -Infinity;
    for (let c = 0; c < cols; c++) max = Math.max(max, xData[o + c]);
    let z = 0;
    for (let c = 0; c < cols; c++) z += Math.exp(xData[o + c] - max);
    let dot = 0;
    for (let c = 0; c < cols; c++) {
      wantY[o + c] = Math.exp(xData[o + c] - max) / z;
      dot += gData[o + c] * wantY[o + c];
    }
    for (let c = 0; c < cols; c++) wantDx[o + c] = wantY[o + c] * (gData[o + c] - dot);
  }
  assertClose(got, wantY, F32_TOL, 'softmax y, 70000 rows');
  assertClose(dx, wantDx, F32_TOL, 'softmax dx, 70000 rows');
});

test('shape errors name the op and the shapes', async () => {
  const x = fromArray(randn(12, 1), [2, 6]);
  const w6 = fromArray(randn(6, 2), [6]);
  const w5 = fromArray(randn(5, 3), [5]);
  const w2d = fromArray(randn(6, 4), [1, 6]);
  const scalar = fromArray([1], []);
  assert.throws(() => softmax(scalar), /softmax: x must have at least one dimension.*x=\[\]/);
  assert.throws(() => layerNorm(x, w5, w6), /layerNorm: weight and bias must both be \[6\].*x=\[2, 6\], weight=\[5\], bias=\[6\]/);
  assert.throws(() => layerNorm(x, w6, w5), /layerNorm: weight and bias must both be \[6\].*bias=\[5\]/);
  assert.throws(() => layerNorm(x, w2d, w6), /layerNorm: weight and bias must both be \[6\].*weight=\[1, 6\]/);
  assert.throws(() => layerNorm(scalar, w6, w6), /layerNorm: x must have at least one dimension/);
  assert.throws(() => layerNorm(x, w6, w6, -1), /layerNorm: eps must be a finite number >= 0 \(got -1\)/);
  const empty = fromArray([], [3, 0]);
  const w0 = fromArray([], [0]);
  assert.throws(() => layerNorm(empty, w0, w0), /layerNorm: the last dim of x must not be 0/);
  w5.dispose();
  assert.throws(() => gelu(w5), /gelu: argument 'x'.*used after dispose/);
  assert.throws(() => quickGelu(w5), /quickGelu: argument 'x'.*used after dispose/);
  for (const t of [x, w6, w2d, scalar, empty, w0]) t.dispose();
});

// Which ops refuse f16 (by name) and which run it: test/ops/dtype-coverage.test.ts.

// The activations are written once against the storage type T (kernels/activation.wgsl): with
// f16 storage the math stays f32 and only the loads and stores change, so each result is the f32
// result (from the same f16 inputs) rounded to f16: within half an f16 ulp (2^-11 relative), or
// half the smallest f16 subnormal (3e-8) near zero.
testF16('gelu, quickGelu and erf on f16 tensors: the f32 results rounded to f16, forward and backward', async () => {
  const F16_ROUNDING = { rtol: 2 ** -11, atol: 3e-8 };
  const n = 2000;
  const xd = randn(n, 31, 3);
  const gd = randn(n, 32);
  // The reference runs in f32 on the f16-rounded inputs.
  const round16 = async (d: Float32Array): Promise<Float32Array> => {
    const t = toF16(fromArray(d, [n]));
    const r = await t.read();
    t.dispose();
    return r;
  };
  const [x16d, g16d] = [await round16(xd), await round16(gd)];
  for (const [name, op] of [['gelu', gelu], ['quickGelu', quickGelu], ['erf', erf]] as const) {
    const [y16, dx16, y32, dx32] = scope(() => {
      const x16 = toF16(fromArray(x16d, [n]));
      const x32 = fromArray(x16d, [n]);
      x16.requiresGrad = true;
      x32.requiresGrad = true;
      const y = op(x16);
      const ref = op(x32);
      assert.is(y.dtype, 'f16');
      backward(y, toF16(fromArray(g16d, [n])));
      backward(ref, fromArray(g16d, [n]));
      return [toF32(y).keep(), toF32(x16.grad!).keep(), ref.keep(), x32.grad!.view().keep()];
    });
    try {
      assertClose(await y16.read(), await y32.read(), F16_ROUNDING, `${name} f16 forward`);
      assertClose(await dx16.read(), await dx32.read(), F16_ROUNDING, `${name} f16 backward`);
    } finally {
      for (const t of [y16, dx16, y32, dx32]) t.dispose();
    }
  }
});

// ---- softmax and layerNorm on f16 tensors ----------------------------------------------------
// f16 storage, f32 math. Against the float64 PyTorch fixtures of the f32 tests: the fixture's f32
// inputs (and the upstream gradient) are rounded with toF16, whose backward hands the f16
// gradients to the f32 leaves widened exactly. Each result must be within f16Tol(ref, k)
// (rtol k·U16, atol k·U16·max|ref|), k per op:
// - softmax: k = 3. Two roundings reach y (the logit, y itself), but a logit's rounding
//   U16·|x| is an absolute error of the exponent, so it becomes a relative error of y of up to
//   2·U16·max|x| at worst (|x| ≲ 7 in softmax_197; the large logits of softmax_3 sit in one-hot
//   rows, where y does not depend on them); dx = y ⊙ (g − Σ g⊙y) adds g's rounding and y's
//   error, and cancels in g − Σ g⊙y, hence atol on max|dx|. Measured worst on lavapipe: 1.23 (y
//   of softmax_197), 0.68 (dx).
// - softmax_scores: k = 24. Row 0 is offset by +100, where f16 logits are 1/16 apart: each
//   carries up to 64·U16 of absolute error, up to 128·U16 relative error of y at worst (much of
//   it cancels across the row's 50 logits). Measured: 9.8 (y, row 0; < 2 in the other rows,
//   |x| ≤ 11.5), 9.4 (dx).
// - layerNorm: k = 2. Four roundings reach y (x, γ, β, y itself) and centring turns x's
//   rounding U16·|x| into U16·|x|/σ of x̂ (|mean|/σ ≲ 1 here; atol on max|y|); the gradients add
//   g's rounding and sum over the row (dx) or over rows (dγ, dβ) in f32. Measured: 0.94 (y),
//   0.85 (dx), 0.75 (dγ), 0.72 (dβ). Summing dγ / dβ in f16 (the 64-row chunks) needs 2.9 / 6.0
//   and fails here.
const F16_K: Record<string, number> = {
  softmax_scores: 24,
  softmax_197: 3,
  softmax_3: 3,
  softmax_1: 3,
  ln_2x50x64: 2,
  ln_3x197x24: 2,
  ln_1x1x768: 2,
};

for (const c of CASES.filter((c) => c.name in F16_K)) {
  const k = F16_K[c.name];
  testF16(`${c.name} on f16 tensors: forward and every gradient match PyTorch within f16Tol (k = ${k})`, async () => {
    const fx = fixture('nn');
    const x = fx.tensor(`${c.name}.x`, true).keep();
    const extra = c.params ? [fx.tensor(`${c.name}.w`, true).keep(), fx.tensor(`${c.name}.b`, true).keep()] : [];
    const tol = (key: string): Tolerance => f16Tol(fx.get(key).data, k);
    try {
      const y = scope(() => c.fn(toF16(x), extra.map((t) => toF16(t))).keep());
      assert.is(y.dtype, 'f16');
      await expectTensor(y, fx.get(`${c.name}.y`), tol(`${c.name}.y`), `${c.name} f16 forward`);
      const seed = Number(fx.metadata[`${c.name}.gseed`]);
      scope(() => backward(y, toF16(fromArray(upstream(y.size, seed), y.shape))));
      y.dispose();
      await expectTensor(x.grad!, fx.get(`${c.name}.dx`), tol(`${c.name}.dx`), `${c.name} f16 dx`);
      if (c.params) {
        await expectTensor(extra[0].grad!, fx.get(`${c.name}.dw`), tol(`${c.name}.dw`), `${c.name} f16 dweight`);
        await expectTensor(extra[1].grad!, fx.get(`${c.name}.db`), tol(`${c.name}.db`), `${c.name} f16 dbias`);
      }
    } finally {
      x.dispose();
      for (const t of extra) t.dispose();
    }
  });
}

/** Half an f16 ulp relative, plus 1% for f32 results that differ in the last bits. */
const F16_ROUNDING_RTOL = U16 * 1.01;

/** d rounded to f16 (through the cast kernel), as f32 values. */
async function roundToF16(d: Float32Array): Promise<Float32Array> {
  const t = toF16(fromArray(d, [d.length]));
  const r = await t.read();
  t.dispose();
  return r;
}

// With f16 storage only the loads and stores change, so on the same f16-rounded inputs the f16
// kernels give the f32 kernels' results rounded to f16 (within half an f16 ulp, U16 relative, or
// half the smallest subnormal, 3e-8; F16_ROUNDING_RTOL adds 1% of U16 for an adapter whose two
// compilations round the f32 math differently in the last bit). This sees any f16 arithmetic or rounded intermediate on the
// way (a statistic, the centring, the affine, a partial sum), which the fixture tests above cannot
// tell from the rounding of the inputs. Rows of 4096 (16 elements per invocation) with mean 4 and
// σ 1 (centring amplifies an error of the mean 4×), 300 rows for dγ / dβ (5 chunks of 64 rows).
// Everything layerNorm's backward reads is the same in both (x, γ and g as f16 values, mean and
// rstd in f32), so its gradients are exact roundings too. softmax's backward reads the saved y,
// which the f16 forward rounded, so its reference is y16 ⊙ (g − Σ g⊙y16) in float64 from the f16
// y, with atol 1e-6·max|g|·max|y| for the f32 rounding of the dot product.
testF16('softmax and layerNorm on f16 tensors are the f32 kernels rounded to f16 (long rows, offset mean)', async () => {
  const F16_ROUNDING = { rtol: F16_ROUNDING_RTOL, atol: 3e-8 };
  const cases = [
    { rows: 6, d: 4096 },
    { rows: 300, d: 24 },
  ];
  for (const { rows, d } of cases) {
    const n = rows * d;
    const xd = await roundToF16(randn(n, 41 + d).map((v) => 4 + v));
    const [wd, bd] = [await roundToF16(randn(d, 42).map((v) => 1 + 0.3 * v)), await roundToF16(randn(d, 43, 0.2))];
    const gd = await roundToF16(randn(n, 44));
    const [got, want] = scope(() => {
      const run = (dtype: 'f16' | 'f32'): Tensor[] => {
        const leaf = (data: Float32Array, shape: number[]): Tensor => {
          const t = dtype === 'f16' ? toF16(fromArray(data, shape)) : fromArray(data, shape);
          t.requiresGrad = true;
          return t;
        };
        const [x, w, b, xs] = [leaf(xd, [rows, d]), leaf(wd, [d]), leaf(bd, [d]), leaf(xd, [rows, d])];
        const g = dtype === 'f16' ? toF16(fromArray(gd, [rows, d])) : fromArray(gd, [rows, d]);
        const y = layerNorm(x, w, b);
        const s = softmax(xs);
        assert.is(y.dtype, dtype);
        assert.is(s.dtype, dtype);
        backward(y, g);
        backward(s, g);
        for (const t of [x, w, b, xs]) assert.is(t.grad!.dtype, dtype, 'gradients in the input dtype');
        return [y, x.grad!, w.grad!, b.grad!, s, xs.grad!].map((t) => toF32(t).keep());
      };
      return [run('f16'), run('f32')];
    });
    try {
      const names = ['layerNorm y', 'layerNorm dx', 'layerNorm dγ', 'layerNorm dβ', 'softmax y'];
      for (let i = 0; i < names.length; i++) assertClose(await got[i].read(), await want[i].read(), F16_ROUNDING, `${names[i]} [${rows}, ${d}]`);
      const y16 = await got[4].read();
      const dxRef = new Float64Array(n);
      let maxY = 0;
      for (let r = 0; r < rows; r++) {
        let dot = 0;
        for (let i = r * d; i < (r + 1) * d; i++) dot += gd[i] * y16[i];
        for (let i = r * d; i < (r + 1) * d; i++) {
          dxRef[i] = y16[i] * (gd[i] - dot);
          maxY = Math.max(maxY, y16[i]);
        }
      }
      const maxG = gd.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assertClose(await got[5].read(), dxRef, { rtol: F16_ROUNDING_RTOL, atol: 3e-8 + 1e-6 * maxG * maxY }, `softmax dx [${rows}, ${d}]`);
    } finally {
      for (const t of [...got, ...want]) t.dispose();
    }
  }
});

test('layerNorm refuses a mix of f16 and f32 tensors by name', async () => {
  const x32 = fromArray(randn(12, 5), [2, 6]);
  const x16 = toF16(x32);
  const w32 = fromArray(randn(6, 6), [6]);
  const w16 = toF16(w32);
  try {
    assert.throws(() => layerNorm(x16, w32, w16), /layerNorm: argument 'weight' \(Tensor\[6\]\) is f32 but 'x' \(Tensor\[2, 6\]\) is f16; layerNorm runs on tensors of one dtype: convert 'weight' with toF16 \(or 'x' with toF32\)/);
    assert.throws(() => layerNorm(x16, w16, w32), /layerNorm: argument 'bias' \(Tensor\[6\]\) is f32 but 'x' .* is f16/);
    assert.throws(() => layerNorm(x32, w16, w16), /layerNorm: argument 'weight' \(Tensor\[6\]\) is f16 but 'x' .* is f32; .* convert 'weight' with toF32/);
  } finally {
    for (const t of [x32, x16, w32, w16]) t.dispose();
  }
});

test('empty tensors pass through', async () => {
  const e = fromArray([], [0, 5]);
  const w = fromArray(randn(5, 1), [5]);
  for (const y of [softmax(e), gelu(e), quickGelu(e), layerNorm(e, w, w)]) {
    assert.equal(y.shape, [0, 5]);
    y.dispose();
  }
  e.dispose();
  w.dispose();
});

// The ViT-B/32 training shape against PyTorch (test/helpers/vitb32.ts; measured on lavapipe:
// worst 0.15× the tolerance).
test('LayerNorm over [8, 50, 768] matches PyTorch (forward, dx, dγ, dβ)', async () => {
  const { B, N, D } = VITB32;
  const fx = vitb32Fixture();
  const rows = fx.metadata.rows.split(',').map(Number);
  const xs = vitb32Input(1, 0, B * N * D);
  const offs = vitb32Input(1, 1, B * N);
  const w0 = vitb32Input(1, 2, D, 0.3);
  const bd = vitb32Input(1, 3, D, 0.2);
  const dy = vitb32Input(1, 4, B * N * D);
  vitb32Probe('ln', [xs, offs, w0, bd, dy]);
  // x = f32(xs + offset of the row); γ = f32(1 + w0), as the Python side rounds them.
  const xd = new Float32Array(xs.length);
  for (let i = 0; i < xs.length; i++) xd[i] = xs[i] + offs[Math.floor(i / D)];
  const wd = Float32Array.from(w0, (v) => 1 + v);
  const [x, w, b] = [
    [xd, [B, N, D]],
    [wd, [D]],
    [bd, [D]],
  ].map(([d, s]) => {
    const t = fromArray(d as Float32Array, s as number[]).keep();
    t.requiresGrad = true;
    return t;
  });
  try {
    const y = scope(() => layerNorm(x, w, b).keep());
    checkScaled(pickRows(await y.read(), D, rows), fx.get('ln.y').data, 'ln y');
    scope(() => backward(y, fromArray(dy, [B, N, D])));
    y.dispose();
    checkScaled(pickRows(await x.grad!.read(), D, rows), fx.get('ln.dx').data, 'ln dx');
    checkScaled(await w.grad!.read(), fx.get('ln.dw').data, 'ln dγ');
    checkScaled(await b.grad!.read(), fx.get('ln.db').data, 'ln dβ');
  } finally {
    for (const t of [x, w, b]) t.dispose();
  }
});

test.run();
