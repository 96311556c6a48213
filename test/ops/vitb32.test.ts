import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { attention, layerNorm, linear } from '../../src/ops/index.ts';
import { backward } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { fixture, assertClose, device, exactNormal, type Tolerance } from '../helpers/fixtures.ts';

// Attention, LayerNorm and the MLP block (fc1 + quick GELU, fc2 + residual) forward and backward
// at the ViT-B/32 training shapes (batch 8 × 50 tokens, width 768, 12 heads of 64, MLP 3072)
// against PyTorch float64 (scripts/fixtures/fx_vitb32.py). Inputs are regenerated bit-exactly
// (exactNormal, seeds 3000 + 100·case + input); the fixture stores slices of the outputs (rows,
// whole heads, weight-gradient rows) and whole reductions (dγ, dβ, biases).
//
// Tolerance: rtol 1e-5 with atol 1e-6 × the largest |reference| of the tensor (as in the LoRA
// tests): the long reductions here (768- and 3072-term dot products, dW and dγ sums over 400 rows)
// carry absolute f32 rounding error that a fixed atol cannot express. Measured on lavapipe: worst
// 0.58× the tolerance (MLP dx and db1; y, dW1, dW2 0.40–0.52×), attention ≤ 0.17×, LayerNorm
// ≤ 0.15×; a 1e-4 relative error in any of them fails.

const PROBE = 8;

function scaledTol(ref: ArrayLike<number>, k = 1e-6): Tolerance {
  let mx = 0;
  for (let i = 0; i < ref.length; i++) mx = Math.max(mx, Math.abs(ref[i]));
  return { rtol: 1e-5, atol: k * Math.max(1, mx) };
}

function check(actual: Float32Array, expected: Float32Array, label: string): void {
  assertClose(actual, expected, scaledTol(expected), label);
}

/** Input i of case c, as fx_vitb32.gen: f32(exactNormal · scale). */
function gen(c: number, i: number, size: number, scale = 1): Float32Array {
  return exactNormal(size, 3000 + 100 * c + i, scale);
}

function probeCheck(name: string, inputs: Float32Array[]): void {
  const probe = fixture('vitb32').get(`${name}.probe`).data;
  inputs.forEach((d, i) => assert.equal(Array.from(d.subarray(0, PROBE)), Array.from(probe.subarray(i * PROBE, i * PROBE + PROBE)), `${name}: input ${i} regenerated bit-exactly`));
}

/** Rows `rows` of a [.., width] tensor, concatenated. */
function pickRows(full: Float32Array, width: number, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(full.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

const B = 8, N = 50, H = 12, DH = 64, D = 768, MLP = 3072;

test.before(async () => {
  const fx = fixture('vitb32');
  assert.is(fx.metadata.shape, `B=${B},N=${N},H=${H},DH=${DH},D=${D},MLP=${MLP}`);
  await device();
});

test('attention at B=8, N=50, H=12, Dh=64 matches PyTorch (forward and dq, dk, dv)', async () => {
  const fx = fixture('vitb32');
  const shape = [B, N, H, DH];
  const size = B * N * H * DH;
  const data = [0, 1, 2, 3].map((i) => gen(0, i, size));
  probeCheck('attn', data);
  const heads = fx.metadata['attn.heads'].split(';').map((s) => s.split(',').map(Number));
  /** [len(heads), N, DH] slices of a [B, N, H, DH] tensor. */
  const slice = (full: Float32Array): Float32Array => {
    const out = new Float32Array(heads.length * N * DH);
    heads.forEach(([b, h], s) => {
      for (let i = 0; i < N; i++) out.set(full.subarray(((b * N + i) * H + h) * DH, ((b * N + i) * H + h + 1) * DH), (s * N + i) * DH);
    });
    return out;
  };
  const [q, k, v] = data.slice(0, 3).map((d) => {
    const t = fromArray(d, shape).keep();
    t.requiresGrad = true;
    return t;
  });
  try {
    const out = scope(() => attention(q, k, v).keep());
    check(slice(await out.read()), fx.get('attn.out').data, 'attn out');
    scope(() => backward(out, fromArray(data[3], shape)));
    out.dispose();
    check(slice(await q.grad!.read()), fx.get('attn.dq').data, 'attn dq');
    check(slice(await k.grad!.read()), fx.get('attn.dk').data, 'attn dk');
    check(slice(await v.grad!.read()), fx.get('attn.dv').data, 'attn dv');
  } finally {
    for (const t of [q, k, v]) t.dispose();
  }
});

test('LayerNorm over [8, 50, 768] matches PyTorch (forward, dx, dγ, dβ)', async () => {
  const fx = fixture('vitb32');
  const rows = fx.metadata.rows.split(',').map(Number);
  const xs = gen(1, 0, B * N * D);
  const offs = gen(1, 1, B * N);
  const w0 = gen(1, 2, D, 0.3);
  const bd = gen(1, 3, D, 0.2);
  const dy = gen(1, 4, B * N * D);
  probeCheck('ln', [xs, offs, w0, bd, dy]);
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
    check(pickRows(await y.read(), D, rows), fx.get('ln.y').data, 'ln y');
    scope(() => backward(y, fromArray(dy, [B, N, D])));
    y.dispose();
    check(pickRows(await x.grad!.read(), D, rows), fx.get('ln.dx').data, 'ln dx');
    check(await w.grad!.read(), fx.get('ln.dw').data, 'ln dγ');
    check(await b.grad!.read(), fx.get('ln.db').data, 'ln dβ');
  } finally {
    for (const t of [x, w, b]) t.dispose();
  }
});

test('MLP block fc2(quick_gelu(fc1(x))) + x at [8, 50, 768], hidden 3072, matches PyTorch', async () => {
  const fx = fixture('vitb32');
  const rows = fx.metadata.rows.split(',').map(Number);
  const w1Rows = fx.metadata['mlp.w1_rows'].split(',').map(Number);
  const w2Rows = fx.metadata['mlp.w2_rows'].split(',').map(Number);
  const specs: [number[], number][] = [
    [[B, N, D], 1],
    [[MLP, D], D ** -0.5],
    [[MLP], 0.1],
    [[D, MLP], MLP ** -0.5],
    [[D], 0.1],
    [[B, N, D], 1],
  ];
  const data = specs.map(([s, sc], i) => gen(2, i, s.reduce((p, q) => p * q, 1), sc));
  probeCheck('mlp', data);
  const ins = data.slice(0, 5).map((d, i) => {
    const t = fromArray(d, specs[i][0]).keep();
    t.requiresGrad = true;
    return t;
  });
  const [x, w1, b1, w2, b2] = ins;
  try {
    const y = scope(() => linear(linear(x, w1, b1, 'quick_gelu'), w2, b2, 'none', x).keep());
    check(pickRows(await y.read(), D, rows), fx.get('mlp.y').data, 'mlp y');
    scope(() => backward(y, fromArray(data[5], [B, N, D])));
    y.dispose();
    check(pickRows(await x.grad!.read(), D, rows), fx.get('mlp.dx').data, 'mlp dx');
    check(pickRows(await w1.grad!.read(), D, w1Rows), fx.get('mlp.dw1').data, 'mlp dW1');
    check(pickRows(await w2.grad!.read(), MLP, w2Rows), fx.get('mlp.dw2').data, 'mlp dW2');
    check(await b1.grad!.read(), fx.get('mlp.db1').data, 'mlp db1');
    check(await b2.grad!.read(), fx.get('mlp.db2').data, 'mlp db2');
  } finally {
    for (const t of ins) t.dispose();
  }
});

test.run();
