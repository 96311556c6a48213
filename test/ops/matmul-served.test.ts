// The GPU matmul kernels on the training shapes they serve, against an independent kernel in the
// same process: every tile8 configuration (kernels/matmul_tile8.wgsl, plain WGSL, so it runs on
// every adapter) and, where the adapter lists a usable subgroup-matrix config, every
// subgroup-matrix layout (kernels/matmul_sgmat.wgsl; lavapipe has none, so those run only in the
// GPU bundle, scripts/gpu-check). The reference is the product of the same (f16-rounded where the
// variant is f16) inputs by the f32 mm_direct kernel, itself checked against PyTorch fixtures in
// matmul.test.ts, plus a float64 host reference on sampled outputs.
//
// Shapes: the ViT linear layers in the three training layouts (fwd NT, dX NN, dW TN), with a
// fused bias + GELU + residual epilogue on the forward. On GPUs at ViT-B/16's micro-batch 64
// (M = 12608 tokens); on CPU adapters cut to M = 130 rows (edge tiles, several slabs) so the
// test stays in seconds.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { matmul, toF16, toF32 } from '../../src/ops/index.ts';
import { matmulCaps } from '../../src/ops/matmul.ts';
import { candidateVariants, pickSubgroupMatrixConfig, sgmatVariant, SGMAT_LAYOUTS, type MatmulDType } from '../../src/ops/matmul-select.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { device, randn } from '../helpers/fixtures.ts';

interface Shape {
  name: string;
  M: number;
  K: number;
  N: number;
  transA: boolean;
  transB: boolean;
  epilogue: boolean;
}

function shapes(gpu: boolean): Shape[] {
  const [tokens, d, h] = gpu ? [64 * 197, 768, 3072] : [130, 96, 136];
  return [
    { name: 'fc1.fwd NT + bias/gelu/res', M: tokens, K: d, N: h, transA: false, transB: true, epilogue: true },
    { name: 'fc1.dX NN', M: tokens, K: h, N: d, transA: false, transB: false, epilogue: false },
    { name: 'fc1.dW TN', M: h, K: tokens, N: d, transA: true, transB: false, epilogue: false },
  ];
}

/** Names of the variants under test on this device: tile8 candidates (its default configuration
 *  on CPU adapters, which do not list it) and every valid subgroup-matrix layout. */
function variantsUnderTest(dev: Awaited<ReturnType<typeof device>>, dtype: MatmulDType): string[] {
  const caps = matmulCaps(dev);
  if (dev.adapterClass === 'gpu') return candidateVariants(caps, dtype).filter((v) => v.entry === 'mm_tile8' || v.entry === 'mm_sgmat').map((v) => v.name);
  const cfg = pickSubgroupMatrixConfig(caps, dtype);
  const sgmat = cfg ? SGMAT_LAYOUTS.flatMap((l) => sgmatVariant(cfg, caps.subgroupSize?.max, l)?.name ?? []) : [];
  return [`tile8_128x128x16${dtype === 'f16' ? '_f16' : ''}`, ...sgmat];
}

async function checkShape(s: Shape, dtype: MatmulDType, variants: readonly string[]): Promise<void> {
  const dev = await device();
  const aData = randn(s.M * s.K, 3 + s.M, 0.5);
  const bData = randn(s.K * s.N, 5 + s.N, 0.5);
  const biasData = randn(s.N, 7);
  const resData = randn(s.M * s.N, 9);
  const aShape = s.transA ? [s.K, s.M] : [s.M, s.K];
  const bShape = s.transB ? [s.N, s.K] : [s.K, s.N];
  const [a32, b32, bias32, res32] = [fromArray(aData, aShape, dev), fromArray(bData, bShape, dev), fromArray(biasData, [s.N], dev), fromArray(resData, [s.M, s.N], dev)].map((t) => t.keep());
  const inputs = dtype === 'f16' ? [a32, b32, bias32, res32].map((t) => scope(() => toF16(t)).keep()) : [a32, b32, bias32, res32];
  const run = (variant: string | undefined, xs: Tensor[]): Tensor =>
    matmul(xs[0], xs[1], { transA: s.transA, transB: s.transB, variant, ...(s.epilogue ? { bias: xs[2], residual: xs[3], activation: 'gelu' as const } : {}) });
  try {
    // Reference: the same (rounded) inputs in f32 through mm_direct.
    const refInputs = dtype === 'f16' ? inputs.map((t) => scope(() => toF32(t)).keep()) : inputs;
    const ref = await scope(() => run('direct_r4_w64', refInputs).keep()).read();
    if (refInputs !== inputs) for (const t of refInputs) t.dispose();
    const refMax = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    // f32: accumulation order only. f16: the output's rounding (half an ulp, 2^-11 relative) and
    // the epilogue re-reading the rounded sum before the GELU (another ulp).
    const tol = dtype === 'f32' ? 2e-5 * refMax + 1e-5 : 2e-3 * refMax + 2e-3;
    for (const v of variants) {
      const out = scope(() => {
        const y = run(v, inputs);
        return (dtype === 'f16' ? toF32(y) : y).keep();
      });
      const got = await out.read();
      out.dispose();
      let worst = 0;
      let at = -1;
      for (let i = 0; i < got.length; i++) {
        const d = Math.abs(got[i] - ref[i]);
        if (!(d <= worst)) { worst = Number.isNaN(d) ? Infinity : d; at = i; }
      }
      assert.ok(worst <= tol, `${v} ${dtype} ${s.name} [${s.M}x${s.K}x${s.N}]: max |ours - direct f32| = ${worst} at ${at} > ${tol}`);
    }
  } finally {
    for (const t of new Set([a32, b32, bias32, res32, ...inputs])) t.dispose();
  }
}

test('tile8 and subgroup-matrix variants agree with the f32 direct kernel on the training shapes they serve', async () => {
  const dev = await device();
  const dtypes: MatmulDType[] = dev.hasFeature('shader-f16') ? ['f32', 'f16'] : ['f32'];
  let ran = 0;
  for (const dtype of dtypes) {
    const variants = variantsUnderTest(dev, dtype);
    for (const s of shapes(dev.adapterClass === 'gpu')) {
      await checkShape(s, dtype, variants);
      ran += variants.length;
    }
  }
  assert.ok(ran >= 3, `at least tile8 ran on every shape (ran ${ran})`);
});

test.run();
