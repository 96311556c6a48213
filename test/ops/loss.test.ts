import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { l2Normalize, crossEntropy, infoNceGenToReal, scale, toF16, toF32 } from '../../src/ops/index.ts';
import { matmul } from '../../src/ops/matmul.ts';
import { backward } from '../../src/tensor/autograd.ts';
import { scope, fromArray, parameter } from '../../src/tensor/tensor.ts';
import { fixture, expectTensor, assertClose, gradCheck, device, randn, scaledTol, F32_TOL, type HostTensor, type Tolerance } from '../helpers/fixtures.ts';
import { testF16, f16Tol, U16 } from '../helpers/f16.ts';

// Tolerances. Everything meets the f32 default (rtol 1e-5 / atol 1e-6) except dG and dlogtau:
// - l2Normalize / crossEntropy / InfoNCE loss: measured errors stay below 1/4 of F32_TOL on
//   lavapipe, even though S = cos / tau amplifies the f32 rounding of the cosines by 1/tau (14.3 at
//   tau 0.07, 20 at tau 0.05).
// - InfoNCE dG is O(1/(B·|g|)), 2e-5 to 3e-2 here, so a fixed atol of 1e-6 would let a 1% error
//   through at B = 1024. Its atol is 2e-5 × max|dG| instead (scaledTol); the worst error measured
//   on lavapipe, with either adapter class's kernels, is 3.0e-6 × max|dG| (B = M = D = 1024).
// - dlogtau = -sum_ij dS_ij S_ij sums B*M products whose terms reach |S| ~ 1/tau = 20 and cancel
//   (the result is O(0.1-0.4)): absolute error ~2e-6 was measured (nce_sym_learn), 0.4x of
//   F32_TOL, so it gets atol 5e-6 for headroom on GPUs whose exp/log round differently.
const NCE_LOSS_TOL: Tolerance = F32_TOL;
const NCE_GRAD_K = 2e-5;
const DLOGTAU_TOL: Tolerance = { rtol: 1e-5, atol: 5e-6 };
const EXACT: Tolerance = { rtol: 0, atol: 0 };

test.before(async () => {
  await device();
});

function scalarOf(h: HostTensor): number {
  return h.data[0];
}

// ---- l2Normalize --------------------------------------------------------------------------------

for (const name of ['l2_5x512', 'l2_1x3']) {
  test(`l2Normalize ${name}: forward and backward match F.normalize`, async () => {
    const fx = fixture('loss');
    const x = fx.tensor(`${name}.x`, true).keep();
    try {
      const y = scope(() => l2Normalize(x).keep());
      await expectTensor(y, fx.get(`${name}.out`), F32_TOL, `${name} forward`);
      scope(() => backward(y, fx.tensor(`${name}.gout`)));
      y.dispose();
      await expectTensor(x.grad!, fx.get(`${name}.grad`), F32_TOL, `${name} grad`);
    } finally {
      x.dispose();
    }
  });
}

test('l2Normalize: rows below eps are divided by eps (no NaN), rank-3 input', async () => {
  // Row 0 has norm 2.2e-4 < eps = 1e-3: y = x / eps, dx = g / eps. Row 1 is ordinary.
  const xs = new Float32Array([1e-4, -2e-4, 0, 3, 4, 0]);
  const gs = new Float32Array([0.5, -1, 2, 1, 2, 3]);
  const x = fromArray(xs, [1, 2, 3]).keep();
  x.requiresGrad = true;
  try {
    const y = scope(() => l2Normalize(x, 1e-3).keep());
    const expY = [0.1, -0.2, 0, 0.6, 0.8, 0];
    assertClose(await y.read(), expY, F32_TOL, 'l2Normalize eps forward');
    scope(() => backward(y, fromArray(gs, [1, 2, 3])));
    y.dispose();
    // Row 1: (g - y (y.g)) / 5 with y.g = 0.6 + 1.6 = 2.2.
    const expG = [500, -1000, 2000, (1 - 0.6 * 2.2) / 5, (2 - 0.8 * 2.2) / 5, 3 / 5];
    assertClose(await x.grad!.read(), expG, { rtol: 1e-5, atol: 1e-5 }, 'l2Normalize eps backward');
  } finally {
    x.dispose();
  }
  const z = fromArray(new Float32Array(4), [4]);
  assertClose(await l2Normalize(z).read(), [0, 0, 0, 0], EXACT, 'l2Normalize of a zero vector');
  z.dispose();
});

