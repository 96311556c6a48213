// AdamW bench: one AdamW.step() (src/train/optimizer.ts) over the ViT-B/32 LoRA parameter set:
// 12 layers × 4 attention targets × (A [4, 768] + B [768, 4]) = 96 parameters, 294 912 floats.
// A step gathers each parameter and its .grad into flat buffers (GPU copies), runs the global
// gradient-norm reduction (partials, then one finalize workgroup) and the update over the flat
// range, and copies the values back; all of it is timed.
//
// GB/s counts the AdamW math's own traffic, 28 bytes per parameter (read param, grad, m, v;
// write param, m, v); the gather/scatter copies and the norm pass the step also runs are in the
// time but not in the byte count.
//
// Two rows, same case: against tfjs (the same math, norm included, on one flat tensor per state,
// as separate tfjs ops) and against genalign's per-parameter loop (peer 'genalign-composed'):
// the optimizer without flat buffers, as torch.optim.AdamW's single-tensor (foreach=False) path
// runs it: per parameter one sum-of-squares dispatch, one finalize for the norm, then per
// parameter one update dispatch on the parameter's own buffers (the same kernels: what it
// measures is one range over all parameters versus a loop over them, copies included).
//
// max_abs_err: the first step (warmup run) against host float64: the global grad norm and every
// updated parameter (step 1: m̂ = g, v̂ = g², p ← p·(1 − lr·wd) − lr·g/(|g| + eps)).
import { Tensor, zeros, type Parameter } from '../../src/tensor/tensor.ts';
import { AdamW } from '../../src/train/optimizer.ts';
import { adamwUpdate, gradNormFromPartials, gradSumSquaresPartials, partialCount } from '../../src/ops/adamw.ts';
import { LoraAdapter, DEFAULT_LORA } from '../../src/nn/lora.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { uniform, type BenchCase, type HostTensor, type Suite } from '../harness.ts';

const LR = 1e-3;
const WD = 0.01;
const BETAS: [number, number] = [0.9, 0.999];
const EPS = 1e-8;

