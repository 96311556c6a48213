// Train-step bench: one GMAIL training step as src/train/trainer.ts's inner loop runs it, on a
// synthetic batch (random pixels, random weights):
//   teacher side   'teacher cache':   the teacher embeddings r [B, P] are uploaded from the host
//                                     (what a cache hit costs; random stand-ins for cached rows);
//                  'teacher forward': r = model.forward(real pixels) under noGrad, on the GPU
//                                     (the trainer reads r back to the host; the bench does not);
//   student        model.forward(generated pixels, { lora }) with a rank-4 adapter on q/k/v/out;
//   loss           infoNceGenToReal(g, r, { tau: 0.07 }), backward (LoRA A/B only: weights frozen);
//   optimizer      AdamW.step() (global grad norm, clipped to 1.0 as the trainer's default
//                  --clip and the PyTorch peer do, + fused update) and zeroGrad().
// Presets: `tiny` at batch 32; `vit-b-32` at micro-batch 64 on GPUs and 2 on CPU adapters (lavapipe);
// `vit-b-16` at 64 on GPUs only (the shapes bench/peer-torch/gmail_step.py runs, for --torch-rows).
// Each in f32 and, where the adapter has shader-f16, at --precision f16: f16 frozen weights and
// activations, f32 LoRA masters and AdamW state, the loss scaled by 2^16 before backward and
// unscaled in AdamW (the trainer also reads the norm back to skip an overflowed step; the bench
// does not wait for it).
// breakdown: GPU time per kernel family of one extra, profiled step (where the step's time goes).
// extra.peak_bytes: the most bytes the buffer pool had live during the step (weights, adapter,
// optimizer state, inputs and every activation and gradient), the memory the step needs.
//
// GFLOP/s counts teacher forward (the 'teacher forward' rows only) + student forward + student
// backward, with forwardFlopsPerImage for a forward and, for the backward, the work this step
// really has to do: dX of every linear (1× its forward: the weights are frozen, so no dW) and
// 2× the attention core (dV, dP, dQ, dK vs QKᵀ, PV); the patch embedding needs no backward
// (pixels need no gradient), the LoRA rank-4 products and the loss are not counted.
// extra: images_per_s and steps_per_s (from the timed ms), images_per_s_wall (from wall_ms),
// ratio_to_matmul = step GFLOP/s / the matmul rate of the same linears at M = batch·tokens in the
// forward (NT) and input-gradient (NN) layouts, measured in the same run (kernel 'matmul').
//
// max_abs_err: the step's loss against host float64 InfoNCE of the step's own g and r.
import { ClipVisionModel } from '../../src/nn/vit.ts';
import { LoraAdapter, DEFAULT_LORA } from '../../src/nn/lora.ts';
import { NAMED_CONFIGS, forwardFlopsPerImage, numTokens, type ClipVisionConfig } from '../../src/nn/config.ts';
import { backward, noGrad } from '../../src/tensor/autograd.ts';
import { fromArray, scope, type DType } from '../../src/tensor/tensor.ts';
import { infoNceGenToReal } from '../../src/ops/infonce.ts';
import { AdamW } from '../../src/train/optimizer.ts';
import { uniform, type BenchCase, type Row, type Suite } from '../harness.ts';
import { matmulReferenceGflops, presetCases, MODEL_SEED } from './vit.ts';
import { hostInfoNce, TAU } from './loss.ts';

const LR = 1e-4;

/** Flops of the student backward per image (see the header). */
export function studentBackwardFlopsPerImage(cfg: ClipVisionConfig): number {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const N = numTokens(cfg);
  const linearsDx = 2 * N * D * (4 * D) + 2 * N * D * (2 * I);
  const attentionBwd = 2 * (2 * 2 * N * N * D);
  return cfg.numHiddenLayers * (linearsDx + attentionBwd) + 2 * D * cfg.projectionDim;
}