// l2Normalize on f16 tensors (f16 storage, f32 math; the saved row norms stay f32), against the
// same fixtures: x and the upstream gradient are rounded with toF16 (whose backward hands the f16
// gradient to the f32 leaf, widened exactly). k = 2: three roundings reach y or dx (x's, y's or
// g's, the result's), each ≤ U16 relative, and ‖x‖ averages x's; the backward's projection
// g − y (y·g) cancels, hence atol on max|dx|. Measured worst on lavapipe: 0.52 (y), 0.99 (dx of
// l2_1x3).
const L2_F16_K = 2;
for (const name of ['l2_5x512', 'l2_1x3']) {
  testF16(`l2Normalize ${name} on f16 tensors: forward and backward match F.normalize within f16Tol (k = ${L2_F16_K})`, async () => {
    const fx = fixture('loss');
    const x = fx.tensor(`${name}.x`, true).keep();
    try {
      const y = scope(() => l2Normalize(toF16(x)).keep());
      assert.is(y.dtype, 'f16');
      const want = fx.get(`${name}.out`);
      await expectTensor(y, want, f16Tol(want.data, L2_F16_K), `${name} f16 forward`);
      scope(() => backward(y, toF16(fx.tensor(`${name}.gout`))));
      y.dispose();
      const grad = fx.get(`${name}.grad`);
      await expectTensor(x.grad!, grad, f16Tol(grad.data, L2_F16_K), `${name} f16 grad`);
    } finally {
      x.dispose();
    }
  });
}

// With f16 storage only the loads and stores change: on f16-rounded inputs, y is the f32 kernel's
// y rounded to f16 (half an f16 ulp, U16 relative, +1% for f32 math that two compilations may
// round differently in the last bit; 3e-8 near zero), and dx is the float64
// (g − y16 (y16·g)) / ‖x‖ from the f16 y the backward reads, rounded to f16 (atol 4e-6·max|dx|
// for the f32 dot product and norm). Any f16 arithmetic or rounded intermediate shows up here.
// Rows of 4096 (16 elements per invocation) and of 24.
testF16('l2Normalize on f16 tensors is the f32 kernel rounded to f16 (forward and backward)', async () => {
  const rtol = U16 * 1.01;
  for (const [rows, d] of [[6, 4096], [5, 24]]) {
    const n = rows * d;
    const round16 = async (v: Float32Array): Promise<Float32Array> => {
      const t = toF16(fromArray(v, [n]));
      const r = await t.read();
      t.dispose();
      return r;
    };
    const xd = await round16(randn(n, 51 + d, 2));
    const gd = await round16(randn(n, 52 + d));
    const [y16, dx16, y32] = scope(() => {
      const x = toF16(fromArray(xd, [rows, d]));
      x.requiresGrad = true;
      const y = l2Normalize(x);
      assert.is(y.dtype, 'f16');
      backward(y, toF16(fromArray(gd, [rows, d])));
      assert.is(x.grad!.dtype, 'f16', 'the gradient has the input dtype');
      return [toF32(y).keep(), toF32(x.grad!).keep(), l2Normalize(fromArray(xd, [rows, d])).keep()];
    });
    try {
      const y = await y16.read();
      assertClose(y, await y32.read(), { rtol, atol: 3e-8 }, `l2Normalize f16 y [${rows}, ${d}]`);
      const ref = new Float64Array(n);
      for (let r = 0; r < rows; r++) {
        let ss = 0;
        let dot = 0;
        for (let i = r * d; i < (r + 1) * d; i++) {
          ss += xd[i] * xd[i];
          dot += y[i] * gd[i];
        }
        for (let i = r * d; i < (r + 1) * d; i++) ref[i] = (gd[i] - y[i] * dot) / Math.sqrt(ss);
      }
      const maxRef = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assertClose(await dx16.read(), ref, { rtol, atol: 3e-8 + 4e-6 * maxRef }, `l2Normalize f16 dx [${rows}, ${d}]`);
    } finally {
      for (const t of [y16, dx16, y32]) t.dispose();
    }
  }
});

