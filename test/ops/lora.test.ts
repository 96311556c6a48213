import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loraLinear } from '../../src/ops/index.ts';
import type { Activation } from '../../src/ops/matmul.ts';
import { backward } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { assertClose, gradCheck, device, randn, type Tolerance } from '../helpers/fixtures.ts';

// loraLinear forward and dx / dA / dB / dresidual against a float64 host reference computed from
// the same f32 inputs. The shapes cover one row chunk of the rank-r gradient kernel (rows ≤ 32),
// several chunks (50, 197), the folded-span path (rows > 512·32), one rank block (r = 4, 8) and
// two (r = 12: 8 + 4).
//
// Tolerance: rtol 1e-5 as F32_TOL, but atol is 1e-6 times the largest |reference| of the tensor
// (not an absolute 1e-6): dA and dB are sums over up to 16 500 rows of terms of size ~1–10, whose
// f32 rounding error is absolute, so entries that cancel to near zero cannot meet a fixed 1e-6.

interface Case {
  name: string;
  lead: number[];
  k: number;
  n: number;
  r: number;
  act: Activation;
  residual: boolean;
  bias: boolean;
}

const CASES: Case[] = [
  { name: 'x[50,24] r=4', lead: [50], k: 24, n: 16, r: 4, act: 'none', residual: false, bias: true },
  { name: 'x[2,25,24] r=4 quick_gelu', lead: [2, 25], k: 24, n: 16, r: 4, act: 'quick_gelu', residual: false, bias: true },
  { name: 'x[50,24] r=4 quick_gelu + residual', lead: [50], k: 24, n: 16, r: 4, act: 'quick_gelu', residual: true, bias: true },
  { name: 'x[50,24] r=4 residual, no bias', lead: [50], k: 24, n: 16, r: 4, act: 'none', residual: true, bias: false },
  { name: 'x[197,24] r=4 quick_gelu', lead: [197], k: 24, n: 16, r: 4, act: 'quick_gelu', residual: false, bias: true },
  { name: 'x[197,24] r=8', lead: [197], k: 24, n: 16, r: 8, act: 'none', residual: true, bias: true },
  { name: 'x[197,70] N=67 r=12 quick_gelu', lead: [197], k: 70, n: 67, r: 12, act: 'quick_gelu', residual: false, bias: true },
  { name: 'x[3,24] r=12 (one row chunk)', lead: [3], k: 24, n: 16, r: 12, act: 'none', residual: false, bias: true },
  { name: 'x[16500,8] r=4 (folded span)', lead: [16500], k: 8, n: 8, r: 4, act: 'none', residual: false, bias: true },
];

const S = 2;

function sigmoid(v: number): number {
  return 1 / (1 + Math.exp(-v));
}

interface Ref {
  y: Float64Array;
  dx: Float64Array;
  dA: Float64Array;
  dB: Float64Array;
}

function reference(c: Case, rows: number, x: Float32Array, w: Float32Array, b: Float32Array | null, a: Float32Array, bb: Float32Array, res: Float32Array | null, dy: Float32Array): Ref {
  const { k, n, r } = c;
  const su = new Float64Array(rows * r);
  for (let m = 0; m < rows; m++) for (let j = 0; j < r; j++) {
    let acc = 0;
    for (let q = 0; q < k; q++) acc += x[m * k + q] * a[j * k + q];
    su[m * r + j] = S * acc;
  }
  const y = new Float64Array(rows * n);
  const dz = new Float64Array(rows * n);
  for (let m = 0; m < rows; m++) for (let o = 0; o < n; o++) {
    let z = b ? b[o] : 0;
    for (let q = 0; q < k; q++) z += x[m * k + q] * w[o * k + q];
    for (let j = 0; j < r; j++) z += su[m * r + j] * bb[o * r + j];
    const i = m * n + o;
    if (c.act === 'quick_gelu') {
      const sg = sigmoid(1.702 * z);
      y[i] = z * sg;
      dz[i] = dy[i] * (sg + 1.702 * z * sg * (1 - sg));
    } else {
      y[i] = z;
      dz[i] = dy[i];
    }
    if (res) y[i] += res[i];
  }
  const du = new Float64Array(rows * r);
  for (let m = 0; m < rows; m++) for (let j = 0; j < r; j++) {
    let acc = 0;
    for (let o = 0; o < n; o++) acc += dz[m * n + o] * bb[o * r + j];
    du[m * r + j] = S * acc;
  }
  const dx = new Float64Array(rows * k);
  for (let m = 0; m < rows; m++) for (let q = 0; q < k; q++) {
    let acc = 0;
    for (let o = 0; o < n; o++) acc += dz[m * n + o] * w[o * k + q];
    for (let j = 0; j < r; j++) acc += du[m * r + j] * a[j * k + q];
    dx[m * k + q] = acc;
  }
  const dA = new Float64Array(r * k);
  const dB = new Float64Array(n * r);
  for (let m = 0; m < rows; m++) {
    for (let j = 0; j < r; j++) for (let q = 0; q < k; q++) dA[j * k + q] += du[m * r + j] * x[m * k + q];
    for (let o = 0; o < n; o++) for (let j = 0; j < r; j++) dB[o * r + j] += dz[m * n + o] * su[m * r + j];
  }
  return { y, dx, dA, dB };
}