function adamwCase(configName: string, peerKind: 'tfjs' | 'composed'): BenchCase {
  const cfg = NAMED_CONFIGS[configName];
  let state: { adapter: LoraAdapter; params: Parameter[]; opt: AdamW } | null = null;
  // Sizes without allocating: the adapter's parameter order is layer-major, A then B per target.
  const sizes: number[] = [];
  for (let l = 0; l < cfg.numHiddenLayers; l++) for (const _ of DEFAULT_LORA.targets) sizes.push(DEFAULT_LORA.rank * cfg.hiddenSize, cfg.hiddenSize * DEFAULT_LORA.rank);
  const n = sizes.reduce((a, b) => a + b, 0);

  const setup = ([flatP, flatG]: Tensor[]): NonNullable<typeof state> => {
    const device = flatP.device;
    const adapter = LoraAdapter.create(cfg, DEFAULT_LORA, device);
    const params = adapter.parameters();
    let off = 0;
    params.forEach((p, i) => {
      if (p.size !== sizes[i]) throw new Error(`adamw bench: parameter ${p.name} has ${p.size} values, expected ${sizes[i]}`);
      device.batch.copy(flatP.buffer, off * 4, p.buffer, 0, p.byteLength);
      p.grad = copySlice(flatG, off, p.shape);
      off += p.size;
    });
    return { adapter, params, opt: new AdamW(params, { lr: LR, betas: BETAS, eps: EPS, weightDecay: WD }) };
  };

  // The per-parameter loop's own parameters and state (the composed row only).
  let loop: { params: Tensor[]; grads: Tensor[]; m: Tensor[]; v: Tensor[]; partials: Tensor; steps: number } | null = null;
  const setupLoop = ([flatP, flatG]: Tensor[]): NonNullable<typeof loop> => {
    const device = flatP.device;
    let off = 0;
    const params: Tensor[] = [];
    const grads: Tensor[] = [];
    for (const size of sizes) {
      params.push(copySlice(flatP, off, [size]));
      grads.push(copySlice(flatG, off, [size]));
      off += size;
    }
    const zero = (): Tensor[] => sizes.map((size) => zeros([size], device).keep());
    const partials = Tensor.empty([sizes.reduce((a, size) => a + partialCount(device, size), 0)], device).keep();
    return { params, grads, m: zero(), v: zero(), partials, steps: 0 };
  };

  return {
    kernel: 'adamw',
    variant: 'fused',
    shape: `${configName} LoRA r=${DEFAULT_LORA.rank} q/k/v/out: ${sizes.length} params, ${n} floats`,
    dtype: 'f32',
    bytes: 28 * n,
    inputs: (): HostTensor[] => [
      { shape: [n], data: uniform(n, 81, 0.05) },
      { shape: [n], data: uniform(n, 83, 0.01) },
      // Zero moments: the peer's state (ours lives in the optimizer).
      { shape: [n], data: new Float32Array(n) },
      { shape: [n], data: new Float32Array(n) },
    ],
    run(inputs) {
      state ??= setup(inputs);
      // The norm first, then every parameter (views: the harness disposes what run returns).
      return [state.opt.step(), ...state.params.map((p) => p.view())];
    },
    check: {
      reference: 'host f64 AdamW step 1 (grad norm and all updated parameters)',
      maxAbsErr(out, [p, g]) {
        let sq = 0;
        for (const v of g.data) sq += v * v;
        let err = Math.abs(out[0] - Math.sqrt(sq));
        for (let i = 0; i < n; i++) {
          const expected = p.data[i] * (1 - LR * WD) - (LR * g.data[i]) / (Math.abs(g.data[i]) + EPS);
          const d = Math.abs(out[1 + i] - expected);
          if (!(d <= err)) err = Number.isNaN(d) ? Infinity : d;
        }
        return err;
      },
    },
    peerKind,
    composed(inputs) {
      loop ??= setupLoop(inputs);
      const st = loop;
      st.steps++;
      let nPartials = 0;
      st.grads.forEach((g) => (nPartials += gradSumSquaresPartials(g, { begin: 0, end: g.size }, st.partials, nPartials)));
      const norm = Tensor.empty([], st.partials.device);
      gradNormFromPartials(st.partials, nPartials, norm);
      st.params.forEach((p, i) =>
        adamwUpdate({ param: p, grad: st.grads[i], m: st.m[i], v: st.v[i], norm }, { begin: 0, end: p.size }, { lr: LR, beta1: BETAS[0], beta2: BETAS[1], eps: EPS, weightDecay: WD, maxNorm: 0, step: st.steps }),
      );
      return [norm, ...st.params.map((p) => p.view())];
    },
    peer(peer, [p, g, m, v]) {
      const tf = peer.tf;
      return tf.tidy(() => {
        const t = 1;
        const norm = tf.sqrt(tf.sum(tf.square(g)));
        const m1 = tf.add(tf.mul(m, BETAS[0]), tf.mul(g, 1 - BETAS[0]));
        const v1 = tf.add(tf.mul(v, BETAS[1]), tf.mul(tf.square(g), 1 - BETAS[1]));
        const upd = tf.div(tf.div(m1, 1 - BETAS[0] ** t), tf.add(tf.sqrt(tf.div(v1, 1 - BETAS[1] ** t)), EPS));
        void norm; // computed (tfjs runs eagerly) and freed by the tidy, like m1 and v1
        return tf.sub(tf.mul(p, 1 - LR * WD), tf.mul(upd, LR));
      });
    },
    dispose() {
      if (loop) {
        for (const t of [...loop.params, ...loop.grads, ...loop.m, ...loop.v, loop.partials]) t.dispose();
        loop = null;
      }
      if (!state) return;
      state.opt.dispose();
      state.adapter.dispose();
      state = null;
    },
  };
}

/** A [shape] copy of flat[offset, offset + size) (one GPU copy), kept out of scopes. */
function copySlice(flat: Tensor, offset: number, shape: readonly number[]): Tensor {
  const dst = Tensor.empty(shape, flat.device).keep();
  flat.device.batch.copy(flat.buffer, offset * 4, dst.buffer, 0, dst.byteLength);
  return dst;
}

export const adamwSuite: Suite = {
  name: 'adamw',
  cases: ({ quick }) => [adamwCase(quick ? 'tiny' : 'vit-b-32', 'tfjs'), adamwCase(quick ? 'tiny' : 'vit-b-32', 'composed')],
};
