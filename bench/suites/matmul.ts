// Matmul bench: a square 1024³ product plus the ViT-B/32 linear layers at batch 32 (1600 tokens)
// in the three layouts a training step runs; on GPUs also 4096³ and the ViT-B/16 linear layers at
// micro-batch 64 (64 × 197 = 12608 tokens, labelled `b16.<layer>`), issue 14's training shapes:
//   fwd NT  y[M,N]  = x[M,K] · W[N,K]ᵀ          (linear(x, W))
//   dX  NN  dx[M,K] = dy[M,N] · W[N,K]
//   dW  TN  dW[N,K] = dy[M,N]ᵀ · x[M,K]
// Shapes are labelled m×k×n of the product actually run. f16 rows store inputs and output in f16
// (f32 accumulation) when the device has 'shader-f16'.
//
// Variants: each row runs the variant the op picks by itself ("auto: <name>"); on the square
// shape every registered candidate variant also runs, side by side (--all-variants: on every shape).
//
// Reference: a host float64 dot product on 256 sampled outputs (all outputs when fewer), computed
// from the exact inputs our op saw (f16-rounded for f16 rows).
import { matmul, matmulCaps } from '../../src/ops/matmul.ts';
import { candidateVariants, chooseMatmulVariant, layoutOf, type MatmulDType } from '../../src/ops/matmul-select.ts';
import { f16BitsToF32, f32ToF16Bits } from '../../src/tensor/tensor.ts';
import type { Device } from '../../src/gpu/device.ts';
import { uniform, type BenchCase, type HostTensor, type Suite, type SuiteOptions } from '../harness.ts';

const SAMPLES = 256;

interface Problem {
  /** Row label, e.g. "fc1.fwd". */
  name: string;
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
}

function roundToF16(x: Float32Array): Float32Array {
  return Float32Array.from(x, (v) => f16BitsToF32(f32ToF16Bits(v)));
}

/** op(A)[i, kk] and op(B)[kk, j] read from row-major storage in the problem's layout. */
function sampledMaxAbsErr(p: Problem, out: Float32Array, a: Float32Array, b: Float32Array): number {
  const { m, k, n, transA, transB } = p;
  const total = m * n;
  const count = Math.min(SAMPLES, total);
  let worst = 0;
  for (let s = 0; s < count; s++) {
    // A fixed stride through the outputs covers first/last rows and columns of every size.
    const idx = count === total ? s : Math.floor((s * (total - 1)) / (count - 1));
    const i = Math.floor(idx / n);
    const j = idx % n;
    let acc = 0;
    for (let kk = 0; kk < k; kk++) {
      const av = transA ? a[kk * m + i] : a[i * k + kk];
      const bv = transB ? b[j * k + kk] : b[kk * n + j];
      acc += av * bv;
    }
    const d = Math.abs(out[idx] - acc);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

function matmulCase(p: Problem, dtype: MatmulDType, variant: string | undefined, device: Device): BenchCase {
  const { m, k, n, transA, transB } = p;
  const layout = layoutOf(transA, transB);
  const aShape = transA ? [k, m] : [m, k];
  const bShape = transB ? [n, k] : [k, n];
  const picked = chooseMatmulVariant(matmulCaps(device), { batch: 1, M: m, N: n, K: k, layout, dtype });
  const round = dtype === 'f16' ? roundToF16 : (x: Float32Array) => x;
  return {
    kernel: 'matmul',
    variant: variant ?? `auto: ${picked.name}`,
    shape: `${p.name} ${layout} ${m}x${k}x${n}`,
    dtype,
    flops: 2 * m * k * n,
    inputDtype: dtype,
    inputs: () => [
      // Scale keeps outputs O(1)-O(10) for every K; the same seeds give the peer the same data.
      { shape: aShape, data: round(uniform(m * k, 11 + m + k)) },
      { shape: bShape, data: round(uniform(k * n, 29 + k + n)) },
    ],
    run: ([a, b]) => matmul(a, b, { transA, transB, variant }),
    check: {
      reference: `host f64 on ${SAMPLES} sampled outputs${dtype === 'f16' ? ' (from the f16-rounded inputs)' : ''}`,
      maxAbsErr: (out, [a, b]: HostTensor[]) => sampledMaxAbsErr(p, out, a.data, b.data),
    },
    // tfjs has no f16 matmul: f16 rows have no peer rather than one at a different precision.
    peer: dtype === 'f32' ? (peer, [a, b]) => peer.tf.matMul(a, b, transA, transB) : undefined,
  };
}

/** ViT linear layer (K inputs -> N outputs) at M tokens, in its forward and two backward layouts. */
function linearProblems(name: string, tokens: number, fanIn: number, fanOut: number): Problem[] {
  return [
    { name: `${name}.fwd`, m: tokens, k: fanIn, n: fanOut, transA: false, transB: true },
    { name: `${name}.dX`, m: tokens, k: fanOut, n: fanIn, transA: false, transB: false },
    { name: `${name}.dW`, m: fanOut, k: tokens, n: fanIn, transA: true, transB: false },
  ];
}

function problems(quick: boolean, bigGpu: boolean): { square: Problem; rest: Problem[] } {
  if (quick) {
    return {
      square: { name: 'square', m: 64, k: 64, n: 64, transA: false, transB: false },
      rest: linearProblems('fc', 2 * 50, 48, 72),
    };
  }
  const tokens = 32 * 50;
  return {
    square: { name: 'square', m: 1024, k: 1024, n: 1024, transA: false, transB: false },
    rest: [
      // 4096³ only where a real GPU runs it in milliseconds (on a CPU adapter it takes minutes).
      ...(bigGpu ? [{ name: 'square', m: 4096, k: 4096, n: 4096, transA: false, transB: false }] : []),
      ...linearProblems('qkv/out', tokens, 768, 768),
      ...linearProblems('fc1', tokens, 768, 3072),
      ...linearProblems('fc2', tokens, 3072, 768),
      ...(bigGpu ? [...linearProblems('b16.qkv/out', 64 * 197, 768, 768), ...linearProblems('b16.fc1', 64 * 197, 768, 3072), ...linearProblems('b16.fc2', 64 * 197, 3072, 768)] : []),
    ],
  };
}

export const matmulSuite: Suite = {
  name: 'matmul',
  cases({ quick, allVariants, device }: SuiteOptions): BenchCase[] {
    const dtypes: MatmulDType[] = device.hasFeature('shader-f16') ? ['f32', 'f16'] : ['f32'];
    const { square, rest } = problems(quick, device.adapter.architecture !== 'software' && device.adapter.vendor !== 'mesa');
    const cases: BenchCase[] = [];
    for (const dtype of dtypes) {
      const variants = candidateVariants(matmulCaps(device), dtype).map((v) => v.name);
      for (const p of [square, ...rest]) {
        cases.push(matmulCase(p, dtype, undefined, device));
        // Quick mode lists f32 variants only: each variant is a pipeline compile, slow on lavapipe.
        const sideBySide = allVariants || (p === square && !(quick && dtype !== 'f32'));
        if (sideBySide) for (const v of variants) cases.push(matmulCase(p, dtype, v, device));
      }
    }
    return cases;
  },
};
