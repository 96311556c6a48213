// ViT bench: whole CLIP vision forwards (src/nn/vit.ts, random weights) for the `tiny` preset at
// batch 32, `vit-b-32` at micro-batch 64 on GPUs (batch 2 on CPU adapters such as lavapipe, where
// one ViT-B/32 image costs about a second) and `vit-b-16` at 64 on GPUs only:
//   teacher:  model.forward(pixels) under noGrad (the frozen teacher);
//   student:  model.forward(pixels, { lora }) with a fresh rank-4 LoraAdapter on q/k/v/out
//             (LoraAdapter.create), recording the tape as in training (freed when the output is).
// GFLOP/s uses forwardFlopsPerImage (src/nn/config.ts: matmuls + attention); extra.images_per_s.
//
// Matmul reference: the ViT's linear layers (matmul x·Wᵀ, the NT layout linear() runs) at the
// same token count M = batch·tokens are timed in the same run (kernel 'matmul'); their combined
// rate, Σ flops / Σ time over one layer's products (q, k, v, out: 4× M×D×D; fc1 M×D×I; fc2
// M×I×D), is the reference of extra.ratio_to_matmul = forward GFLOP/s / matmul GFLOP/s (the
// issue's target: ≥ 0.6).
//
// max_abs_err: teacher vs student output. A fresh adapter has B = 0, so both must agree; this
// checks the LoRA path (packed [x | s·x·Aᵀ]·[W | B]ᵀ) against the plain one at full model size.
import { ClipVisionModel } from '../../src/nn/vit.ts';
import { LoraAdapter, DEFAULT_LORA } from '../../src/nn/lora.ts';
import { NAMED_CONFIGS, forwardFlopsPerImage, numTokens, type ClipVisionConfig } from '../../src/nn/config.ts';
import { noGrad } from '../../src/tensor/autograd.ts';
import { scope, type Tensor } from '../../src/tensor/tensor.ts';
import { matmul } from '../../src/ops/matmul.ts';
import type { Device } from '../../src/gpu/device.ts';
import { maxAbsDiff, uniform, type BenchCase, type HostTensor, type Row, type Suite, type SuiteOptions } from '../harness.ts';

export const MODEL_SEED = 1;

/** Batch per preset: small on CPU adapters (lavapipe), 32 elsewhere. */
export function benchBatch(device: Device, configName: string, quick: boolean): number {
  if (quick) return 4;
  if (configName === 'tiny') return 32;
  // GPUs: micro-batch 64, the size issue 14 compares with PyTorch at.
  return device.adapterClass === 'cpu' ? 2 : 64;
}

export interface LinearShape {
  /** Role, e.g. 'qkv/out'. */
  name: string;
  k: number;
  n: number;
  /** How many of it one layer runs. */
  count: number;
}

export function vitLinears(cfg: ClipVisionConfig): LinearShape[] {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  return [
    { name: 'qkv/out', k: D, n: D, count: 4 },
    { name: 'fc1', k: D, n: I, count: 1 },
    { name: 'fc2', k: I, n: D, count: 1 },
  ];
}

const CHECK_SAMPLES = 64;

/** max |out - a·op(b)| on evenly strided outputs; b is [n, k] when transB, else [k, n]. */
function sampledErr(out: Float32Array, a: Float32Array, b: Float32Array, m: number, k: number, n: number, transB: boolean): number {
  let worst = 0;
  for (let s = 0; s < CHECK_SAMPLES; s++) {
    const idx = Math.floor((s * (m * n - 1)) / (CHECK_SAMPLES - 1));
    const i = Math.floor(idx / n);
    const j = idx % n;
    let acc = 0;
    for (let kk = 0; kk < k; kk++) acc += a[i * k + kk] * (transB ? b[j * k + kk] : b[kk * n + j]);
    const d = Math.abs(out[idx] - acc);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

/**
 * Reference matmul rows for `prefix` (the model rows' label start, repeated at the end of theirs): each linear at
 * M tokens in the forward layout (NT) and, with dX, also the input-gradient layout (NN).
 */
export function matmulReferenceCases(prefix: string, cfg: ClipVisionConfig, m: number, dX: boolean): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const lin of vitLinears(cfg)) {
    for (const layout of dX ? (['NT', 'NN'] as const) : (['NT'] as const)) {
      // NT: y[M,N] = x[M,K]·W[N,K]ᵀ. NN (dX): dx[M,K] = dy[M,N]·W[N,K], i.e. an m×n×k product.
      const [kk, nn] = layout === 'NT' ? [lin.k, lin.n] : [lin.n, lin.k];
      cases.push({
        kernel: 'matmul',
        variant: 'auto',
        // Labelled like the matmul suite's rows (role, layout, m×k×n), then the model rows' prefix.
        shape: `${lin.name}.${layout === 'NT' ? 'fwd' : 'dX'} ${layout} ${m}x${kk}x${nn} (${prefix})`,
        dtype: 'f32',
        flops: 2 * m * kk * nn,
        inputs: (): HostTensor[] => [
          { shape: [m, kk], data: uniform(m * kk, 91 + kk) },
          { shape: layout === 'NT' ? [nn, kk] : [kk, nn], data: uniform(kk * nn, 97 + nn, 1 / Math.sqrt(kk)) },
        ],
        run: ([a, b]) => matmul(a, b, { transB: layout === 'NT' }),
        check: {
          reference: `host f64 on ${CHECK_SAMPLES} sampled outputs`,
          maxAbsErr: (out, [a, b]) => sampledErr(out, a.data, b.data, m, kk, nn, layout === 'NT'),
        },
      });
    }
  }
  return cases;
}

