import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { principalComponents, pca2d, conditionalAffinities, jointAffinities, squaredDistances, tsne, tsneGradient, klDivergence, seededSubsample } from '../../src/train/tsne.ts';
import { writeFigure3, REAL_COLOR, GEN_COLOR, FIGURE_WIDTH, FIGURE_HEIGHT, PNG_SCALE } from '../../src/train/plot.ts';
import { fixture, assertClose, randn } from '../helpers/fixtures.ts';

/** Rows of a [k, dim] matrix compared with a reference up to one sign per row. */
function closeUpToSign(actual: Float64Array, expected: Float32Array, k: number, dim: number, tol: { rtol: number; atol: number }, label: string): number[] {
  const signs: number[] = [];
  for (let c = 0; c < k; c++) {
    const a = actual.subarray(c * dim, (c + 1) * dim);
    const e = expected.subarray(c * dim, (c + 1) * dim);
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += a[d] * e[d];
    const s = dot < 0 ? -1 : 1;
    assertClose(Array.from(a, (v) => s * v), e, tol, `${label} row ${c}`);
    signs.push(s);
  }
  return signs;
}

for (const [name, n, dim, k] of [
  ['tall', 60, 24, 3],
  ['wide', 30, 80, 2],
] as const) {
  test(`PCA ${name} [${n}, ${dim}]: top-${k} directions, scores and variances match numpy's SVD (up to sign)`, () => {
    const fx = fixture('metrics');
    const x = fx.get(`pca.${name}.x`).data;
    const p = principalComponents(x, n, dim, k);
    // Reference stored as f32: 1e-6 relative rounding on unit vectors and scores of size ~10.
    const signs = closeUpToSign(p.components, fx.get(`pca.${name}.components`).data, k, dim, { rtol: 1e-5, atol: 2e-6 }, `${name} components`);
    const ref = fx.get(`pca.${name}.scores`).data;
    const scores = Array.from(p.scores, (v, i) => signs[i % k] * v);
    assertClose(scores, ref, { rtol: 1e-5, atol: 1e-5 }, `${name} scores`);
    assertClose(p.variances, fx.get(`pca.${name}.variances`).data, { rtol: 1e-5, atol: 1e-6 }, `${name} variances`);
    // pca2d is the first two score columns, with the same (deterministic) signs; a different
    // block width changes only the last bits.
    const two = pca2d(x, n, dim);
    const first2 = Array.from({ length: 2 * n }, (_, t) => p.scores[Math.floor(t / 2) * k + (t % 2)]);
    assertClose(two, first2, { rtol: 1e-9, atol: 1e-9 }, `${name} pca2d`);
    // Sign convention: the largest-magnitude loading of each direction is positive.
    for (let c = 0; c < k; c++) {
      const row = Array.from(p.components.subarray(c * dim, (c + 1) * dim));
      const big = row.reduce((b, v, i) => (Math.abs(v) > Math.abs(row[b]) ? i : b), 0);
      assert.ok(row[big] > 0, `component ${c} sign`);
    }
  });
}

test('t-SNE affinities: bisection reaches the target perplexity and matches the numpy reference', () => {
  const fx = fixture('metrics');
  const x = fx.get('aff.x').data;
  const n = 50;
  const perplexity = Number(fx.metadata.aff_perplexity);
  const d2 = squaredDistances(x, n, 10);
  const tight = conditionalAffinities(d2, n, perplexity, 1e-12);
  // f32-stored reference probabilities (≤ 1): absolute 1e-7 rounding.
  assertClose(tight.p, fx.get('aff.p_cond').data, { rtol: 1e-5, atol: 1e-7 }, 'P_{j|i}');
  // Default tolerance: entropy within 1e-5 nats of log(perplexity), rows sum to 1, zero diagonal.
  const { p } = conditionalAffinities(d2, n, perplexity);
  for (let i = 0; i < n; i++) {
    let h = 0;
    let s = 0;
    for (let j = 0; j < n; j++) {
      const v = p[i * n + j];
      s += v;
      if (v > 0) h -= v * Math.log(v);
    }
    assert.is(p[i * n + i], 0);
    assert.ok(Math.abs(s - 1) < 1e-12, `row ${i} sums to ${s}`);
    assert.ok(Math.abs(h - Math.log(perplexity)) < 1e-5, `row ${i}: H=${h}, want ${Math.log(perplexity)}`);
  }
  const joint = jointAffinities(d2, n, perplexity);
  let total = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    total += joint[i * n + j];
    assert.is(joint[i * n + j], joint[j * n + i]);
  }
  assert.ok(Math.abs(total - 1) < 1e-12, `joint P sums to ${total}`);
});

