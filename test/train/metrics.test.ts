import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { alignmentMetrics, evalReport, retrievalRanks } from '../../src/train/metrics.ts';
import { fixture, assertClose, randn } from '../helpers/fixtures.ts';

// Fixture scalars are float64 results stored as f32 (relative rounding 6e-8); our side is float64.
const SCALAR_TOL = { rtol: 1e-6, atol: 1e-7 };
const CASES = [
  ['basic', 40, 16],
  ['hard', 41, 19],
  ['offset', 37, 9],
  ['tie', 12, 8],
] as const;

for (const [name, n, dim] of CASES) {
  test(`${name} (n=${n}, dim=${dim}): metrics and ranks match the torch reference`, () => {
    const fx = fixture('metrics');
    const real = fx.get(`metrics.${name}.real`).data;
    const gen = fx.get(`metrics.${name}.gen`).data;
    const m = alignmentMetrics(gen, real, n, dim);
    assert.is(m.n, n);
    assertClose([m.paired_cosine], fx.get(`metrics.${name}.paired_cosine`).data, SCALAR_TOL, `${name} paired_cosine`);
    assertClose([m.gap], fx.get(`metrics.${name}.gap`).data, SCALAR_TOL, `${name} gap`);
    assertClose([m.r1], fx.get(`metrics.${name}.r1`).data, SCALAR_TOL, `${name} r1`);
    assertClose([m.r5], fx.get(`metrics.${name}.r5`).data, SCALAR_TOL, `${name} r5`);
    const expected = Array.from(fx.get(`metrics.${name}.ranks`).data, Math.round);
    assert.equal(Array.from(retrievalRanks(gen, real, n, dim)), expected, `${name} ranks (SIMD path)`);
    assert.equal(Array.from(retrievalRanks(gen, real, n, dim, { simd: false })), expected, `${name} ranks (scalar path)`);
  });
}

test('tie rule: reals that tie the paired real do not lower its rank', () => {
  // Every gen row points along e2, every real along e1: all similarities are 0, all tied.
  const n = 6;
  const real = new Float32Array(n * 2);
  const gen = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    real[i * 2] = 1 + i; // different lengths, same direction
    gen[i * 2 + 1] = 0.5;
  }
  const m = alignmentMetrics(gen, real, n, 2);
  assert.equal(Array.from(retrievalRanks(gen, real, n, 2)), [1, 1, 1, 1, 1, 1]);
  assert.is(m.paired_cosine, 0);
  assert.is(m.r1, 1);
  assert.ok(Math.abs(m.gap - Math.SQRT2) < 1e-15, `gap ${m.gap} should be √2 (centroids e1 and e2)`);
});

test('hand-checked cases: identical streams, and a cyclic shift', () => {
  const n = 9;
  const dim = 5;
  const x = randn(n * dim, 3);
  const same = alignmentMetrics(x, x, n, dim);
  assert.ok(Math.abs(same.paired_cosine - 1) < 1e-15, `cosine ${same.paired_cosine}`);
  assert.is(same.r1, 1);
  assert.is(same.r5, 1);
  assert.ok(same.gap < 1e-15, `gap ${same.gap}`);

  // real_i = e_i, gen_i = e_{i+1}: every paired cosine is 0, and gen_i matches real_{i+1}
  // exactly (1 > 0), so every rank is 2; both centroids are (1/3, 1/3, 1/3), so the gap is 0.
  const real = new Float32Array([1, 0, 0, 0, 1, 0, 0, 0, 1]);
  const gen = new Float32Array([0, 1, 0, 0, 0, 1, 1, 0, 0]);
  const shifted = alignmentMetrics(gen, real, 3, 3);
  assert.is(shifted.paired_cosine, 0);
  assert.is(shifted.r1, 0);
  assert.is(shifted.r5, 1);
  assert.ok(shifted.gap < 1e-15);
  assert.equal(Array.from(retrievalRanks(gen, real, 3, 3)), [2, 2, 2]);

  // Scale invariance: embeddings need not be normalised.
  const scaled = x.map((v) => 7 * v);
  assert.ok(Math.abs(alignmentMetrics(scaled, x, n, dim).paired_cosine - 1) < 1e-12);
});

