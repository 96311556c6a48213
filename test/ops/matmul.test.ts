import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { matmul, linear, gelu, quickGelu, toF16, toF32, type MatmulOptions, type Activation } from '../../src/ops/index.ts';
import { autotuneMatmul, fusedMatmul, matmulCaps } from '../../src/ops/matmul.ts';
import {
  chooseMatmulVariant,
  candidateVariants,
  pickSubgroupMatrixConfig,
  shapeClass,
  resetAutotuneMemo,
  SGMAT_BY_DEFAULT,
  sgmatVariant,
  tile8Valid,
  type MatmulVariant,
  autotuneCachePath,
  type MatmulCapabilities,
  type MatmulShape,
} from '../../src/ops/matmul-select.ts';
import { backward } from '../../src/tensor/autograd.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { adapterClassOf, type Device } from '../../src/gpu/device.ts';
import { fixture, expectTensor, gradCheck, device, randn, assertClose, checkScaled, pickRows, type HostTensor, type Tolerance } from '../helpers/fixtures.ts';
import { vitb32Fixture, vitb32Input, vitb32Probe, VITB32 } from '../helpers/vitb32.ts';

interface Case {
  name: string;
  opts: Omit<MatmulOptions, 'bias' | 'residual'>;
  bias?: boolean;
  residual?: boolean;
  /** Run through linear() instead of matmul(). */
  linear?: boolean;
}

const CASES: Case[] = [
  { name: 'nn', opts: {} },
  { name: 'nt', opts: { transB: true } },
  { name: 'tn', opts: { transA: true } },
  { name: 'tt', opts: { transA: true, transB: true } },
  { name: 'm1', opts: {} },
  { name: 'k3', opts: {} },
  { name: 'n1', opts: {} },
  { name: 'rows197', opts: { transB: true }, bias: true },
  { name: 'nn_bias_gelu', opts: { activation: 'gelu' }, bias: true },
  { name: 'nt_bias_qgelu_res', opts: { transB: true, activation: 'quick_gelu' }, bias: true, residual: true },
  { name: 'tn_gelu_res', opts: { transA: true, activation: 'gelu' }, residual: true },
  { name: 'nn_res', opts: {}, residual: true },
  { name: 'tt_bias_qgelu', opts: { transA: true, transB: true, activation: 'quick_gelu' }, bias: true },
  { name: 'gelu_wide', opts: { activation: 'gelu' }, bias: true },
  { name: 'linear_batched', opts: { activation: 'gelu' }, bias: true, linear: true },
  { name: 'shared_ta', opts: { transA: true } },
  { name: 'batched_nn', opts: {} },
  { name: 'batched_nt', opts: { transB: true } },
  { name: 'bcast_a', opts: {} },
  { name: 'tn_aligned', opts: { transA: true } },
  { name: 'tt_aligned', opts: { transA: true, transB: true, activation: 'gelu' }, bias: true },
  { name: 'nn_tiles', opts: {} },
  { name: 'tn_tiles_res', opts: { transA: true }, residual: true },
  { name: 'nt_tiles_bias_gelu', opts: { transB: true, activation: 'gelu' }, bias: true },
  { name: 'tt_tiles', opts: { transA: true, transB: true } },
];

function maxAbs(d: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < d.length; i++) m = Math.max(m, Math.abs(d[i]));
  return m;
}

/**
 * Tolerance for an f32 result that is a sum of L products of two factors bounded by s1, s2.
 * The kernels sum in a different order than PyTorch (tiles, k-order), so the error is a random
 * walk of L roundings of size ~eps·s1·s2: atol = 1e-6·sqrt(L)·s1·s2 (eps = 6e-8, sqrt(L) for the
 * walk, ~16x headroom), plus rtol 1e-5 for the epilogue (GELU's erf approximation is ~1.5e-7).
 */
function sumTol(L: number, s1: number, s2: number): Tolerance {
  return { rtol: 1e-5, atol: Math.max(1e-6, 1e-6 * Math.sqrt(L) * s1 * s2) };
}

function runCase(c: Case, ins: Tensor[], variant?: string): Tensor {
  const [a, b] = ins;
  let k = 2;
  const bias = c.bias ? ins[k++] : undefined;
  const residual = c.residual ? ins[k++] : undefined;
  if (c.linear) return linear(a, b, bias, c.opts.activation as Activation | undefined, residual);
  return matmul(a, b, { ...c.opts, bias, residual, variant });
}