test('t-SNE gradient matches finite differences of KL(P‖Q), and exaggeration scales only attraction', () => {
  const n = 15;
  const x = randn(n * 4, 31);
  const p = jointAffinities(squaredDistances(x, n, 4), n, 4);
  const y = Float64Array.from(randn(2 * n, 32));
  const grad = new Float64Array(2 * n);
  const z = tsneGradient(y, p, n, 1, grad);
  let zRef = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) zRef += 1 / (1 + (y[2 * i] - y[2 * j]) ** 2 + (y[2 * i + 1] - y[2 * j + 1]) ** 2);
  assert.ok(Math.abs(z - zRef) < 1e-12 * zRef, `Z ${z} vs ${zRef}`);
  const eps = 1e-6;
  for (let c = 0; c < 2 * n; c++) {
    const yp = y.slice();
    const ym = y.slice();
    yp[c] += eps;
    ym[c] -= eps;
    const numeric = (klDivergence(yp, p, n) - klDivergence(ym, p, n)) / (2 * eps);
    assert.ok(Math.abs(numeric - grad[c]) < 1e-6 + 1e-5 * Math.abs(numeric), `dKL/dy[${c}]: analytic ${grad[c]} vs numeric ${numeric}`);
  }
  // α P in place of P: the gradient gains 4(α − 1) Σ_j p_ij w_ij (y_i − y_j).
  const g12 = new Float64Array(2 * n);
  tsneGradient(y, p, n, 12, g12);
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < 2; a++) {
      let attract = 0;
      for (let j = 0; j < n; j++) {
        const w = 1 / (1 + (y[2 * i] - y[2 * j]) ** 2 + (y[2 * i + 1] - y[2 * j + 1]) ** 2);
        attract += p[i * n + j] * w * (y[2 * i + a] - y[2 * j + a]);
      }
      const want = grad[2 * i + a] + 4 * 11 * attract;
      assert.ok(Math.abs(g12[2 * i + a] - want) < 1e-12 * (1 + Math.abs(want)), `exaggerated gradient [${i}, ${a}]`);
    }
  }
});

/** Two Gaussian clusters in `dim` dims whose centres are `sep` apart; label = i % 2. */
function twoClusters(n: number, dim: number, sep: number, seed: number): Float32Array {
  const x = randn(n * dim, seed);
  for (let i = 1; i < n; i += 2) for (let d = 0; d < dim; d++) x[i * dim + d] += sep / Math.sqrt(dim);
  return x;
}

/** Fraction of each point's k nearest map neighbours that share its label (label = index parity). */
function knnPurity(y: Float64Array, n: number, k: number): number {
  let same = 0;
  for (let i = 0; i < n; i++) {
    const dist = Array.from({ length: n }, (_, j) => [(y[2 * i] - y[2 * j]) ** 2 + (y[2 * i + 1] - y[2 * j + 1]) ** 2, j]);
    dist.sort((a, b) => a[0] - b[0]);
    for (let t = 1; t <= k; t++) if (dist[t][1] % 2 === i % 2) same++;
  }
  return same / (n * k);
}

