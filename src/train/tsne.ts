// 2-D maps of embedding matrices for the `eval` figure (GMAIL Figure 3), on the host in float64.
//
// - principalComponents / pca2d: PCA by subspace iteration with Rayleigh–Ritz. Only X·v and
//   Xᵀ·u products are needed, so a [2000, 1024] matrix never turns into a 1024² covariance.
//   Signs are fixed (largest-magnitude loading of each component positive), the start block is
//   seeded, so results are deterministic.
// - tsne: exact t-SNE (van der Maaten & Hinton 2008), O(n²) per iteration, meant for n ≤ ~2000
//   points (plot.ts subsamples above that). Per point, a binary search on the Gaussian
//   precision β_i makes the conditional distribution's perplexity 2^H equal the target; P is
//   symmetrised, (P_{j|i} + P_{i|j}) / 2n; the map uses Student-t similarities
//   q_ij ∝ 1/(1 + ‖y_i − y_j‖²). Gradient descent on KL(P‖Q) with early exaggeration, momentum
//   and per-coordinate gains (Jacobs 1988) as in the paper's reference implementation.
//   Initialisation is the top-2 PCA of the input scaled to std 1e-4 (first coordinate), which
//   keeps runs deterministic and preserves global layout better than a random start.
import { mulberry32 } from '../nn/init.ts';

export interface PcaResult {
  /** [k, dim] unit-length principal directions, largest variance first. */
  components: Float64Array;
  /** [n, k] coordinates of the centred rows along the components. */
  scores: Float64Array;
  /** [k] variance along each component (divisor n − 1). */
  variances: Float64Array;
  /** [dim] column means that were subtracted. */
  mean: Float64Array;
  k: number;
}

export interface PcaOptions {
  /** Seed of the random start block (default 0). */
  seed?: number;
  /** Subspace-iteration limit (default 100; near-equal eigenvalues converge slowly, and their
   *  directions are ill-determined anyway). */
  maxIterations?: number;
  /** Stop when every component moved less than this (1 − |cos| between iterations; default 1e-14,
   *  an angle of about 1.4e-7 rad). */
  tolerance?: number;
}

/** Top-k principal components of the rows of x ([n, dim], row-major). */
export function principalComponents(x: ArrayLike<number>, n: number, dim: number, k: number, opts: PcaOptions = {}): PcaResult {
  checkMatrix('principalComponents', x, n, dim);
  const m = Math.min(n, dim);
  if (!Number.isInteger(k) || k < 1 || k > m) {
    throw new Error(`principalComponents: k=${k} must be between 1 and min(n, dim) = ${m}`);
  }
  const maxIterations = opts.maxIterations ?? 100;
  const tolerance = opts.tolerance ?? 1e-14;
  const rand = gaussianSource(opts.seed ?? 0);

  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let c = 0; c < dim; c++) mean[c] += x[i * dim + c];
  for (let c = 0; c < dim; c++) mean[c] /= n;
  const xc = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) for (let c = 0; c < dim; c++) xc[i * dim + c] = x[i * dim + c] - mean[c];

  // Block size: oversampling speeds convergence, by (σ_{l+1}/σ_k)² per iteration.
  const l = Math.min(m, k + 10);
  // q: [l, n] orthonormal rows spanning the current left subspace (start: range of X·Ω).
  const omega = new Float64Array(l * dim);
  for (let i = 0; i < omega.length; i++) omega[i] = rand();
  let q = multiplyRowsByXt(omega, l, xc, n, dim);
  orthonormalizeRows(q, l, n, rand);

  let prev: Float64Array | null = null;
  let ritz: { components: Float64Array; lambdas: Float64Array };
  for (let it = 0; ; it++) {
    const b = multiplyRowsByX(q, l, xc, n, dim); // Qᵀ X: [l, dim]
    ritz = rayleighRitz(b, l, dim, k);
    // A block as wide as min(n, dim) spans the whole row space, so one step is exact.
    if (l === m || it >= maxIterations) break;
    if (prev && maxDrift(prev, ritz.components, k, dim) < tolerance) break;
    prev = ritz.components;
    orthonormalizeRows(b, l, dim, rand);
    q = multiplyRowsByXt(b, l, xc, n, dim); // (X Z)ᵀ: [l, n]
    orthonormalizeRows(q, l, n, rand);
  }

  const { components, lambdas } = ritz;
  const scores = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += xc[i * dim + d] * components[c * dim + d];
      scores[i * k + c] = s;
    }
  }
  const variances = new Float64Array(k);
  for (let c = 0; c < k; c++) variances[c] = lambdas[c] / Math.max(1, n - 1);
  return { components, scores, variances, mean, k };
}