test.before(async () => {
  await device();
});

for (const c of CASES) {
  test(`${c.name}: forward and backward match PyTorch`, async () => {
    const fx = fixture('matmul');
    const nIn = 2 + (c.bias ? 1 : 0) + (c.residual ? 1 : 0);
    const host = Array.from({ length: nIn }, (_, i) => fx.get(`${c.name}.in${i}`));
    const ins = host.map((_, i) => fx.tensor(`${c.name}.in${i}`, true).keep());
    const [ha, hb] = host;
    const transA = c.opts.transA ?? false;
    const K = transA ? ha.shape[ha.shape.length - 2] : ha.shape[ha.shape.length - 1];
    const sa = maxAbs(ha.data);
    const sb = maxAbs(hb.data);
    const gout = fx.get(`${c.name}.gout`);
    const sg = maxAbs(gout.data);
    const outShape = fx.get(`${c.name}.out`).shape;
    const M = outShape[outShape.length - 2];
    const N = outShape[outShape.length - 1];
    const rows = outShape.slice(0, -1).reduce((x, y) => x * y, 1);
    try {
      const out = scope(() => runCase(c, ins).keep());
      await expectTensor(out, fx.get(`${c.name}.out`), sumTol(K, sa, sb), `${c.name} forward`);
      scope(() => backward(out, fx.tensor(`${c.name}.gout`)));
      out.dispose();
      // dA sums N products of dZ and B; dB sums all rows' products of A and dZ; dBias sums rows.
      // |act'| <= 1.13 for both activations, so |dZ| <= 1.13·|gout|.
      const tols = [sumTol(N, 1.13 * sg, sb), sumTol(rows, 1.13 * sg, sa), sumTol(rows, 1.13 * sg, 1), sumTol(1, sg, 1)];
      for (let i = 0; i < nIn; i++) {
        assert.ok(ins[i].grad, `${c.name}: input ${i} has a gradient`);
        const tol = i < 2 ? tols[i] : c.bias && i === 2 ? tols[2] : tols[3];
        await expectTensor(ins[i].grad!, fx.get(`${c.name}.grad${i}`), tol, `${c.name} grad ${i}`);
      }
      void M;
    } finally {
      for (const t of ins) t.dispose();
    }
  });
}

/** Runs each forced variant on the named fixture cases (forward) against the PyTorch outputs. */
async function checkForced(variants: readonly string[], caseNames: readonly string[]): Promise<void> {
  const fx = fixture('matmul');
  const picked = CASES.filter((c) => caseNames.includes(c.name));
  assert.is(picked.length, caseNames.length, 'every named case exists');
  for (const variant of variants) {
    for (const c of picked) {
      const nIn = 2 + (c.bias ? 1 : 0) + (c.residual ? 1 : 0);
      const ins = Array.from({ length: nIn }, (_, i) => fx.tensor(`${c.name}.in${i}`).keep());
      try {
        const out = scope(() => runCase(c, ins, variant).keep());
        const ha = fx.get(`${c.name}.in0`);
        const K = c.opts.transA ? ha.shape[ha.shape.length - 2] : ha.shape[ha.shape.length - 1];
        await expectTensor(out, fx.get(`${c.name}.out`), sumTol(K, maxAbs(ha.data), maxAbs(fx.get(`${c.name}.in1`).data)), `${c.name} [${variant}]`);
        out.dispose();
      } finally {
        for (const t of ins) t.dispose();
      }
    }
  }
}

// Every kernel path (both f32 entry points, several tile configs) on the edge-heavy cases.
// Each (variant, layout, epilogue) is its own pipeline and llvmpipe compiles each one with LLVM, so
// the list stays short: one direct config besides the default, and three tiled configs (register
// blocks of 4 and of 8 rows per invocation).
test('forced variants agree with PyTorch on layouts, epilogues and edges', async () => {
  await checkForced(['direct_r4_w64', 'tiled_32x32x16_r4', 'tiled_64x64x32_r4', 'tiled_64x64x16_r8'], ['nn', 'tn', 'tt', 'k3', 'nt_bias_qgelu_res', 'batched_nt']);
});