test('t-SNE keeps two well-separated clusters apart and is deterministic', () => {
  // dim 64 > 50 exercises the PCA pre-reduction too.
  const n = 120;
  const dim = 64;
  const x = twoClusters(n, dim, 10, 5);
  const a = tsne(x, n, dim, { seed: 3 });
  const purity = knnPurity(a.y, n, 5);
  assert.ok(purity >= 0.95, `5-NN purity ${purity}`);
  assert.is(a.perplexity, 30);
  assert.ok(Number.isFinite(a.kl) && a.kl > 0 && a.kl < 2, `KL ${a.kl}`);
  // Cluster centroids far apart relative to the clusters' spread.
  const c = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    c[2 * (i % 2)] += a.y[2 * i] / (n / 2);
    c[2 * (i % 2) + 1] += a.y[2 * i + 1] / (n / 2);
  }
  let spread = 0;
  for (let i = 0; i < n; i++) spread += Math.hypot(a.y[2 * i] - c[2 * (i % 2)], a.y[2 * i + 1] - c[2 * (i % 2) + 1]) / n;
  assert.ok(Math.hypot(c[0] - c[2], c[1] - c[3]) > 2 * spread, 'centroid distance exceeds twice the mean radius');
  const b = tsne(x, n, dim, { seed: 3 });
  assert.equal(Array.from(b.y), Array.from(a.y), 'same input and seed give the same map');
  // A mixed cloud (the "after" picture) is not separated: purity near chance.
  const mixed = randn(n * 8, 9);
  assert.ok(knnPurity(tsne(mixed, n, 8, { iterations: 300 }).y, n, 5) < 0.75, 'unstructured data shows no two clusters');
});

test('t-SNE: the reported KL is KL(P‖Q) of the returned map (float64, written out here), and optimising lowers it', () => {
  const n = 60;
  const dim = 8;
  const x = twoClusters(n, dim, 4, 11);
  const p = jointAffinities(squaredDistances(x, n, dim), n, Math.min(30, (n - 1) / 3));
  const klOf = (y: Float64Array): number => {
    let z = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) z += 1 / (1 + (y[2 * i] - y[2 * j]) ** 2 + (y[2 * i + 1] - y[2 * j + 1]) ** 2);
    let kl = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const pij = p[i * n + j];
        if (i === j || pij <= 0) continue;
        const q = 1 / (1 + (y[2 * i] - y[2 * j]) ** 2 + (y[2 * i + 1] - y[2 * j + 1]) ** 2) / z;
        kl += pij * Math.log(pij / q);
      }
    }
    return kl;
  };
  // Early exaggeration (the first 250 steps) optimises a distorted objective, so KL may rise
  // there; after it, the plain gradient steps lower KL below the start and below step 300.
  const runs = [0, 300, 500, 750].map((iterations) => tsne(x, n, dim, { iterations, seed: 1 }));
  for (const r of runs) assert.ok(Math.abs(r.kl - klOf(r.y)) <= 1e-9 * Math.abs(klOf(r.y)), `reported KL ${r.kl} vs ${klOf(r.y)}`);
  const [k0, k300, k500, k750] = runs.map((r) => r.kl);
  assert.ok(k500 < k300 && k750 <= k500 && k750 < k0, `KL: ${runs.map((r) => r.kl.toFixed(4)).join(' → ')}`);
});

test('t-SNE clamps the perplexity for small n and rejects bad input', () => {
  const r = tsne(twoClusters(10, 3, 8, 1), 10, 3, { iterations: 100 });
  assert.is(r.perplexity, 3);
  assert.throws(() => tsne(new Float32Array(4), 2, 2), /at least 3 points/);
  assert.throws(() => tsne(new Float32Array(5), 2, 3), /holds 5 values, expected n×dim = 2×3 = 6/);
  const bad = randn(12, 1);
  bad[7] = Infinity;
  assert.throws(() => tsne(bad, 4, 3), /row 2 has a NaN or infinite value/);
});