// ---- crossEntropy -------------------------------------------------------------------------------

for (const name of ['ce_8x10', 'ce_3x197']) {
  test(`crossEntropy ${name}: loss and dlogits match F.cross_entropy`, async () => {
    const fx = fixture('loss');
    const logits = fx.tensor(`${name}.logits`, true).keep();
    const targets = Array.from(fx.get(`${name}.targets`).data, Math.round);
    try {
      const loss = scope(() => crossEntropy(logits, targets).keep());
      assert.equal(loss.shape, []);
      await expectTensor(loss, fx.get(`${name}.loss`), F32_TOL, `${name} loss`);
      scope(() => backward(loss, fx.tensor(`${name}.gout`)));
      loss.dispose();
      await expectTensor(logits.grad!, fx.get(`${name}.grad`), F32_TOL, `${name} grad`);
    } finally {
      logits.dispose();
    }
  });
}

test('crossEntropy: Int32Array targets and clear errors', async () => {
  const logits = fromArray(randn(12, 3), [3, 4]);
  const a = crossEntropy(logits, new Int32Array([0, 3, 1]));
  const b = crossEntropy(logits, [0, 3, 1]);
  assert.is(await a.item(), await b.item());
  assert.throws(() => crossEntropy(logits, [0, 4, 1]), /crossEntropy: targets\[1\] = 4 is not a class index in \[0, 4\)/);
  assert.throws(() => crossEntropy(logits, [0, 1.5, 1]), /targets\[1\] = 1.5/);
  assert.throws(() => crossEntropy(logits, [0, 1]), /crossEntropy: got 2 targets for 3 logit rows/);
  const flat = fromArray(randn(4, 4), [4]);
  assert.throws(() => crossEntropy(flat, [0]), /crossEntropy: logits must be \[B, C\].*logits=\[4\]/);
  for (const t of [logits, a, b, flat]) t.dispose();
});

// ---- infoNceGenToReal: fixtures -----------------------------------------------------------------

// The nce_cos_* cases add the cosine term (cosineWeight 0.5 or 2, read from the fixture), with
// B != M and with the symmetric, learnable variant. Same tolerances: the term is a mean of B
// cosines (O(1), no 1/tau amplification) and its gradient is of the size of InfoNCE's.
const NCE_CASES: [string, { learnable?: boolean; symmetric?: boolean; cosine?: boolean }][] = [
  ['nce_8x8x32', {}],
  ['nce_8x24x64', {}],
  ['nce_32x32x512', {}],
  ['nce_learn', { learnable: true }],
  ['nce_sym', { symmetric: true }],
  ['nce_sym_learn', { learnable: true, symmetric: true }],
  ['nce_cos_8x8x32', { cosine: true }],
  ['nce_cos_8x24x64', { cosine: true }],
  ['nce_cos_sym_learn', { learnable: true, symmetric: true, cosine: true }],
];

/**
 * Runs every case once more with the other adapter class's kernels: on lavapipe the tile
 * kernels of infonce.wgsl that GPUs use (64 x 64 and 32 x 32 tiles), elsewhere infonce_sg.wgsl
 * where the adapter has 8-wide subgroups.
 */
async function forceOtherBlocking(): Promise<void> {
  const dev = await device();
  dev.settings.blockingClass = dev.adapterClass === 'cpu' ? 'gpu' : 'cpu';
}

async function restoreBlocking(): Promise<void> {
  (await device()).settings.blockingClass = null;
}
const BLOCKINGS = [false, true].map((other) => ({ other, label: other ? ' (other adapter class blocking)' : '' }));