test('SIMD and scalar paths agree bit for bit, including duplicate reals and odd sizes', () => {
  for (const [n, dim] of [
    [1, 1],
    [3, 1],
    [5, 3],
    [130, 33],
    [197, 50],
  ] as const) {
    const real = randn(n * dim, n + dim);
    const noise = randn(n * dim, 2 * n + dim);
    const gen = real.map((v, i) => v + 1.3 * noise[i]);
    if (n > 4) {
      real.set(real.subarray(0, dim), 3 * dim); // real 3 duplicates real 0
      gen.set(real.subarray(0, dim), 0); // gen 0 == real 0 == real 3: a tie at the top
    }
    const a = retrievalRanks(gen, real, n, dim);
    const b = retrievalRanks(gen, real, n, dim, { simd: false });
    assert.equal(Array.from(a), Array.from(b), `n=${n}, dim=${dim}`);
    if (n > 4) assert.is(a[0], 1, 'gen 0 ties reals 0 and 3 and must rank 1');
    // Brute-force reference with plain dot products of normalised rows (tolerant to order).
    const norm = (x: Float32Array, i: number): number[] => {
      const row = Array.from(x.subarray(i * dim, (i + 1) * dim));
      const l = Math.hypot(...row);
      return row.map((v) => v / l);
    };
    for (let i = 0; i < n; i++) {
      const g = norm(gen, i);
      const s = (j: number): number => norm(real, j).reduce((acc, v, k) => acc + v * g[k], 0);
      const sii = s(i);
      let rank = 1;
      for (let j = 0; j < n; j++) if (s(j) > sii + 1e-12) rank++;
      assert.is(a[i], rank, `rank of gen ${i} (n=${n}, dim=${dim})`);
    }
  }
});

test('evalReport lays out before/after and refuses mismatched sets', () => {
  const before = { paired_cosine: 0.52, r1: 0.1, r5: 0.3, gap: 0.8, n: 1000 };
  const after = { paired_cosine: 0.89, r1: 0.6, r5: 0.9, gap: 0.1, n: 1000 };
  assert.equal(evalReport(before, after), {
    paired_cosine_before: 0.52,
    paired_cosine_after: 0.89,
    r1_before: 0.1,
    r1_after: 0.6,
    r5_before: 0.3,
    r5_after: 0.9,
    gap_before: 0.8,
    gap_after: 0.1,
    n_val: 1000,
  });
  assert.throws(() => evalReport(before, { ...after, n: 999 }), /different sets \(n=1000 vs n=999\)/);
});

test('bad inputs get messages that name the matrix, row and shape', () => {
  const ok = randn(12, 1);
  assert.throws(() => alignmentMetrics(ok, randn(10, 2), 3, 4), /real embeddings hold 10 values, expected n×dim = 3×4 = 12/);
  const zero = ok.slice();
  zero.fill(0, 4, 8);
  assert.throws(() => alignmentMetrics(zero, ok, 3, 4), /gen embedding row 1 is all zeros/);
  const nan = ok.slice();
  nan[9] = NaN;
  assert.throws(() => alignmentMetrics(ok, nan, 3, 4), /real embedding row 2 has a NaN/);
  assert.throws(() => alignmentMetrics(ok, ok, 0, 4), /need n ≥ 1/);
});

test('n=1500, dim=512 runs in seconds with the expected retrieval', () => {
  const n = 1500;
  const dim = 512;
  const real = randn(n * dim, 21);
  const noise = randn(n * dim, 22);
  const gen = real.map((v, i) => v + 4 * noise[i]);
  const t0 = performance.now();
  const m = alignmentMetrics(gen, real, n, dim);
  const ms = performance.now() - t0;
  // cos ≈ 1/√(1+16) ≈ 0.243 for the pair vs N(0, 1/512) (σ ≈ 0.044) for the 1499 others, whose
  // maximum sits near 3.3σ ≈ 0.15: nearly every pair ranks first.
  assert.ok(Math.abs(m.paired_cosine - 1 / Math.sqrt(17)) < 0.01, `paired cosine ${m.paired_cosine}`);
  assert.ok(m.r1 > 0.9 && m.r5 > 0.98, `R@1 ${m.r1}, R@5 ${m.r5}`);
  assert.ok(ms < 20000, `took ${ms.toFixed(0)} ms`);
});

test.run();