test('seededSubsample: k distinct sorted indices, reproducible per seed', () => {
  const a = seededSubsample(5000, 1000, 7);
  assert.is(a.length, 1000);
  assert.is(new Set(a).size, 1000);
  for (let i = 1; i < a.length; i++) assert.ok(a[i] > a[i - 1]);
  assert.equal(Array.from(seededSubsample(5000, 1000, 7)), Array.from(a));
  assert.not.equal(Array.from(seededSubsample(5000, 1000, 8)), Array.from(a));
  assert.equal(Array.from(seededSubsample(4, 10, 1)), [0, 1, 2, 3]);
});

/** Minimal XML well-formedness: tags nest and close, attribute values are quoted, no stray '<'. */
function checkWellFormed(svg: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(svg); m; m = tag.exec(svg)) {
    const between = svg.slice(last, m.index);
    assert.not.ok(between.includes('<') || between.includes('>'), `stray markup before offset ${m.index}: ${between.slice(0, 60)}`);
    last = m.index + m[0].length;
    if (m[4]) continue;
    if (m[1]) assert.is(stack.pop(), m[2], `closing </${m[2]}> at ${m.index}`);
    else stack.push(m[2]);
  }
  assert.not.ok(svg.slice(last).trim().length > 0, 'trailing content after the root');
  assert.equal(stack, [], 'all elements closed');
}

function count(s: string, needle: string): number {
  return s.split(needle).length - 1;
}