for (const [name, { learnable = false, symmetric = false, cosine = false }] of NCE_CASES) for (const { other, label } of BLOCKINGS) {
  test(`infoNceGenToReal ${name}: loss, accuracy, dG${learnable ? ', dlogtau' : ''}${cosine ? ', terms' : ''} match GMAIL Eq. 1${cosine ? ' + the cosine term' : ''} in PyTorch${label}`, async () => {
    if (other) await forceOtherBlocking();
    const fx = fixture('loss');
    const g = fx.tensor(`${name}.g`, true).keep();
    const r = fx.tensor(`${name}.r`).keep();
    const logTau = learnable ? parameter(fx.get(`${name}.logtau`).data, [], 'logit_scale') : undefined;
    try {
      const cosineWeight = cosine ? scalarOf(fx.get(`${name}.cosine_weight`)) : undefined;
      const opts = learnable ? { logTau, symmetric, cosineWeight } : { tau: scalarOf(fx.get(`${name}.tau`)), symmetric, cosineWeight };
      const { loss, accuracy, terms } = scope(() => {
        const res = infoNceGenToReal(g, r, opts);
        res.loss.keep();
        res.accuracy.keep();
        res.terms?.keep();
        return res;
      });
      assert.equal(loss.shape, []);
      assert.equal(accuracy.shape, []);
      await expectTensor(loss, fx.get(`${name}.loss`), NCE_LOSS_TOL, `${name} loss`);
      await expectTensor(accuracy, fx.get(`${name}.accuracy`), EXACT, `${name} accuracy`);
      if (cosine) {
        assert.ok(terms, 'terms is returned with cosineWeight > 0');
        assertClose(await terms!.read(), [scalarOf(fx.get(`${name}.nce`)), scalarOf(fx.get(`${name}.cosine`))], NCE_LOSS_TOL, `${name} terms`);
        terms!.dispose();
      } else {
        assert.is(terms, undefined, 'no terms without the cosine term');
      }
      scope(() => backward(loss, fx.tensor(`${name}.gout`)));
      loss.dispose();
      accuracy.dispose();
      const dg = fx.get(`${name}.dg`);
      await expectTensor(g.grad!, dg, scaledTol(dg.data, NCE_GRAD_K), `${name} dG`);
      if (logTau) {
        assert.ok(logTau.grad, 'logTau got a gradient');
        await expectTensor(logTau.grad!, fx.get(`${name}.dlogtau`), DLOGTAU_TOL, `${name} dlogtau`);
      }
    } finally {
      await restoreBlocking();
      g.dispose();
      r.dispose();
      logTau?.dispose();
    }
  });
}

// ---- infoNceGenToReal: float64 host reference on shapes past one workgroup ----------------------

interface HostNce {
  loss: number;
  accuracy: number;
  dG: Float64Array;
  dLogTau: number;
}

/**
 * GMAIL Eq. 1 composed from simple steps in float64: normalize, G R^T / tau, cross-entropy; plus
 * cosineWeight · mean_i(1 − ĝ_i·r̂_i).
 */