interface StepState {
  model: ClipVisionModel;
  lora: LoraAdapter;
  opt: AdamW;
}

const LOSS_SCALE = 2 ** 16;

function trainCase(configName: string, batch: number, cached: boolean, prefix: string, maxReps: number | undefined, dtype: DType): BenchCase {
  const cfg = NAMED_CONFIGS[configName];
  const S = cfg.imageSize;
  const P = cfg.projectionDim;
  const fpi = forwardFlopsPerImage(cfg);
  const flops = batch * ((cached ? 0 : fpi) + fpi + studentBackwardFlopsPerImage(cfg));
  const cacheRows = uniform(batch * P, 131);
  let state: StepState | null = null;
  let peakBytes = 0;
  return {
    kernel: 'train-step',
    variant: cached ? 'teacher cache' : 'teacher forward',
    shape: `${prefix} [${batch},3,${S},${S}] P=${P}`,
    dtype,
    flops,
    maxReps,
    breakdown: true,
    inputs: () => [
      { shape: [batch, 3, S, S], data: uniform(batch * 3 * S * S, 121) },
      { shape: [batch, 3, S, S], data: uniform(batch * 3 * S * S, 127) },
    ],
    run([generated, real]) {
      const device = generated.device;
      if (!state) {
        const model = ClipVisionModel.random(cfg, MODEL_SEED, device, dtype);
        const lora = LoraAdapter.create(cfg, DEFAULT_LORA, device);
        state = { model, lora, opt: new AdamW(lora.parameters(), { lr: LR, weightDecay: 0.01, maxGradNorm: 1.0 }) };
      }
      const { model, lora, opt } = state;
      const scale = dtype === 'f16' ? LOSS_SCALE : 1;
      device.pool.resetPeak();
      // Outputs: the loss, then g and r (for the check).
      const out = scope(() => {
        const r = cached ? fromArray(cacheRows, [batch, P], device) : noGrad(() => model.forward(real));
        const g = model.forward(generated, { lora });
        const { loss } = infoNceGenToReal(g, r, { tau: TAU });
        backward(loss, fromArray([scale], [], device));
        opt.step(LR, 1 / scale).dispose();
        opt.zeroGrad();
        return [loss, g, r];
      });
      peakBytes = Math.max(peakBytes, device.pool.stats().peakLiveBytes);
      return out;
    },
    check: {
      reference: 'host f64 InfoNCE of the step\'s own g and r',
      maxAbsErr(out) {
        const g = out.subarray(1, 1 + batch * P);
        const r = out.subarray(1 + batch * P);
        return Math.abs(out[0] - hostInfoNce(g, r, batch, batch, P, false)[0]);
      },
    },
    derived(row: Row, earlier: readonly Row[]): Record<string, number> {
      const out: Record<string, number> = {
        images_per_s: batch / (row.ms / 1000),
        steps_per_s: 1000 / row.ms,
        images_per_s_wall: batch / (row.wall_ms / 1000),
        peak_bytes: peakBytes,
      };
      const ref = matmulReferenceGflops(prefix, cfg, earlier, true);
      if (ref !== null && row.gflops !== undefined) out.ratio_to_matmul = row.gflops / ref;
      return out;
    },
    dispose() {
      if (!state) return;
      state.opt.dispose();
      state.lora.dispose();
      state.model.dispose();
      state = null;
    },
  };
}

export const trainSuite: Suite = {
  name: 'train',
  cases: (opts) =>
    presetCases(opts, true, (name, batch, prefix) => {
      // A ViT-B/32 step takes seconds on CPU adapters: 3 timed reps there.
      const maxReps = name === 'tiny' ? undefined : 3;
      const dtypes: DType[] = opts.device.hasFeature('shader-f16') ? ['f32', 'f16'] : ['f32'];
      return dtypes.flatMap((dtype) => [trainCase(name, batch, true, prefix, maxReps, dtype), trainCase(name, batch, false, prefix, maxReps, dtype)]);
    }),
};
