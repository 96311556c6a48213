// Test helpers: PyTorch fixtures (read with genalign's own safetensors reader), closeness
// assertions that report the worst element, and finite-difference gradient checks.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { Tensor, fromArray, scope } from '../../src/tensor/tensor.ts';
import { backward, noGrad } from '../../src/tensor/autograd.ts';
import { getDevice, type Device } from '../../src/gpu/device.ts';
import { mul, sum } from '../../src/ops/index.ts';
import { mulberry32 } from '../../src/nn/init.ts';

export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export class Fixture {
  constructor(
    readonly name: string,
    readonly tensors: Map<string, HostTensor>,
    readonly metadata: Record<string, string>,
  ) {}

  get(key: string): HostTensor {
    const t = this.tensors.get(key);
    if (!t) throw new Error(`fixture ${this.name}: no tensor '${key}' (regenerate with npm run fixtures)`);
    return t;
  }

  /** Uploads a fixture tensor; `requiresGrad` makes it a differentiable leaf. */
  tensor(key: string, requiresGrad = false): Tensor {
    const h = this.get(key);
    const t = fromArray(h.data, h.shape);
    t.requiresGrad = requiresGrad;
    return t;
  }
}

const cache = new Map<string, Fixture>();

export function fixture(name: string): Fixture {
  let f = cache.get(name);
  if (!f) {
    const { tensors, metadata } = readSafetensors(join(FIXTURE_DIR, `${name}.safetensors`));
    f = new Fixture(name, tensors, metadata);
    cache.set(name, f);
  }
  return f;
}

export interface Tolerance {
  rtol: number;
  atol: number;
}

/** f32 default: rel 1e-5 / abs 1e-6 (the stated tolerance for exact-order kernels). */
export const F32_TOL: Tolerance = { rtol: 1e-5, atol: 1e-6 };

/** Asserts |a - e| <= atol + rtol * |e| elementwise; the message names the worst element. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, label: string): number {
  if (actual.length !== expected.length) throw new Error(`${label}: length ${actual.length} != expected ${expected.length}`);
  let worst = -1;
  let worstRatio = 0;
  let maxAbs = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const err = Math.abs(a - e);
    // Non-finite values only match themselves (a NaN never does): the ratio below would be
    // NaN for them, and a NaN ratio compares false against every bound.
    if ((!Number.isFinite(a) || !Number.isFinite(e)) && a !== e) {
      throw new Error(`${label}: element ${i} is ${a}, expected ${e}`);
    }
    maxAbs = Math.max(maxAbs, err);
    const ratio = err / (tol.atol + tol.rtol * Math.abs(e));
    if (ratio > worstRatio) {
      worstRatio = ratio;
      worst = i;
    }
  }
  if (worstRatio > 1) {
    throw new Error(
      `${label}: element ${worst} = ${actual[worst]}, expected ${expected[worst]} ` +
        `(|err| ${Math.abs(actual[worst] - expected[worst]).toExponential(3)} > atol ${tol.atol} + rtol ${tol.rtol}·|e|; ${(worstRatio).toFixed(2)}× the tolerance)`,
    );
  }
  return maxAbs;
}

/** Values per input in a fixture's `<case>.probe` (scripts/fixtures: PROBE). */
const FIXTURE_PROBE = 8;

/**
 * Fixtures that store only references keep `<key>.probe`: the first values of each input, in
 * order. Throws unless the inputs the test regenerated (exactNormal) match them bit for bit.
 */
export function assertRegenerated(fx: Fixture, key: string, inputs: Float32Array[], names?: readonly string[]): void {
  const probe = fx.get(`${key}.probe`).data;
  inputs.forEach((d, i) => {
    for (let j = 0; j < FIXTURE_PROBE; j++) {
      const want = probe[i * FIXTURE_PROBE + j];
      if (d[j] !== want) throw new Error(`${fx.name}/${key}: input ${names?.[i] ?? i} is not regenerated bit-exactly (value ${j}: ${d[j]}, fixture ${want})`);
    }
  });
}

/**
 * rtol 1e-5 with atol k × the largest |reference| of the tensor: for long f32 reductions (dot
 * products over hundreds of terms, gradient sums over many rows), whose rounding error is
 * absolute and scales with the values, so a fixed atol cannot express it. The bound follows the
 * reference's scale both ways: a gradient of a batch-mean loss whose entries are ~1e-4 gets an
 * atol ~1e-4 × k, not a fixed 1e-6 that a 1% error would pass under. An all-zero reference
 * must be matched exactly.
 */