function hostInfoNce(g: Float32Array, r: Float32Array, b: number, m: number, d: number, tau: number, cosineWeight = 0): HostNce {
  const normalize = (x: Float32Array, rows: number): { xh: Float64Array; n: Float64Array } => {
    const xh = new Float64Array(rows * d);
    const n = new Float64Array(rows);
    for (let i = 0; i < rows; i++) {
      let ss = 0;
      for (let k = 0; k < d; k++) ss += x[i * d + k] ** 2;
      n[i] = Math.sqrt(ss);
      for (let k = 0; k < d; k++) xh[i * d + k] = x[i * d + k] / Math.max(n[i], 1e-12);
    }
    return { xh, n };
  };
  const { xh: gh, n: gn } = normalize(g, b);
  const { xh: rh } = normalize(r, m);
  let loss = 0;
  let correct = 0;
  let dLogTau = 0;
  const dG = new Float64Array(b * d);
  for (let i = 0; i < b; i++) {
    const s = new Float64Array(m);
    let best = 0;
    for (let j = 0; j < m; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += gh[i * d + k] * rh[j * d + k];
      s[j] = dot / tau;
      if (s[j] > s[best]) best = j;
    }
    const mx = s[best];
    let se = 0;
    for (let j = 0; j < m; j++) se += Math.exp(s[j] - mx);
    const lse = mx + Math.log(se);
    loss += (lse - s[i]) / b + (cosineWeight * (1 - s[i] * tau)) / b;
    if (best === i) correct++;
    const dgh = new Float64Array(d);
    for (let k = 0; k < d; k++) dgh[k] = (-cosineWeight / b) * rh[i * d + k];
    for (let j = 0; j < m; j++) {
      const ds = (Math.exp(s[j] - lse) - (i === j ? 1 : 0)) / b;
      dLogTau -= ds * s[j];
      for (let k = 0; k < d; k++) dgh[k] += (ds / tau) * rh[j * d + k];
    }
    let dot = 0;
    for (let k = 0; k < d; k++) dot += gh[i * d + k] * dgh[k];
    for (let k = 0; k < d; k++) dG[i * d + k] = (dgh[k] - gh[i * d + k] * dot) / gn[i];
  }
  return { loss, accuracy: correct / b, dG, dLogTau };
}

// (b, m, d, other blocking, cosine weight): several column blocks and D chunks; the issue's
// largest sizes, B = M = 1024 and D = 1024 (still 2 dispatches forward and 1 backward); a
// cached-negatives shape M = 4B. With the other adapter class's blocking, the edge case and a
// shape whose forward takes the 64 x 64 tiles (>= 128 of them) and whose backward takes the
// 32 x 32 ones. The cosine term on a shape with several row and column tiles, both blockings
// (its diagonal crosses tiles).
const NCE_HOST_CASES: [number, number, number, boolean, number][] = [
  [50, 300, 300, false, 0],
  [1024, 1024, 1024, false, 0],
  [256, 1024, 512, false, 0],
  [50, 300, 300, true, 0],
  [512, 1024, 256, true, 0],
  [50, 300, 300, false, 1.5],
  [50, 300, 300, true, 1.5],
];
for (const [b, m, d, other, cosineWeight] of NCE_HOST_CASES) {
  test(`infoNceGenToReal: B=${b}, M=${m}, D=${d}${cosineWeight ? `, cosineWeight ${cosineWeight}` : ''} vs float64 host reference${BLOCKINGS[Number(other)].label}`, async () => {
    const dev = await device();
    if (other) await forceOtherBlocking();
    const tau = 0.07;
    const rData = randn(m * d, 21);
    // Positives correlated with their teacher rows so accuracy is neither 0 nor 1.
    const noise = randn(b * d, 22, 1.6);
    const gData = Float32Array.from({ length: b * d }, (_, i) => rData[i] + noise[i] * (1 + (Math.floor(i / d) % 50) / 10));
    const ref = hostInfoNce(gData, rData, b, m, d, tau, cosineWeight);
    assert.ok(ref.accuracy > 0 && ref.accuracy < 1, `reference accuracy ${ref.accuracy} should be strictly between 0 and 1`);
    const g = fromArray(gData, [b, d]).keep();
    g.requiresGrad = true;
    const r = fromArray(rData, [m, d]).keep();
    try {
      const d0 = dev.batch.totalDispatches;
      const { loss, accuracy } = scope(() => {
        const res = infoNceGenToReal(g, r, { tau, cosineWeight });
        res.terms?.dispose();
        return { loss: res.loss.keep(), accuracy: res.accuracy.keep() };
      });
      assert.is(dev.batch.totalDispatches - d0, 2, 'forward dispatches');
      assertClose([await loss.item()], [ref.loss], NCE_LOSS_TOL, 'loss vs host');
      assertClose([await accuracy.item()], [Math.fround(ref.accuracy)], EXACT, 'accuracy vs host');
      const d1 = dev.batch.totalDispatches;
      scope(() => backward(loss));
      assert.is(dev.batch.totalDispatches - d1, 1, 'backward dispatches');
      loss.dispose();
      accuracy.dispose();
      assertClose(await g.grad!.read(), ref.dG, scaledTol(ref.dG, NCE_GRAD_K), 'dG vs host');
    } finally {
      await restoreBlocking();
      g.dispose();
      r.dispose();
    }
  });
}