// mm_tiled_v4 (four-element loads while staging) on every layout with all contiguous dimensions
// a multiple of 4, with row/column edges, an epilogue and a batch; 'nn' (K = 21, N = 13) is not
// aligned and must run the scalar-load kernel with the same tiles.
test('forced vec4-staging variants agree with PyTorch (aligned layouts, edges, fallback)', async () => {
  await checkForced(['tiled_64x64x16_r4_v4', 'tiled_64x64x16_r8_v4'], ['nn_bias_gelu', 'nt_bias_qgelu_res', 'tn_aligned', 'tt_aligned', 'batched_nt', 'nn']);
});

// mm_tile8 (kernels/matmul_tile8.wgsl: 8x8 register blocks, double-buffered slabs, unmasked
// interior tiles): past one 128x128 tile on every layout (full interior tiles with K = 32..64,
// a partial last slab with K = 72, several slabs), small aligned cases (only edge tiles), a batch,
// and 'nn' (unaligned: runs its fallback). 64x128 tiles check a non-square workgroup.
test('forced tile8 variants agree with PyTorch (full and edge tiles, every layout, fallback)', async () => {
  await checkForced(['tile8_128x128x16', 'tile8_64x128x16'], ['nn_tiles', 'tn_tiles_res', 'nt_tiles_bias_gelu', 'tt_tiles', 'tn_aligned', 'batched_nt', 'nn']);
});

/** float64 reference of sampled outputs of x[rows, K] · W[N, K]ᵀ + bias. */
function sampledLinearCheck(x: Float32Array, w: Float32Array, bias: Float32Array, got: Float32Array, rows: number, K: number, N: number, label: string): void {
  const idx: number[] = [];
  const exp: number[] = [];
  const act: number[] = [];
  for (let t = 0; t < 96; t++) {
    const r = (t * 7919) % rows;
    const n = (t * 104729 + 13) % N;
    let s = bias[n];
    for (let k = 0; k < K; k++) s += x[r * K + k] * w[n * K + k];
    idx.push(r * N + n);
    exp.push(s);
    act.push(got[r * N + n]);
  }
  assertClose(act, exp, sumTol(K, maxAbs(x), maxAbs(w)), label);
}

test('ViT-B/32-like shapes (2x50x768 -> 768 and -> 3072) against a sampled float64 reference', async () => {
  const rows = 100;
  for (const [K, N] of [
    [768, 768],
    [768, 3072],
    [3072, 768],
  ]) {
    const xd = randn(rows * K, 11, 0.5);
    const wd = randn(N * K, 12, 0.05);
    const bd = randn(N, 13, 0.1);
    const out = scope(() => linear(fromArray(xd, [2, 50, K]), fromArray(wd, [N, K]), fromArray(bd, [N])).keep());
    assert.equal(out.shape, [2, 50, N]);
    sampledLinearCheck(xd, wd, bd, await out.read(), rows, K, N, `linear ${K}->${N}`);
    out.dispose();
  }
});

test('finite differences: every layout with bias + gelu + residual, quick_gelu, batched', async () => {
  const acts: Activation[] = ['gelu', 'quick_gelu', 'none'];
  let seed = 20;
  for (const [ta, tb] of [
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ] as const) {
    const act = acts[seed % 3];
    const M = 3;
    const K = 5;
    const N = 4;
    await gradCheck(
      `matmul ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${act}`,
      ([a, b, bias, res]) => matmul(a, b, { transA: ta, transB: tb, bias, activation: act, residual: res }),
      [
        { shape: ta ? [K, M] : [M, K], data: randn(M * K, seed++) },
        { shape: tb ? [N, K] : [K, N], data: randn(K * N, seed++) },
        { shape: [N], data: randn(N, seed++) },
        { shape: [M, N], data: randn(M * N, seed++) },
      ],
      { probes: 6 },
    );
  }
  await gradCheck('linear batched gelu', ([x, w, b]) => linear(x, w, b, 'gelu'), [
    { shape: [2, 3, 4], data: randn(24, 40) },
    { shape: [5, 4], data: randn(20, 41) },
    { shape: [5], data: randn(5, 42) },
  ], { probes: 6 });
  await gradCheck('matmul batched TN shared weight', ([a, b]) => matmul(a, b, { transA: true }), [
    { shape: [2, 4, 3], data: randn(24, 43) },
    { shape: [4, 2], data: randn(8, 44) },
  ], { probes: 6 });
});