/** [n, 2] coordinates along the top two principal components (deterministic signs). */
export function pca2d(x: ArrayLike<number>, n: number, dim: number): Float64Array {
  if (Math.min(n, dim) >= 2) return principalComponents(x, n, dim, 2).scores;
  // One row or one column: a single direction at most; the second coordinate is zero.
  const out = new Float64Array(n * 2);
  if (n >= 1 && dim >= 1) {
    const p = principalComponents(x, n, dim, 1).scores;
    for (let i = 0; i < n; i++) out[i * 2] = p[i];
  }
  return out;
}

export interface TsneOptions {
  /** Target perplexity (default 30), clamped to (n − 1)/3 for small n. */
  perplexity?: number;
  /** Gradient steps (default 750). */
  iterations?: number;
  /** P multiplier during the first `exaggerationIterations` steps (default 12). */
  earlyExaggeration?: number;
  /** Default 250; the momentum also switches from 0.5 to 0.8 there. */
  exaggerationIterations?: number;
  /** Step size (default max(200, n/12), the Belkina et al. 2019 heuristic for large n). */
  learningRate?: number;
  /** Inputs wider than this are first reduced to this many principal components (default 50). */
  pcaDims?: number;
  /** Seeds the PCA start block (and the fallback start when all points coincide). Default 0. */
  seed?: number;
}

export interface TsneResult {
  /** [n, 2] map coordinates. */
  y: Float64Array;
  /** Perplexity actually used after clamping. */
  perplexity: number;
  /** KL(P‖Q) of the final map. */
  kl: number;
}

/** Exact t-SNE of the rows of x ([n, dim]) to 2-D. */
export function tsne(x: ArrayLike<number>, n: number, dim: number, opts: TsneOptions = {}): TsneResult {
  checkMatrix('tsne', x, n, dim);
  if (n < 3) throw new Error(`tsne: needs at least 3 points to embed, got n=${n}`);
  const iterations = opts.iterations ?? 750;
  const exaggeration = opts.earlyExaggeration ?? 12;
  const exaggerationIterations = opts.exaggerationIterations ?? 250;
  const learningRate = opts.learningRate ?? Math.max(200, n / 12);
  const pcaDims = opts.pcaDims ?? 50;
  const seed = opts.seed ?? 0;
  const perplexity = Math.min(opts.perplexity ?? 30, (n - 1) / 3);

  // Pre-reduce wide inputs: a few power iterations suffice here (the map only needs the
  // dominant structure), and it keeps the n² distance pass cheap.
  let data: ArrayLike<number> = x;
  let width = dim;
  if (dim > pcaDims && Math.min(n, dim) > pcaDims) {
    data = principalComponents(x, n, dim, pcaDims, { seed, maxIterations: 3, tolerance: 0 }).scores;
    width = pcaDims;
  }
  const p = jointAffinities(squaredDistances(data, n, width), n, perplexity);
  const y = pcaInit(data, n, width, seed);

  const grad = new Float64Array(2 * n);
  const update = new Float64Array(2 * n);
  const gains = new Float64Array(2 * n).fill(1);
  for (let it = 0; it < iterations; it++) {
    const exag = it < exaggerationIterations ? exaggeration : 1;
    const momentum = it < exaggerationIterations ? 0.5 : 0.8;
    const sumQ = tsneGradient(y, p, n, exag, grad);
    let m0 = 0;
    let m1 = 0;
    for (let c = 0; c < 2 * n; c++) {
      const gc = grad[c];
      gains[c] = Math.sign(gc) !== Math.sign(update[c]) ? gains[c] + 0.2 : Math.max(0.01, gains[c] * 0.8);
      update[c] = momentum * update[c] - learningRate * gains[c] * gc;
      y[c] += update[c];
      if (c & 1) m1 += y[c];
      else m0 += y[c];
    }
    if (!Number.isFinite(sumQ)) throw new Error('tsne: the map diverged (non-finite coordinates); lower the learning rate');
    // Recentre: the objective is translation invariant, so this only removes drift.
    m0 /= n;
    m1 /= n;
    for (let i = 0; i < n; i++) {
      y[2 * i] -= m0;
      y[2 * i + 1] -= m1;
    }
  }

  return { y, perplexity, kl: klDivergence(y, p, n) };
}