test('infoNceGenToReal agrees with the composition l2Normalize -> matmul(transB) -> scale(1/tau) -> crossEntropy', async () => {
  const fx = fixture('loss');
  for (const name of ['nce_8x24x64', 'nce_32x32x512']) {
    const tau = scalarOf(fx.get(`${name}.tau`));
    const gFused = fx.tensor(`${name}.g`, true).keep();
    const gComp = fx.tensor(`${name}.g`, true).keep();
    const r = fx.tensor(`${name}.r`).keep();
    try {
      const b = gFused.shape[0];
      const fused = scope(() => {
        const { loss } = infoNceGenToReal(gFused, r, { tau });
        backward(loss);
        return loss.keep();
      });
      const composed = scope(() => {
        const s = scale(matmul(l2Normalize(gComp), l2Normalize(r), { transB: true }), 1 / tau);
        const loss = crossEntropy(s, Array.from({ length: b }, (_, i) => i));
        backward(loss);
        return loss.keep();
      });
      // Two f32 evaluations in different summation orders: each is within F32_TOL of float64.
      assertClose(await fused.read(), await composed.read(), { rtol: 2e-5, atol: 2e-6 }, `${name}: fused vs composed loss`);
      const dgComposed = await gComp.grad!.read();
      assertClose(await gFused.grad!.read(), dgComposed, scaledTol(dgComposed, 2 * NCE_GRAD_K), `${name}: fused vs composed dG`);
      fused.dispose();
      composed.dispose();
    } finally {
      gFused.dispose();
      gComp.dispose();
      r.dispose();
    }
  }
});

// ---- infoNceGenToReal: finite differences, frozen teacher, dispatch count, errors ---------------

test('finite differences: l2Normalize, crossEntropy, infoNce (fixed, learnable, symmetric, cosine term)', async () => {
  await gradCheck('l2Normalize', ([x]) => l2Normalize(x), [{ shape: [3, 5], data: randn(15, 31) }]);
  await gradCheck('crossEntropy', ([x]) => crossEntropy(x, [2, 0, 5, 1]), [{ shape: [4, 6], data: randn(24, 32, 2) }]);
  const r = fromArray(randn(5 * 4, 33), [5, 4]).keep();
  const rSq = fromArray(randn(3 * 4, 34), [3, 4]).keep();
  try {
    // tau 0.5 keeps the loss smooth enough for f32 central differences at eps 1e-2.
    await gradCheck('infoNce g', ([g]) => infoNceGenToReal(g, r, { tau: 0.5 }).loss, [{ shape: [3, 4], data: randn(12, 35) }]);
    await gradCheck('infoNce g, logTau', ([g, lt]) => infoNceGenToReal(g, r, { logTau: lt }).loss, [
      { shape: [3, 4], data: randn(12, 36) },
      { shape: [], data: new Float32Array([Math.log(0.6)]) },
    ]);
    await gradCheck('infoNce symmetric', ([g, lt]) => infoNceGenToReal(g, rSq, { logTau: lt, symmetric: true }).loss, [
      { shape: [3, 4], data: randn(12, 37) },
      { shape: [], data: new Float32Array([Math.log(0.7)]) },
    ]);
    // The cosine term (cosineWeight 2, so it weighs as much as InfoNCE at tau 0.5), alone and with
    // learnable tau and the symmetric loss: its dG and that it adds nothing to dlogtau.
    await gradCheck('infoNce + cosine', ([g]) => infoNceGenToReal(g, r, { tau: 0.5, cosineWeight: 2 }).loss, [{ shape: [3, 4], data: randn(12, 38) }]);
    await gradCheck('infoNce symmetric + cosine, logTau', ([g, lt]) => infoNceGenToReal(g, rSq, { logTau: lt, symmetric: true, cosineWeight: 0.5 }).loss, [
      { shape: [3, 4], data: randn(12, 39) },
      { shape: [], data: new Float32Array([Math.log(0.7)]) },
    ]);
  } finally {
    r.dispose();
    rSq.dispose();
  }
});