function scaledTol(ref: ArrayLike<number>): Tolerance {
  let mx = 0;
  for (let i = 0; i < ref.length; i++) mx = Math.max(mx, Math.abs(ref[i]));
  return { rtol: 1e-5, atol: 1e-6 * Math.max(1, mx) };
}

function check(actual: Float32Array, expected: Float64Array, label: string): void {
  assertClose(actual, expected, scaledTol(expected), label);
}

test.before(async () => {
  await device();
});

CASES.forEach((c, ci) => {
  test(`loraLinear forward + dx/dA/dB vs float64 host: ${c.name}`, async () => {
    const { k, n, r } = c;
    const rows = c.lead.reduce((p, q) => p * q, 1);
    const seed = 100 * (ci + 1);
    const xd = randn(rows * k, seed);
    const wd = randn(n * k, seed + 1, 0.3);
    const bd = c.bias ? randn(n, seed + 2) : null;
    const ad = randn(r * k, seed + 3, 0.3);
    const bbd = randn(n * r, seed + 4, 0.5);
    const resd = c.residual ? randn(rows * n, seed + 5) : null;
    const dyd = randn(rows * n, seed + 6);
    const ref = reference(c, rows, xd, wd, bd, ad, bbd, resd, dyd);

    const x = fromArray(xd, [...c.lead, k]).keep();
    const a = fromArray(ad, [r, k]).keep();
    const bb = fromArray(bbd, [n, r]).keep();
    const res = resd ? fromArray(resd, [...c.lead, n]).keep() : null;
    for (const t of [x, a, bb, ...(res ? [res] : [])]) t.requiresGrad = true;
    let y: Tensor | null = null;
    scope(() => {
      const w = fromArray(wd, [n, k]);
      const bias = bd ? fromArray(bd, [n]) : undefined;
      y = loraLinear(x, w, bias, a, bb, S, c.act, res ?? undefined).keep();
      backward(y, fromArray(dyd, y.shape));
    });
    const out = y as unknown as Tensor;
    try {
      assert.equal(out.shape, [...c.lead, n]);
      check(await out.read(), ref.y, `${c.name}: y`);
      assert.equal(x.grad!.shape, x.shape);
      assert.equal(a.grad!.shape, [r, k]);
      assert.equal(bb.grad!.shape, [n, r]);
      check(await x.grad!.read(), ref.dx, `${c.name}: dx`);
      check(await a.grad!.read(), ref.dA, `${c.name}: dA`);
      check(await bb.grad!.read(), ref.dB, `${c.name}: dB`);
      if (res) assertClose(await res.grad!.read(), dyd, { rtol: 0, atol: 0 }, `${c.name}: dresidual`);
    } finally {
      for (const t of [out, x, a, bb, ...(res ? [res] : [])]) t.dispose();
    }
  });
});

test('loraLinear: dA only / dB only (the other factor frozen)', async () => {
  const rows = 40, k = 12, n = 10, r = 4;
  const c: Case = { name: 'partial', lead: [rows], k, n, r, act: 'none', residual: false, bias: true };
  const xd = randn(rows * k, 1), wd = randn(n * k, 2, 0.3), bd = randn(n, 3), ad = randn(r * k, 4, 0.3), bbd = randn(n * r, 5, 0.5), dyd = randn(rows * n, 6);
  const ref = reference(c, rows, xd, wd, bd, ad, bbd, null, dyd);
  for (const which of ['A', 'B'] as const) {
    const a = fromArray(ad, [r, k]).keep();
    const bb = fromArray(bbd, [n, r]).keep();
    (which === 'A' ? a : bb).requiresGrad = true;
    scope(() => {
      const y = loraLinear(fromArray(xd, [rows, k]), fromArray(wd, [n, k]), fromArray(bd, [n]), a, bb, S);
      backward(y, fromArray(dyd, y.shape));
    });
    if (which === 'A') {
      assert.is(bb.grad, null);
      check(await a.grad!.read(), ref.dA, 'dA only');
    } else {
      assert.is(a.grad, null);
      check(await bb.grad!.read(), ref.dB, 'dB only');
    }
    a.dispose();
    bb.dispose();
  }
});

test('loraLinear gradCheck (tiny, quick_gelu + residual)', async () => {
  const rows = 5, k = 6, n = 4, r = 3;
  const w = fromArray(randn(n * k, 11, 0.4), [n, k]).keep();
  const b = fromArray(randn(n, 12), [n]).keep();
  try {
    await gradCheck(
      'loraLinear',
      ([x, a, bb, res]) => loraLinear(x, w, b, a, bb, S, 'quick_gelu', res),
      [
        { shape: [rows, k], data: randn(rows * k, 13) },
        { shape: [r, k], data: randn(r * k, 14, 0.4) },
        { shape: [n, r], data: randn(n * r, 15, 0.4) },
        { shape: [rows, n], data: randn(rows * n, 16) },
      ],
      { probes: 10 },
    );
  } finally {
    w.dispose();
    b.dispose();
  }
});

test.run();