// The fused epilogue and the activation op run the same GELU / QuickGELU code (kernels/lib/gelu,
// lib/erf), so fusing changes nothing but the rounding of the activation itself (measured on
// lavapipe: bit-identical). Pre-activations span about [-23, 10], into both tails: an erf only
// accurate to 1.5e-7 absolute gives GELU there relative errors up to 100%.
test('linear(x, W, b, act) agrees with act(linear(x, W, b)) for gelu and quick_gelu', async () => {
  const rows = 256, K = 16, N = 64;
  const x = fromArray(randn(rows * K, 1), [rows, K]);
  const w = fromArray(randn(N * K, 2, 0.8), [N, K]);
  const b = fromArray(Float32Array.from({ length: N }, (_, i) => -10 + (20 * i) / (N - 1)), [N]);
  try {
    for (const [act, op] of [['gelu', gelu], ['quick_gelu', quickGelu]] as const) {
      const fused = scope(() => linear(x, w, b, act).keep());
      const composed = scope(() => op(linear(x, w, b)).keep());
      assertClose(await fused.read(), await composed.read(), { rtol: 5e-7, atol: 0 }, `linear(…, '${act}') vs ${act}(linear(…))`);
      fused.dispose();
      composed.dispose();
    }
  } finally {
    for (const t of [x, w, b]) t.dispose();
  }
});