test('infoNceGenToReal: the teacher r gets no gradient even when it requires grad', async () => {
  const g = fromArray(randn(12, 41), [3, 4]).keep();
  const r = fromArray(randn(20, 42), [5, 4]).keep();
  g.requiresGrad = true;
  r.requiresGrad = true;
  try {
    scope(() => backward(infoNceGenToReal(g, r).loss));
    assert.ok(g.grad, 'g has a gradient');
    assert.is(r.grad, null, 'r (frozen teacher) has no gradient');
    g.requiresGrad = false;
    const res = infoNceGenToReal(g, r);
    assert.is(res.loss.requiresGrad, false, 'r alone does not make the loss differentiable');
    assert.is(res.accuracy.requiresGrad, false);
    res.loss.dispose();
    res.accuracy.dispose();
  } finally {
    g.dispose();
    r.dispose();
  }
});

test('infoNceGenToReal is fused: 2 dispatches forward, 1 backward (2 with learnable tau), with or without the cosine term', async () => {
  const dev = await device();
  const g = fromArray(randn(12, 51), [3, 4]).keep();
  const r = fromArray(randn(28, 52), [7, 4]).keep();
  const lt = parameter([Math.log(0.07)], [], 'log_tau');
  g.requiresGrad = true;
  try {
    const cases = [[{}, 2, 1], [{ logTau: lt }, 2, 2], [{ cosineWeight: 0.5 }, 2, 1], [{ logTau: lt, cosineWeight: 0.5 }, 2, 2]] as const;
    for (const [opts, fwd, bwd] of cases) {
      scope(() => {
        const before = dev.batch.totalDispatches;
        const { loss, terms } = infoNceGenToReal(g, r, opts);
        assert.is(terms !== undefined, 'cosineWeight' in opts, 'terms only with the cosine term');
        assert.is(dev.batch.totalDispatches - before, fwd, 'forward dispatches');
        const mid = dev.batch.totalDispatches;
        backward(loss);
        assert.is(dev.batch.totalDispatches - mid, bwd, 'backward dispatches');
      });
      // Fresh gradients for the next case (accumulating into one would add a dispatch).
      for (const t of [g, lt]) {
        t.grad?.dispose();
        t.grad = null;
      }
    }
    await dev.sync();
  } finally {
    g.dispose();
    r.dispose();
    lt.dispose();
  }
});

test('infoNceGenToReal: clear errors for bad shapes and options', async () => {
  const g = fromArray(randn(12, 61), [3, 4]);
  const r2 = fromArray(randn(8, 62), [2, 4]);
  const r5 = fromArray(randn(15, 63), [3, 5]);
  const r6 = fromArray(randn(24, 64), [6, 4]);
  const lt = fromArray([0], []);
  assert.throws(() => infoNceGenToReal(g, r2), /infoNceGenToReal: r needs at least as many rows as g.*M=2 < B=3.*g=\[3, 4\], r=\[2, 4\]/);
  assert.throws(() => infoNceGenToReal(g, r5), /same embedding dim \(4 vs 5\)/);
  assert.throws(() => infoNceGenToReal(g, r6, { symmetric: true }), /symmetric: true needs M == B/);
  assert.throws(() => infoNceGenToReal(g, r6, { tau: 0.1, logTau: lt }), /either tau .* or logTau/);
  assert.throws(() => infoNceGenToReal(g, r6, { tau: 0 }), /tau must be a positive finite number/);
  assert.throws(() => infoNceGenToReal(g, r6, { logTau: g }), /logTau must be a scalar/);
  for (const bad of [-0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => infoNceGenToReal(g, r6, { cosineWeight: bad }), /infoNceGenToReal: cosineWeight must be a finite number >= 0/);
  }
  for (const t of [g, r2, r5, r6, lt]) t.dispose();
});

test.run();