/**
 * Σ flops / Σ time of one layer's linears, from the matmul rows under `prefix` measured earlier
 * in this run (each weighted by how many of it a layer runs); null when any is missing.
 */
export function matmulReferenceGflops(prefix: string, cfg: ClipVisionConfig, earlier: readonly Row[], dX: boolean): number | null {
  let flops = 0;
  let ms = 0;
  for (const lin of vitLinears(cfg)) {
    for (const role of dX ? ['fwd', 'dX'] : ['fwd']) {
      const row = earlier.find((r) => r.kernel === 'matmul' && r.shape.startsWith(`${lin.name}.${role} `) && r.shape.endsWith(` (${prefix})`));
      if (!row || row.gflops === undefined) return null;
      flops += lin.count * row.gflops * row.ms * 1e6;
      ms += lin.count * row.ms;
    }
  }
  return flops / (ms * 1e6);
}

interface ModelState {
  model: ClipVisionModel;
  lora: LoraAdapter;
}

function vitCase(configName: string, batch: number, student: boolean, prefix: string): BenchCase {
  const cfg = NAMED_CONFIGS[configName];
  const S = cfg.imageSize;
  const fpi = forwardFlopsPerImage(cfg);
  let state: ModelState | null = null;
  // The harness's pixel tensor (alive for the whole case), for the check's second forward.
  let pixelsIn: Tensor | null = null;
  const ensure = (device: Device): ModelState => {
    state ??= { model: ClipVisionModel.random(cfg, MODEL_SEED, device), lora: LoraAdapter.create(cfg, DEFAULT_LORA, device) };
    return state;
  };
  const teacher = (s: ModelState, pixels: Tensor): Tensor => scope(() => noGrad(() => s.model.forward(pixels)));
  const studentFwd = (s: ModelState, pixels: Tensor): Tensor => scope(() => s.model.forward(pixels, { lora: s.lora }));
  return {
    kernel: 'vit-forward',
    variant: student ? `student (adapter r=${DEFAULT_LORA.rank})` : 'teacher (noGrad)',
    shape: `${prefix} [${batch},3,${S},${S}]`,
    dtype: 'f32',
    flops: batch * fpi,
    inputs: () => [{ shape: [batch, 3, S, S], data: uniform(batch * 3 * S * S, 111) }],
    run([pixels]) {
      pixelsIn = pixels;
      const s = ensure(pixels.device);
      return student ? studentFwd(s, pixels) : teacher(s, pixels);
    },
    check: {
      reference: student ? 'teacher output (fresh adapter: B = 0)' : 'student output with a fresh adapter (B = 0)',
      async maxAbsErr(out) {
        if (!state || !pixelsIn) throw new Error('vit bench: the check ran before the model');
        const other = (student ? teacher(state, pixelsIn) : studentFwd(state, pixelsIn)).keep();
        try {
          return maxAbsDiff(out, await other.read());
        } finally {
          other.dispose();
        }
      },
    },
    derived(row: Row, earlier: readonly Row[]): Record<string, number> {
      const out: Record<string, number> = { images_per_s: batch / (row.ms / 1000) };
      const ref = matmulReferenceGflops(prefix, cfg, earlier, false);
      if (ref !== null && row.gflops !== undefined) out.ratio_to_matmul = row.gflops / ref;
      return out;
    },
    dispose() {
      state?.lora.dispose();
      state?.model.dispose();
      state = null;
      pixelsIn = null;
    },
  };
}

/**
 * The model-level suites' cases (vit, train): per preset (tiny; ViT-B/32 unless quick; ViT-B/16 on GPUs) at
 * benchBatch, the matmul reference rows their ratio_to_matmul divides by (labelled with the
 * same prefix; with the input-gradient layout when `dX`), then the suite's own cases.
 */
export function presetCases(opts: SuiteOptions, dX: boolean, build: (configName: string, batch: number, prefix: string) => BenchCase[]): BenchCase[] {
  // ViT-B/16 (197 tokens) only on GPUs: one step takes minutes on a CPU adapter.
  const presets = opts.quick ? ['tiny'] : opts.device.adapterClass === 'gpu' ? ['tiny', 'vit-b-32', 'vit-b-16'] : ['tiny', 'vit-b-32'];
  return presets.flatMap((name) => {
    const cfg = NAMED_CONFIGS[name];
    const batch = benchBatch(opts.device, name, opts.quick);
    const prefix = `${name} B=${batch}`;
    return [...matmulReferenceCases(prefix, cfg, batch * numTokens(cfg), dX), ...build(name, batch, prefix)];
  });
}

export const vitSuite: Suite = {
  name: 'vit',
  cases: (opts) => presetCases(opts, false, (name, batch, prefix) => [vitCase(name, batch, false, prefix), vitCase(name, batch, true, prefix)]),
};