test('shape errors name the op and the shapes', () => {
  const a = fromArray(randn(6, 1), [2, 3]);
  const b = fromArray(randn(8, 2), [4, 2]);
  assert.throws(() => matmul(a, b), /matmul: inner dimensions differ: op\(a\) is \[2, 3\] and op\(b\) is \[4, 2\].*a=\[2, 3\], b=\[4, 2\]/);
  assert.throws(() => matmul(a, fromArray(randn(12, 3), [3, 4]), { bias: fromArray(randn(3, 4), [3]) }), /matmul: bias must be \[4\].*bias=\[3\]/);
  assert.throws(() => matmul(a, fromArray(randn(12, 3), [3, 4]), { residual: fromArray(randn(4, 4), [4]) }), /matmul: residual must have the output shape \[2, 4\]/);
  assert.throws(() => matmul(fromArray(randn(12, 1), [2, 2, 3]), fromArray(randn(18, 1), [3, 3, 2])), /matmul: batch dimensions must be equal/);
  assert.throws(() => linear(a, fromArray(randn(8, 1), [2, 4])), /linear: x's last dim must equal in_features 4.*x=\[2, 3\], weight=\[2, 4\]/);
  assert.throws(() => matmul(a, fromArray(randn(12, 3), [3, 4]), { variant: 'nope' }), /matmul: unknown variant 'nope'/);
  a.dispose();
  b.dispose();
});

test('fusedMatmul checks its epilogue, low-rank addend and saveZ by name', () => {
  const a = fromArray(randn(6, 1), [2, 3]);
  const b = fromArray(randn(12, 2), [4, 3]);
  const t = (shape: number[]): Tensor => fromArray(randn(shape.reduce((x, y) => x * y, 1), 3), shape);
  const lowRank = { u: t([2, 2]), v: t([4, 2]), vT: false };
  try {
    assert.throws(() => fusedMatmul(a, b, { transB: true, saveZ: t([4, 2]) }), /fusedMatmul: saveZ must hold the output: \[2, 4\] f32/);
    assert.throws(() => fusedMatmul(a, b, { transB: true, lowRank: { ...lowRank, v: t([2, 4]) } }), /fusedMatmul: the low-rank v must be \[4, 2\]/);
    assert.throws(() => fusedMatmul(a, b, { transB: true, bias: t([2]) }), /fusedMatmul: bias must be \[4\]/);
    assert.throws(() => fusedMatmul(t([2, 2, 3]), t([2, 4, 3]), { transB: true, lowRank }), /fusedMatmul: a low-rank addend needs an unbatched product \(got batch 2\)/);
    assert.throws(() => fusedMatmul(a, b, { transB: true, activation: 'relu' as Activation }), /fusedMatmul: unknown activation 'relu'/);
  } finally {
    a.dispose();
    b.dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// f16

test('toF16 / toF32 round-trip and gradient', async () => {
  const d = new Float32Array([0, 1, -2.5, 65504, 1e-8, 3.14159, 70000]);
  const h = toF16(fromArray(d, [7]));
  assert.is(h.dtype, 'f16');
  const back = await toF32(h).read();
  const expected = [0, 1, -2.5, 65504, 0, 3.140625, Infinity];
  for (let i = 0; i < 7; i++) assert.is(back[i], expected[i], `element ${i}`);
  assert.equal([...(await h.read())], expected, 'f16 Tensor.read() converts on the host');
  await gradCheck('toF32(toF16(x)) * 1', ([x]) => toF32(toF16(x)), [{ shape: [5], data: new Float32Array([0.5, -1, 2, 0.25, 4]) }], { eps: 1e-1 });
});

// Counted as skipped in uvu's summary (not passed) on an adapter without shader-f16.
const testF16 = (await device()).hasFeature('shader-f16') ? test : test.skip;

// f16 inputs carry up to 2^-11 relative rounding and so does the f16 output, against a reference
// from the unrounded f32 inputs. Forward and every gradient get rtol 2e-3 plus atol 4e-3 ×
// max|reference| (about 8 f16 unit roundoffs of the largest value); the worst error measured on
// lavapipe is 1.14e-3 × max|reference| (the weight gradient of nt_bias_qgelu_res).
const F16_TOL_K = 4e-3;
function f16Tol(ref: ArrayLike<number>): Tolerance {
  return { rtol: 2e-3, atol: F16_TOL_K * maxAbs(ref) };
}

testF16('f16 variant (f16 storage, f32 accumulate) vs the f32 reference, forward and every gradient', async () => {
  const fx = fixture('matmul');
  for (const c of CASES.filter((x) => ['nn', 'nt_bias_qgelu_res', 'tn_gelu_res', 'batched_nt', 'k3'].includes(x.name))) {
    const nIn = 2 + (c.bias ? 1 : 0) + (c.residual ? 1 : 0);
    const ins = Array.from({ length: nIn }, (_, i) => fx.tensor(`${c.name}.in${i}`, true).keep());
    try {
      const halves = ins.map((t) => toF16(t).keep());
      // The vec4-staging f16 kernel (vec4<f16> loads) on the aligned cases; the default elsewhere.
      const variant = ['nt_bias_qgelu_res', 'batched_nt'].includes(c.name) ? 'tiled_64x64x16_r4_v4_f16' : undefined;
      const out = scope(() => runCase(c, halves, variant).keep());
      assert.is(out.dtype, 'f16');
      const want = fx.get(`${c.name}.out`);
      await expectTensor(out, want, f16Tol(want.data), `${c.name} f16${variant ? ` [${variant}]` : ''}`);
      // Backward through the f16 kernels and the casts reaches the f32 leaves: a, b, bias, residual.
      scope(() => backward(toF32(out), fx.tensor(`${c.name}.gout`)));
      out.dispose();
      for (const h of halves) h.dispose();
      for (let i = 0; i < nIn; i++) {
        const g = fx.get(`${c.name}.grad${i}`);
        await expectTensor(ins[i].grad!, g, f16Tol(g.data), `${c.name} f16 grad ${i}`);
      }
    } finally {
      for (const t of ins) t.dispose();
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Selection (fake capabilities: lavapipe has no subgroup matrices)

function fakeCaps(over: Partial<{ features: string[]; configs: unknown[]; name: string; wgBytes: number; sg: { min: number; max: number } }>): MatmulCapabilities {
  const features = new Set(over.features ?? []);
  const adapter = { name: over.name ?? 'NVIDIA H100', architecture: 'hopper', backend: 'vulkan', vendor: 'nvidia' };
  return {
    adapterClass: adapterClassOf(adapter),
    subgroupSize: over.sg ?? { min: 32, max: 32 },
    hasFeature: (n: string) => features.has(n),
    subgroupMatrixConfigs: over.configs ?? [],
    adapter,
    limits: { maxComputeWorkgroupStorageSize: over.wgBytes ?? 49152, maxComputeInvocationsPerWorkgroup: 1024 },
  };
}

const SG = ['chromium-experimental-subgroup-matrix', 'subgroups', 'shader-f16'];
const NV_CONFIGS = [
  { componentType: 'f16', resultComponentType: 'f16', M: 16, N: 16, K: 16 },
  { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 },
  { componentType: 'u8', resultComponentType: 'u32', M: 16, N: 16, K: 32 },
];
const APPLE_CONFIGS = [
  { componentType: 'f32', resultComponentType: 'f32', M: 8, N: 8, K: 8 },
  { componentType: 'f16', resultComponentType: 'f16', M: 8, N: 8, K: 8 },
];
const big = (dtype: 'f32' | 'f16', layout: MatmulShape['layout'] = 'NT'): MatmulShape => ({ batch: 1, M: 1600, N: 3072, K: 768, layout, dtype });

test('selection: subgroup matrix when the device lists a usable config', () => {
  // The sgmat kernel is the default for f16 where a usable config exists (SGMAT_BY_DEFAULT); the
  // choice without it is checked too.
  const choose = (caps: MatmulCapabilities, s: MatmulShape): MatmulVariant => chooseMatmulVariant(caps, s);
  const nv = fakeCaps({ features: SG, configs: NV_CONFIGS });
  assert.is(SGMAT_BY_DEFAULT, true);
  assert.is(choose(nv, big('f16')).name, 'sgmat_f16_f32_16x16x16_w2x4_k2', 'f16 with an f32 accumulator preferred, 128x128 tiles');
  assert.is(choose(nv, big('f16', 'TN')).entry, 'mm_sgmat');
  assert.is(chooseMatmulVariant(nv, big('f16'), undefined, false).entry, 'mm_tile8', 'without SGMAT_BY_DEFAULT: the tiled f16 kernel');
  assert.is(chooseMatmulVariant(nv, big('f16'), 'sgmat_f16_f32_16x16x16_w2x2_k2').entry, 'mm_sgmat', 'other layouts reachable by name');
  // f32 tensors never silently drop to f16 inputs: NVIDIA lists no f32 config.
  assert.is(choose(nv, big('f32')).entry, 'mm_tile8');
  const apple = fakeCaps({ features: SG, configs: APPLE_CONFIGS, name: 'Apple M2' });
  assert.is(choose(apple, big('f32')).name, 'sgmat_f32_f32_8x8x8_w2x4_k2');
  assert.is(choose(apple, big('f16')).name, 'sgmat_f16_f16_8x8x8_w2x4_k2');
  // Feature missing, or configs without the feature: no subgroup matrix.
  assert.is(choose(fakeCaps({ features: ['subgroups'], configs: NV_CONFIGS }), big('f16')).entry, 'mm_tile8');
  assert.is(pickSubgroupMatrixConfig(fakeCaps({ features: SG, configs: [{ bogus: 1 }] }), 'f16'), null);
  // Tiny problems do not fill the tiles: regular kernels.
  assert.is(choose(nv, { batch: 1, M: 1, N: 768, K: 768, layout: 'NT', dtype: 'f16' }).entry, 'mm_tiled');
  // Workgroup memory: 40 KiB for the default 16x16x16 layout; at 32 KiB the single-step slab
  // layout (24 KiB) is taken; with too little for any layout, no subgroup matrix.
  assert.is(choose(fakeCaps({ features: SG, configs: NV_CONFIGS, wgBytes: 32768 }), big('f16')).name, 'sgmat_f16_f32_16x16x16_w2x4_k1');
  assert.is(choose(fakeCaps({ features: SG, configs: APPLE_CONFIGS, wgBytes: 4096 }), big('f32')).entry, 'mm_tile8');
  const cands = candidateVariants(nv, 'f16').filter((v) => v.entry === 'mm_sgmat').map((v) => v.name);
  assert.equal(cands, ['sgmat_f16_f32_16x16x16_w2x4_k2', 'sgmat_f16_f32_16x16x16_w2x4_k1', 'sgmat_f16_f32_16x16x16_w2x2_k2', 'sgmat_f16_f32_16x16x16_w1x2_k2'], 'every layout is an autotune candidate');
  // The kernel's workgroup is a whole number of fixed-size subgroups: a varying size rules it out.
  assert.is(choose(fakeCaps({ features: SG, configs: NV_CONFIGS, sg: { min: 32, max: 64 } }), big('f16')).entry, 'mm_tile8');
  const v = choose(nv, big('f16'));
  assert.equal([v.tileM, v.tileN, v.overrides.SG_SIZE, v.overrides.WG_SM, v.overrides.WG_SN, v.overrides.KSTEPS], [128, 128, 32, 2, 4, 2]);
  assert.is(v.workgroupBytes, 2 * (128 * 32 + 32 * 128) * 2 + 8 * 256 * 4);
  assert.is(v.vec4Fallback?.name, 'tiled_64x64x16_r4_f16', 'unaligned shapes run the tiled kernel');
  assert.is(choose(apple, big('f32')).tileM, 64);
  // The vec4-load layouts need whole loads per invocation: 8x8x8 with 2 x 4 subgroups of 32 lanes
  // and one k-step per slab has half a load (64x8 of A over 256 invocations).
  assert.is(sgmatVariant(APPLE_CONFIGS[0], 32, { wgSm: 2, wgSn: 4, ksteps: 1 }), null);
  assert.ok(sgmatVariant(APPLE_CONFIGS[0], 32, { wgSm: 1, wgSn: 2, ksteps: 1 }), '32x32x8 over 64 invocations: one load each');
});

test('selection: GPU defaults are the tile8 kernel for big products, tiled for small ones, with aligned fallbacks', () => {
  const gpu = fakeCaps({ name: 'Some GPU' });
  const f32 = chooseMatmulVariant(gpu, big('f32'));
  assert.is(f32.name, 'tile8_128x128x16');
  assert.equal([f32.tileM, f32.tileN, f32.overrides.WG_X, f32.overrides.WG_Y], [128, 128, 16, 16]);
  assert.is(f32.workgroupBytes, 2 * 256 * 16 * 4, 'two f32 slabs of A and B');
  assert.is(f32.vec4Fallback?.name, 'tiled_64x64x16_r4');
  assert.is(chooseMatmulVariant(gpu, { batch: 1, M: 100, N: 768, K: 768, layout: 'NT', dtype: 'f32' }).name, 'tiled_64x64x16_r4');
  assert.is(chooseMatmulVariant(gpu, { batch: 1, M: 16, N: 768, K: 768, layout: 'NT', dtype: 'f32' }).name, 'tiled_32x32x16_r4');
  for (const v of candidateVariants(gpu, 'f32').filter((c) => c.entry === 'mm_tile8')) {
    assert.ok(tile8Valid(v.tileM, v.tileN, Number(v.overrides.TILE_K)), `${v.name} has whole vec4 loads`);
  }
  assert.not.ok(tile8Valid(128, 128, 4), 'a 128x128x4 tile has half a load per invocation');
  assert.not.ok(tile8Valid(64, 64, 32), '64x64x32 needs 8 loads per invocation, above the kernel limit of 4');
});

test('selection: CPU adapters get the subgroup-broadcast or direct kernel, forcing and shape classes work', async () => {
  const cpu = fakeCaps({ name: 'llvmpipe (LLVM 15.0.6, 256 bits)' });
  assert.is(chooseMatmulVariant(cpu, big('f32')).entry, 'mm_direct', 'no subgroups feature');
  const cpuSg = fakeCaps({ name: 'llvmpipe (LLVM 15.0.6, 256 bits)', features: ['subgroups', 'shader-f16'], sg: { min: 8, max: 8 } });
  assert.is(chooseMatmulVariant(cpuSg, big('f32')).entry, 'mm_sg');
  assert.is(chooseMatmulVariant(cpuSg, big('f16')).entry, 'mm_direct', 'the sg kernel is f32-only');
  assert.is(chooseMatmulVariant(fakeCaps({ name: 'llvmpipe', features: ['subgroups'], sg: { min: 4, max: 16 } }), big('f32')).entry, 'mm_direct', 'needs subgroups of exactly 8');
  assert.is(chooseMatmulVariant(cpu, big('f32'), 'tiled_32x32x16_r4').name, 'tiled_32x32x16_r4');
  assert.is(shapeClass({ batch: 2, M: 50, N: 768, K: 768, layout: 'NT', dtype: 'f32' }), 'f32:NT:m128:n1024:k1024');
  const dev = await device();
  if (/llvmpipe/i.test(dev.adapter.name)) assert.is(chooseMatmulVariant(matmulCaps(dev), big('f32')).entry, 'mm_sg', 'lavapipe: subgroups of 8');
});

test('autotune: times candidates, caches the winner per adapter, and the cache is used when enabled', async () => {
  const dev = (await device()) as Device;
  const dir = mkdtempSync(join(tmpdir(), 'genalign-tune-'));
  const prevDir = process.env.GENALIGN_CACHE_DIR;
  const prevTune = process.env.GENALIGN_AUTOTUNE;
  process.env.GENALIGN_CACHE_DIR = dir;
  resetAutotuneMemo();
  try {
    const shape: MatmulShape = { batch: 1, M: 40, N: 64, K: 32, layout: 'NN', dtype: 'f32' };
    const res = await autotuneMatmul(dev, shape, 1);
    assert.ok(Object.keys(res.gflops).length >= 2, 'several candidates were timed');
    const file = JSON.parse(readFileSync(autotuneCachePath(), 'utf8')) as Record<string, Record<string, { variant: string }>>;
    const key = `${dev.adapter.name}|${dev.adapter.backend}`;
    assert.is(file[key][shapeClass(shape)].variant, res.winner);
    delete process.env.GENALIGN_AUTOTUNE;
    const caps = matmulCaps(dev);
    const untuned = chooseMatmulVariant(caps, shape).name;
    process.env.GENALIGN_AUTOTUNE = '1';
    assert.is(chooseMatmulVariant(caps, shape).name, res.winner, 'the cached winner is chosen with GENALIGN_AUTOTUNE=1');
    // The winner may be the default, which proves nothing about the cache being read: write an
    // entry naming another candidate into the file and read it back through a fresh memo.
    const other = candidateVariants(caps, 'f32').find((v) => v.name !== untuned)!.name;
    file[key][shapeClass(shape)] = { variant: other };
    writeFileSync(autotuneCachePath(), JSON.stringify(file));
    resetAutotuneMemo();
    assert.is(chooseMatmulVariant(caps, shape).name, other, 'a cached non-default variant is chosen with GENALIGN_AUTOTUNE=1');
    delete process.env.GENALIGN_AUTOTUNE;
    assert.is(chooseMatmulVariant(caps, shape).name, untuned, 'without GENALIGN_AUTOTUNE the cache is ignored');
  } finally {
    if (prevDir === undefined) delete process.env.GENALIGN_CACHE_DIR;
    else process.env.GENALIGN_CACHE_DIR = prevDir;
    if (prevTune === undefined) delete process.env.GENALIGN_AUTOTUNE;
    else process.env.GENALIGN_AUTOTUNE = prevTune;
    resetAutotuneMemo();
    rmSync(dir, { recursive: true, force: true });
  }
});

void ({} as HostTensor);

// The MLP block at the ViT-B/32 training shape against PyTorch (test/helpers/vitb32.ts; measured
// on lavapipe: worst 0.58× the tolerance, dx and db1).
test('MLP block fc2(quick_gelu(fc1(x))) + x at [8, 50, 768], hidden 3072, matches PyTorch', async () => {
  const { B, N, D, MLP } = VITB32;
  const fx = vitb32Fixture();
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
  const data = specs.map(([s, sc], i) => vitb32Input(2, i, s.reduce((p, q) => p * q, 1), sc));
  vitb32Probe('mlp', data);
  const ins = data.slice(0, 5).map((d, i) => {
    const t = fromArray(d, specs[i][0]).keep();
    t.requiresGrad = true;
    return t;
  });
  const [x, w1, b1, w2, b2] = ins;
  try {
    const y = scope(() => linear(linear(x, w1, b1, 'quick_gelu'), w2, b2, 'none', x).keep());
    checkScaled(pickRows(await y.read(), D, rows), fx.get('mlp.y').data, 'mlp y');
    scope(() => backward(y, fromArray(data[5], [B, N, D])));
    y.dispose();
    checkScaled(pickRows(await x.grad!.read(), D, rows), fx.get('mlp.dx').data, 'mlp dx');
    checkScaled(pickRows(await w1.grad!.read(), D, w1Rows), fx.get('mlp.dw1').data, 'mlp dW1');
    checkScaled(pickRows(await w2.grad!.read(), MLP, w2Rows), fx.get('mlp.dw2').data, 'mlp dW2');
    checkScaled(await b1.grad!.read(), fx.get('mlp.db1').data, 'mlp db1');
    checkScaled(await b2.grad!.read(), fx.get('mlp.db2').data, 'mlp db2');
  } finally {
    for (const t of ins) t.dispose();
  }
});

test.run();