export function scaledTol(ref: ArrayLike<number>, k = 1e-6): Tolerance {
  let mx = 0;
  for (let i = 0; i < ref.length; i++) mx = Math.max(mx, Math.abs(ref[i]));
  return { rtol: 1e-5, atol: k * mx };
}

/** assertClose with scaledTol(expected). */
export function checkScaled(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string): void {
  assertClose(actual, expected, scaledTol(expected), label);
}

/** Rows `rows` of a [.., width] tensor, concatenated. */
export function pickRows(full: Float32Array, width: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(full.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

export async function expectTensor(t: Tensor, expected: HostTensor, tol: Tolerance, label: string): Promise<number> {
  if (t.shape.join(',') !== expected.shape.join(',')) {
    throw new Error(`${label}: shape [${t.shape}] != expected [${expected.shape}]`);
  }
  return assertClose(await t.read(), expected.data, tol, label);
}

export async function device(): Promise<Device> {
  return getDevice();
}

/** Deterministic pseudo-random numbers for tests. */
export const rng = mulberry32;

/**
 * Twin of exact_normal in scripts/fixtures/common.py: ≈ N(0, 1) from six uniforms, bit-exact in
 * both languages, so a fixture can store only references and regenerate its inputs. With
 * `scale`, each f32 value is multiplied in float64 and rounded to f32 (as the Python side does).
 */
export function exactNormal(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < 6; j++) s += r();
    out[i] = (s - 3) * Math.SQRT2;
    if (scale !== 1) out[i] = out[i] * scale;
  }
  return out;
}

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export interface GradCheckOptions {
  eps?: number;
  rtol?: number;
  atol?: number;
  /** How many coordinates per input to probe (all when smaller). */
  probes?: number;
  seed?: number;
}

/**
 * Finite-difference gradient check. f maps input tensors to one output tensor; the scalar
 * checked is L = sum(f(x) * w) for a fixed random w. Analytic grads come from backward();
 * numeric ones from central differences (x ± eps) evaluated on the GPU.
 */
export async function gradCheck(name: string, f: (xs: Tensor[]) => Tensor, inputs: HostTensor[], opts: GradCheckOptions = {}): Promise<void> {
  const eps = opts.eps ?? 1e-2;
  const tol = { rtol: opts.rtol ?? 2e-2, atol: opts.atol ?? 2e-3 };
  const probes = opts.probes ?? 12;
  const r = rng(opts.seed ?? 7);
  let w: Tensor | null = null;
  const lossOf = (xs: Tensor[]): Tensor => {
    const y = f(xs);
    w ??= fromArray(randn(y.size, 99), y.shape).keep();
    return sum(mul(y, w));
  };
  const evalLoss = async (datas: Float32Array[]): Promise<number> => {
    const t = scope(() => noGrad(() => lossOf(datas.map((d, i) => fromArray(d, inputs[i].shape)))).keep());
    const v = await t.item();
    t.dispose();
    return v;
  };
  const xs = inputs.map((h) => {
    const t = fromArray(h.data, h.shape).keep();
    t.requiresGrad = true;
    return t;
  });
  try {
    scope(() => backward(lossOf(xs)));
    for (let k = 0; k < inputs.length; k++) {
      if (!xs[k].grad) throw new Error(`${name}: input ${k} got no gradient`);
      const analytic = await xs[k].grad!.read();
      const n = inputs[k].data.length;
      if (analytic.length !== n) throw new Error(`${name}: the gradient of input ${k} has ${analytic.length} values, the input ${n}`);
      const idx = n <= probes ? [...Array(n).keys()] : Array.from({ length: probes }, () => Math.floor(r() * n));
      for (const i of idx) {
        const plus = inputs.map((h) => h.data.slice());
        const minus = inputs.map((h) => h.data.slice());
        plus[k][i] += eps;
        minus[k][i] -= eps;
        const numeric = ((await evalLoss(plus)) - (await evalLoss(minus))) / (2 * eps);
        const err = Math.abs(numeric - analytic[i]);
        // Written as !(err <= bound) so that a NaN on either side fails.
        if (!(err <= tol.atol + tol.rtol * Math.abs(numeric))) {
          throw new Error(`${name}: d/dx${k}[${i}] analytic ${analytic[i]} vs finite-difference ${numeric} (eps ${eps})`);
        }
      }
    }
  } finally {
    for (const x of xs) x.dispose();
    (w as Tensor | null)?.dispose();
  }
}