/**
 * dKL/dy for the map y ([n, 2]) into grad, in one pass over pairs. With w_ij = 1/(1 + ‖y_i − y_j‖²)
 * and Z = Σ_{i≠j} w_ij:  ∂C/∂y_i = 4 Σ_j (α p_ij − w_ij/Z) w_ij (y_i − y_j)
 *                                = 4 (α Σ_j p_ij w_ij (y_i − y_j) − (1/Z) Σ_j w_ij² (y_i − y_j)),
 * so the attractive and repulsive sums are accumulated separately and Z is applied at the end.
 * Returns Z.
 */
export function tsneGradient(y: Float64Array, p: Float64Array, n: number, exag: number, grad: Float64Array): number {
  const rep = new Float64Array(2 * n);
  grad.fill(0);
  let z = 0;
  for (let i = 0; i < n; i++) {
    const yi0 = y[2 * i];
    const yi1 = y[2 * i + 1];
    const row = i * n;
    let a0 = 0;
    let a1 = 0;
    let r0 = 0;
    let r1 = 0;
    for (let j = i + 1; j < n; j++) {
      const d0 = yi0 - y[2 * j];
      const d1 = yi1 - y[2 * j + 1];
      const w = 1 / (1 + d0 * d0 + d1 * d1);
      z += w;
      const pw = p[row + j] * w;
      const ww = w * w;
      a0 += pw * d0;
      a1 += pw * d1;
      r0 += ww * d0;
      r1 += ww * d1;
      grad[2 * j] -= pw * d0;
      grad[2 * j + 1] -= pw * d1;
      rep[2 * j] -= ww * d0;
      rep[2 * j + 1] -= ww * d1;
    }
    grad[2 * i] += a0;
    grad[2 * i + 1] += a1;
    rep[2 * i] += r0;
    rep[2 * i + 1] += r1;
  }
  z *= 2;
  const invZ = 1 / z;
  for (let c = 0; c < 2 * n; c++) grad[c] = 4 * (exag * grad[c] - rep[c] * invZ);
  return z;
}

/** KL(P‖Q) of a map y ([n, 2]) for a symmetric joint P ([n, n]), Q the normalised Student-t kernel. */
export function klDivergence(y: Float64Array, p: Float64Array, n: number): number {
  let z = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const d0 = y[2 * i] - y[2 * j];
      const d1 = y[2 * i + 1] - y[2 * j + 1];
      z += 2 / (1 + d0 * d0 + d1 * d1);
    }
  }
  let kl = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const pij = p[i * n + j];
      if (pij <= 0) continue;
      const d0 = y[2 * i] - y[2 * j];
      const d1 = y[2 * i + 1] - y[2 * j + 1];
      const qij = 1 / (1 + d0 * d0 + d1 * d1) / z;
      kl += 2 * pij * Math.log(pij / Math.max(qij, 1e-300));
    }
  }
  return kl;
}

/**
 * Conditional affinities P_{j|i} ([n, n] row-stochastic, zero diagonal) from squared distances,
 * each row's Gaussian precision found by bisection so that exp(H(P_i)) = perplexity (H in nats)
 * to within `entropyTolerance` nats (1e-5, as in the reference implementation).
 */
export function conditionalAffinities(dist2: Float64Array, n: number, perplexity: number, entropyTolerance = 1e-5): { p: Float64Array; beta: Float64Array } {
  if (!(perplexity > 0) || perplexity > n - 1) {
    throw new Error(`tsne: perplexity ${perplexity} must be in (0, n − 1 = ${n - 1}]`);
  }
  const target = Math.log(perplexity);
  const p = new Float64Array(n * n);
  const beta = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const row = i * n;
    // Distances relative to the nearest neighbour: same P after normalisation, no underflow.
    let dmin = Infinity;
    for (let j = 0; j < n; j++) if (j !== i && dist2[row + j] < dmin) dmin = dist2[row + j];
    let b = 1;
    let lo = 0;
    let hi = Infinity;
    let sum = 0;
    let used = b; // the precision that the values in p[row] belong to
    for (let step = 0; step < 200; step++) {
      used = b;
      sum = 0;
      let weighted = 0;
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const dj = dist2[row + j] - dmin;
        const e = Math.exp(-b * dj);
        p[row + j] = e;
        sum += e;
        weighted += dj * e;
      }
      // H = log Σ e_j + β Σ d_j e_j / Σ e_j  (entropy of the normalised row, in nats)
      const h = Math.log(sum) + (b * weighted) / sum;
      const diff = h - target;
      if (Math.abs(diff) < entropyTolerance) break;
      if (diff > 0) {
        lo = b; // too flat: sharpen
        b = hi === Infinity ? b * 2 : (b + hi) / 2;
      } else {
        hi = b;
        b = (b + lo) / 2;
      }
    }
    for (let j = 0; j < n; j++) p[row + j] = j === i ? 0 : p[row + j] / sum;
    beta[i] = used;
  }
  return { p, beta };
}