test('writeFigure3 writes a two-panel SVG with legend and a PNG of the stated size', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'genalign-fig3-'));
  try {
    const n = 30;
    const dim = 12;
    const real = randn(n * dim, 1);
    const genBefore = randn(n * dim, 2).map((v) => v + 3);
    const genAfter = real.map((v, i) => v + 0.2 * genBefore[i]);
    const r = await writeFigure3(dir, {
      before: { real, gen: genBefore },
      after: { real, gen: genAfter },
      n,
      dim,
      method: 'tsne',
      seed: 4,
      maxPairs: 20,
      subtitles: ['paired cosine 0.52', 'paired cosine 0.89 & <rising>'],
    });
    assert.is(r.svgPath, join(dir, 'figure3.svg'));
    assert.ok(existsSync(r.pngPath));
    assert.is(r.pairsPlotted, 20);
    assert.is(r.coords.before.length, 2 * 20 * 2);
    const svg = readFileSync(r.svgPath, 'utf8');
    checkWellFormed(svg);
    assert.is(count(svg, '<g class="panel"'), 2);
    assert.ok(svg.includes('id="legend"'));
    assert.ok(svg.includes('>Before alignment (teacher on both)<'));
    assert.ok(svg.includes('>After alignment (student on generated)<'));
    assert.ok(svg.includes('>paired cosine 0.52<'));
    assert.ok(svg.includes('>paired cosine 0.89 &amp; &lt;rising&gt;<'), 'subtitles are escaped');
    assert.ok(svg.includes('>t-SNE 1<') && svg.includes('>t-SNE 2<'));
    assert.ok(svg.includes('subsample of 20 of 30 pairs (seed 4)'), 'the subsample is stated');
    // 20 points of each colour per panel, plus one legend swatch each.
    assert.is(count(svg, `r="2.2" fill="${REAL_COLOR}"`), 40);
    assert.is(count(svg, `r="2.2" fill="${GEN_COLOR}"`), 40);
    assert.is(count(svg, `fill="${REAL_COLOR}"`), 41);
    // What is drawn is the returned map: in each panel the real-coloured circles sit at the real
    // rows of coords and the generated-coloured ones at the generated rows, through one
    // increasing map in x and one decreasing map in y (SVG y points down).
    const m = r.pairsPlotted;
    for (const [panel, coords] of [['panel-before', r.coords.before], ['panel-after', r.coords.after]] as const) {
      const body = svg.slice(svg.indexOf(`id="${panel}"`), svg.indexOf('</g>\n</g>', svg.indexOf(`id="${panel}"`)));
      for (const [color, first] of [[REAL_COLOR, 0], [GEN_COLOR, m]] as const) {
        const drawn = [...body.matchAll(new RegExp(`<circle cx="([-\\d.]+)" cy="([-\\d.]+)" r="2.2" fill="${color}"/>`, 'g'))].map((c) => [Number(c[1]), Number(c[2])]);
        assert.is(drawn.length, m, `${panel}: ${m} points of ${color}`);
        let checked = 0;
        for (let j = 0; j < m; j++) {
          for (let k = 0; k < m; k++) {
            const [dx, dy] = [coords[2 * (first + j)] - coords[2 * (first + k)], coords[2 * (first + j) + 1] - coords[2 * (first + k) + 1]];
            const [sx, sy] = [drawn[j][0] - drawn[k][0], drawn[j][1] - drawn[k][1]];
            // Only pairs more than a rounding step (0.1 px) apart on screen are compared.
            if (Math.abs(sx) > 0.2) assert.ok(Math.sign(sx) === Math.sign(dx), `${panel} ${color}: x order of points ${j}, ${k}`);
            if (Math.abs(sy) > 0.2) assert.ok(Math.sign(sy) === -Math.sign(dy), `${panel} ${color}: y order of points ${j}, ${k}`);
            if (Math.abs(sx) > 0.2) checked++;
          }
        }
        assert.ok(checked > m * (m - 1) * 0.8, `${panel} ${color}: most pairs compared (${checked})`);
      }
    }
    const meta = await sharp(readFileSync(r.pngPath)).metadata();
    assert.is(meta.format, 'png');
    assert.is(meta.width, FIGURE_WIDTH * PNG_SCALE);
    assert.is(meta.height, FIGURE_HEIGHT * PNG_SCALE);
    assert.is(r.width, meta.width);
    // The PNG is not blank: both point colours appear in the rendered pixels.
    const { data, info } = await sharp(readFileSync(r.pngPath)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    let blueish = 0;
    let reddish = 0;
    for (let p = 0; p < info.width * info.height; p++) {
      const [R, G, B] = [data[3 * p], data[3 * p + 1], data[3 * p + 2]];
      if (B > 150 && R < 140 && G < 180) blueish++;
      if (R > 180 && G < 120 && B < 120) reddish++;
    }
    assert.ok(blueish > 200 && reddish > 200, `coloured pixels: blue ${blueish}, red ${reddish}`);

    const p = await writeFigure3(dir, { before: { real, gen: genBefore }, after: { real, gen: genAfter }, n, dim, method: 'pca', seed: 0 });
    const svg2 = readFileSync(p.svgPath, 'utf8');
    checkWellFormed(svg2);
    assert.ok(svg2.includes('>PC 1<') && svg2.includes('>PC 2<'));
    assert.ok(svg2.includes('PCA of 30 pairs'));
    assert.is(count(svg2, `r="2.2" fill="${GEN_COLOR}"`), 60);
    // Before: gen shifted by +3 in every dim, so PC 1 separates the streams; the map says so.
    const xs = p.coords.before;
    const side = (i: number): boolean => xs[2 * i] > 0;
    const realSide = side(0);
    for (let i = 0; i < n; i++) {
      assert.is(side(i), realSide, `real ${i} on one side of PC 1`);
      assert.is(side(n + i), !realSide, `generated ${i} on the other side`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writeFigure3 rejects embeddings of the wrong size', async () => {
  const x = randn(20, 1);
  await writeFigure3('/nonexistent-never-written', { before: { real: x, gen: x }, after: { real: x, gen: randn(19, 2) }, n: 5, dim: 4, method: 'pca', seed: 0 }).then(
    () => assert.unreachable('should throw'),
    (e: Error) => assert.match(e.message, /after\.gen holds 19 values, expected n×dim = 5×4 = 20/),
  );
});

test.run();