/** Symmetrised affinities p_ij = (P_{j|i} + P_{i|j}) / 2n ([n, n], sums to 1). */
export function jointAffinities(dist2: Float64Array, n: number, perplexity: number): Float64Array {
  const { p } = conditionalAffinities(dist2, n, perplexity);
  const out = new Float64Array(n * n);
  const scale = 1 / (2 * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) out[i * n + j] = (p[i * n + j] + p[j * n + i]) * scale;
  }
  return out;
}

/** [n, n] squared Euclidean distances between rows of x ([n, dim]). */
export function squaredDistances(x: ArrayLike<number>, n: number, dim: number): Float64Array {
  const d = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let s = 0;
      for (let c = 0; c < dim; c++) {
        const t = x[i * dim + c] - x[j * dim + c];
        s += t * t;
      }
      d[i * n + j] = s;
      d[j * n + i] = s;
    }
  }
  return d;
}

/** k distinct indices of [0, n), chosen by a seeded partial Fisher–Yates shuffle, in ascending order. */
export function seededSubsample(n: number, k: number, seed: number): Int32Array {
  if (k >= n) return Int32Array.from({ length: n }, (_, i) => i);
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  const rand = mulberry32(seed);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (n - i));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm.slice(0, k).sort();
}

// ---------------------------------------------------------------------------------------------

function checkMatrix(fn: string, x: ArrayLike<number>, n: number, dim: number): void {
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(dim) || dim < 1) {
    throw new Error(`${fn}: need n ≥ 1 rows and dim ≥ 1 columns, got n=${n}, dim=${dim}`);
  }
  if (x.length !== n * dim) throw new Error(`${fn}: input holds ${x.length} values, expected n×dim = ${n}×${dim} = ${n * dim}`);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) throw new Error(`${fn}: row ${Math.floor(i / dim)} has a NaN or infinite value`);
  }
}

function pcaInit(x: ArrayLike<number>, n: number, dim: number, seed: number): Float64Array {
  // A start only needs the dominant plane roughly, so the iteration is capped early.
  const y = Math.min(n, dim) >= 2 ? principalComponents(x, n, dim, 2, { seed, maxIterations: 30 }).scores : pca2d(x, n, dim);
  let ss = 0;
  for (let i = 0; i < n; i++) ss += y[2 * i] * y[2 * i];
  const std = Math.sqrt(ss / n);
  if (std > 0) {
    const s = 1e-4 / std;
    for (let c = 0; c < y.length; c++) y[c] *= s;
  } else {
    // Every point identical: PCA has no direction, so start from a tiny seeded cloud.
    const rand = gaussianSource(seed);
    for (let c = 0; c < y.length; c++) y[c] = 1e-4 * rand();
  }
  return y;
}

/** out = a · Xᵀ for a: [rows, dim], X: [n, dim] → [rows, n]. */
function multiplyRowsByXt(a: Float64Array, rows: number, x: Float64Array, n: number, dim: number): Float64Array {
  const out = new Float64Array(rows * n);
  for (let i = 0; i < n; i++) {
    const xo = i * dim;
    for (let r = 0; r < rows; r++) {
      const ao = r * dim;
      let s = 0;
      for (let d = 0; d < dim; d++) s += a[ao + d] * x[xo + d];
      out[r * n + i] = s;
    }
  }
  return out;
}

/** out = a · X for a: [rows, n], X: [n, dim] → [rows, dim]. */
function multiplyRowsByX(a: Float64Array, rows: number, x: Float64Array, n: number, dim: number): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const oo = r * dim;
    for (let i = 0; i < n; i++) {
      const w = a[r * n + i];
      if (w === 0) continue;
      const xo = i * dim;
      for (let d = 0; d < dim; d++) out[oo + d] += w * x[xo + d];
    }
  }
  return out;
}

/** Modified Gram–Schmidt, twice, on the rows of a [rows, len]; a collapsed row is redrawn at random. */
function orthonormalizeRows(a: Float64Array, rows: number, len: number, rand: () => number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * len;
    for (let attempt = 0; ; attempt++) {
      let before = 0;
      for (let d = 0; d < len; d++) before += a[o + d] * a[o + d];
      for (let pass = 0; pass < 2; pass++) {
        for (let s = 0; s < r; s++) {
          const so = s * len;
          let dot = 0;
          for (let d = 0; d < len; d++) dot += a[o + d] * a[so + d];
          for (let d = 0; d < len; d++) a[o + d] -= dot * a[so + d];
        }
      }
      let after = 0;
      for (let d = 0; d < len; d++) after += a[o + d] * a[o + d];
      if (after > 1e-24 * Math.max(before, 1e-300) && after > 0) {
        const inv = 1 / Math.sqrt(after);
        for (let d = 0; d < len; d++) a[o + d] *= inv;
        break;
      }
      if (attempt > 20) throw new Error('principalComponents: could not build an orthonormal basis (degenerate input)');
      for (let d = 0; d < len; d++) a[o + d] = rand();
    }
  }
}

/**
 * Given b = Qᵀ X ([l, dim]) for an orthonormal Q spanning an approximate left singular subspace
 * of X, returns the top-k right singular vectors (principal directions, [k, dim]) and λ = σ².
 */
function rayleighRitz(b: Float64Array, l: number, dim: number, k: number): { components: Float64Array; lambdas: Float64Array } {
  const c = new Float64Array(l * l);
  for (let r = 0; r < l; r++) {
    for (let s = r; s < l; s++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += b[r * dim + d] * b[s * dim + d];
      c[r * l + s] = dot;
      c[s * l + r] = dot;
    }
  }
  const { values, vectors } = symmetricEigen(c, l);
  const order = Array.from({ length: l }, (_, i) => i).sort((i, j) => values[j] - values[i]);
  const components = new Float64Array(k * dim);
  const lambdas = new Float64Array(k);
  for (let t = 0; t < k; t++) {
    const e = order[t];
    lambdas[t] = Math.max(0, values[e]);
    const o = t * dim;
    for (let r = 0; r < l; r++) {
      const w = vectors[r * l + e];
      for (let d = 0; d < dim; d++) components[o + d] += w * b[r * dim + d];
    }
    let ss = 0;
    let big = 0;
    for (let d = 0; d < dim; d++) {
      ss += components[o + d] * components[o + d];
      if (Math.abs(components[o + d]) > Math.abs(components[o + big])) big = d;
    }
    const inv = ss > 0 ? (components[o + big] < 0 ? -1 : 1) / Math.sqrt(ss) : 0;
    for (let d = 0; d < dim; d++) components[o + d] *= inv;
  }
  return { components, lambdas };
}

/** Largest 1 − |cos| between matching rows of two [k, dim] unit-row matrices. */
function maxDrift(a: Float64Array, b: Float64Array, k: number, dim: number): number {
  let worst = 0;
  for (let t = 0; t < k; t++) {
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += a[t * dim + d] * b[t * dim + d];
    worst = Math.max(worst, 1 - Math.abs(dot));
  }
  return worst;
}

/** Cyclic Jacobi eigen-decomposition of a small symmetric [m, m] matrix; vectors in columns. */
function symmetricEigen(input: Float64Array, m: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(input);
  const v = new Float64Array(m * m);
  for (let i = 0; i < m; i++) v[i * m + i] = 1;
  let scale = 0;
  for (let i = 0; i < m * m; i++) scale += a[i] * a[i];
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < m; p++) for (let q = p + 1; q < m; q++) off += a[p * m + q] * a[p * m + q];
    if (off <= 1e-30 * scale || off === 0) break;
    for (let p = 0; p < m; p++) {
      for (let q = p + 1; q < m; q++) {
        const apq = a[p * m + q];
        if (apq === 0) continue;
        const theta = (a[q * m + q] - a[p * m + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < m; r++) {
          const arp = a[r * m + p];
          const arq = a[r * m + q];
          a[r * m + p] = c * arp - s * arq;
          a[r * m + q] = s * arp + c * arq;
        }
        for (let r = 0; r < m; r++) {
          const apr = a[p * m + r];
          const aqr = a[q * m + r];
          a[p * m + r] = c * apr - s * aqr;
          a[q * m + r] = s * apr + c * aqr;
        }
        for (let r = 0; r < m; r++) {
          const vrp = v[r * m + p];
          const vrq = v[r * m + q];
          v[r * m + p] = c * vrp - s * vrq;
          v[r * m + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  const values = new Float64Array(m);
  for (let i = 0; i < m; i++) values[i] = a[i * m + i];
  return { values, vectors: v };
}

/** Standard normal draws (Box–Muller) from a seeded uniform source. */
function gaussianSource(seed: number): () => number {
  const u = mulberry32(seed ^ 0x9e3779b9);
  return () => {
    const a = Math.max(u(), 1e-300);
    return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * u());
  };
}
