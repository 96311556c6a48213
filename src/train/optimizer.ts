// AdamW with global-norm gradient clipping, as one fused kernel over all trainable parameters.
//
// The optimizer owns flat f32 buffers (param, grad, m, v) holding every parameter at a fixed
// offset. A step gathers each parameter's value and .grad into the flat buffers (GPU copies),
// runs the two-stage global-norm reduction and the fused update (src/ops/adamw.ts), and copies
// the updated values back into each Parameter's own buffer. Gathering the values each step
// (instead of treating the flat copy as the master) keeps writes the user makes to a
// Parameter between steps (loading weights, say) visible to the optimizer.
//
// Parameters whose .grad is null are skipped entirely, as in PyTorch: no weight decay, no
// moment update, no step count, and they do not count towards the global norm. Each parameter
// keeps its own step count for bias correction, again as torch.optim.AdamW does.
import type { Device } from '../gpu/device.ts';
import { Parameter, Tensor, zeros } from '../tensor/tensor.ts';
import { adamwUpdate, gradNormFromPartials, gradSumSquaresPartials, partialCount, type FlatRange } from '../ops/adamw.ts';

export interface AdamWOptions {
  lr: number;
  /** Moment decay rates (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Added to the denominator (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay (default 0.01). */
  weightDecay?: number;
  /** Clip the global L2 norm of all gradients to this (clip_grad_norm_); undefined or 0 = off. */
  maxGradNorm?: number;
  /**
   * Parameters updated without weight decay (torch: a param group with weight_decay 0). They
   * still count towards the global norm. Listing them after the decayed ones keeps the update
   * one dispatch.
   */
  noWeightDecay?: readonly Parameter[];
}

/** Host copy of the optimizer state, keyed by parameter name. */
export interface AdamWState {
  /** Number of step() calls so far. */
  step: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
  /** Per-parameter step counts (they lag `step` for parameters that had no grad on some steps); all `step` when absent. */
  paramSteps?: Record<string, number>;
}

interface Slot {
  param: Parameter;
  offset: number;
  size: number;
  /** Whether weight decay applies. */
  decay: boolean;
  /** Steps this parameter was actually updated (its bias-correction t). */
  steps: number;
}

/** A run of the flat buffers updated by one dispatch: its step count and whether it decays. */
type UpdateRange = FlatRange & { step: number; decay: boolean };

function checkHyper(name: string, value: number, lo: number, hi: number, hiOpen: boolean): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < lo || (hiOpen ? value >= hi : value > hi)) {
    throw new Error(`AdamW: ${name} = ${value} is invalid; expected a number in [${lo}, ${hi}${hiOpen ? ')' : ']'}`);
  }
}

export class AdamW {
  private readonly slots: Slot[];
  private readonly device: Device;
  private readonly lr: number;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly weightDecay: number;
  private readonly maxGradNorm: number;
  private flat: { param: Tensor; grad: Tensor; m: Tensor; v: Tensor } | null;
  private partials: Tensor | null = null;
  private steps = 0;

  constructor(params: Parameter[], opts: AdamWOptions) {
    if (!Array.isArray(params) || params.length === 0) throw new Error('AdamW: got an empty parameter list');
    const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
    checkHyper('lr', opts.lr, 0, Infinity, true);
    checkHyper('betas[0]', beta1, 0, 1, true);
    checkHyper('betas[1]', beta2, 0, 1, true);
    this.lr = opts.lr;
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    this.maxGradNorm = opts.maxGradNorm ?? 0;
    checkHyper('eps', this.eps, 0, Infinity, true);
    checkHyper('weightDecay', this.weightDecay, 0, Infinity, true);
    checkHyper('maxGradNorm', this.maxGradNorm, 0, Infinity, true);

    const exempt = new Set(opts.noWeightDecay ?? []);
    for (const p of exempt) if (!params.includes(p)) throw new Error(`AdamW: noWeightDecay lists ${p.describe()}, which is not in the parameter list`);
    const seen = new Set<Parameter>();
    const names = new Set<string>();
    let offset = 0;
    this.slots = params.map((p, i) => {
      if (!(p instanceof Parameter)) throw new Error(`AdamW: params[${i}] is not a Parameter`);
      if (p.disposed) throw new Error(`AdamW: params[${i}] (${p.describe()}) was used after dispose()`);
      if (p.dtype !== 'f32') throw new Error(`AdamW: params[${i}] (${p.describe()}) is ${p.dtype}; only f32 parameters are supported`);
      if (seen.has(p)) throw new Error(`AdamW: ${p.describe()} appears twice in the parameter list`);
      const name = p.name ?? `param${i}`;
      if (names.has(name)) throw new Error(`AdamW: two parameters are named '${name}'; names key the optimizer state, so they must be unique`);
      if (p.device !== params[0].device) throw new Error(`AdamW: ${p.describe()} is on device #${p.device.id}, ${params[0].describe()} on #${params[0].device.id}`);
      seen.add(p);
      names.add(name);
      const slot = { param: p, offset, size: p.size, steps: 0, decay: !exempt.has(p) };
      offset += p.size;
      return slot;
    });
    this.device = params[0].device;
    const n = Math.max(1, offset);
    this.flat = {
      param: Tensor.empty([n], this.device).keep(),
      grad: Tensor.empty([n], this.device).keep(),
      m: zeros([n], this.device).keep(),
      v: zeros([n], this.device).keep(),
    };
  }

  /** Number of step() calls so far. */
  get stepCount(): number {
    return this.steps;
  }

  private buffers(what: string): { param: Tensor; grad: Tensor; m: Tensor; v: Tensor } {
    if (!this.flat) throw new Error(`AdamW.${what}: the optimizer was disposed`);
    return this.flat;
  }

  private nameOf(s: Slot, i: number): string {
    return s.param.name ?? `param${i}`;
  }

  /**
   * One update from each parameter's .grad (parameters without one are skipped). `lr`
   * overrides the constructor's (for schedules); `gradScale` multiplies every gradient first
   * (1/loss_scale for the gradients of a scaled loss). Returns the global gradient norm before
   * clipping (of the scaled gradients) as a scalar Tensor, computed on the GPU (reading it is up
   * to the caller).
   */
  step(lr: number = this.lr, gradScale = 1): Tensor {
    const s = this.begin(lr, gradScale);
    this.finish(s, lr, gradScale);
    return s.norm;
  }

  /**
   * The step of mixed-precision training (torch.cuda.amp.GradScaler.step): the gradients of a
   * loss scaled by 1/gradScale are unscaled, and when any of them is Inf or NaN (the global
   * norm is then not finite) the update is skipped: parameters, moments and step counts stay
   * as they were. Waits for the norm. Returns it (unscaled, before clipping) and whether the
   * update was skipped.
   */
  async stepUnlessOverflow(lr: number, gradScale: number): Promise<{ norm: number; skipped: boolean }> {
    const s = this.begin(lr, gradScale);
    try {
      const norm = await s.norm.item();
      if (!Number.isFinite(norm)) return { norm, skipped: true };
      this.finish(s, lr, gradScale);
      return { norm, skipped: false };
    } finally {
      // Released after the update is recorded: the pool reuses the buffer only for later work.
      s.norm.dispose();
    }
  }

  /**
   * Checks the gradients, gathers the flat buffers and dispatches the norm. The step is counted
   * only by finish(), so a skipped step leaves every count as it was.
   */
  private begin(lr: number, gradScale: number): { active: boolean[]; ranges: UpdateRange[]; norm: Tensor } {
    const flat = this.buffers('step');
    checkHyper('lr', lr, 0, Infinity, true);
    if (!(gradScale > 0) || !Number.isFinite(gradScale)) throw new Error(`AdamW.step: gradScale ${gradScale} must be a finite number > 0`);
    const active: boolean[] = this.slots.map((s, i) => {
      const p = s.param;
      if (p.disposed) throw new Error(`AdamW.step: parameter '${this.nameOf(s, i)}' was disposed while the optimizer holds it`);
      const g = p.grad;
      if (!g) return false;
      if (g.disposed) throw new Error(`AdamW.step: the gradient of '${this.nameOf(s, i)}' was disposed`);
      if (g.size !== p.size) throw new Error(`AdamW.step: the gradient of '${this.nameOf(s, i)}' is ${g.describe()}, the parameter is ${p.describe()}`);
      if (g.device !== this.device) throw new Error(`AdamW.step: the gradient of '${this.nameOf(s, i)}' is on another device than the parameter`);
      if (g.dtype !== 'f32') throw new Error(`AdamW.step: the gradient of '${this.nameOf(s, i)}' is ${g.dtype}; gradients of f32 parameters must be f32`);
      return true;
    });
    const norm = Tensor.empty([], this.device);
    const batch = this.device.batch;
    for (let i = 0; i < this.slots.length; i++) {
      if (!active[i]) continue;
      const s = this.slots[i];
      batch.copy(s.param.buffer, 0, flat.param.buffer, s.offset * 4, s.size * 4);
      batch.copy(s.param.grad!.buffer, 0, flat.grad.buffer, s.offset * 4, s.size * 4);
    }
    const ranges = this.ranges(active);
    if (ranges.length === 0) {
      // Nothing has a gradient: torch's clip_grad_norm_ reports 0 and AdamW changes nothing.
      norm.write(new Float32Array([0]));
      return { active, ranges, norm };
    }
    const partials = this.partialsBuffer(ranges.reduce((a, r) => a + partialCount(this.device, r.end - r.begin), 0));
    let nPartials = 0;
    for (const r of ranges) nPartials += gradSumSquaresPartials(flat.grad, r, partials, nPartials, gradScale);
    gradNormFromPartials(partials, nPartials, norm);
    return { active, ranges, norm };
  }

  /** Counts the step, dispatches the update of every range (reading the norm on the GPU) and copies the values back. */
  private finish(st: { active: boolean[]; ranges: UpdateRange[]; norm: Tensor }, lr: number, gradScale: number): void {
    const flat = this.buffers('step');
    this.steps++;
    this.slots.forEach((slot, i) => {
      if (st.active[i]) slot.steps++;
    });
    if (st.ranges.length === 0) return;
    for (const r of st.ranges) {
      adamwUpdate({ ...flat, norm: st.norm }, r, {
        lr,
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: r.decay ? this.weightDecay : 0,
        maxNorm: this.maxGradNorm,
        step: r.step,
        gradScale,
      });
    }
    for (let i = 0; i < this.slots.length; i++) {
      if (!st.active[i]) continue;
      const s = this.slots[i];
      this.device.batch.copy(flat.param.buffer, s.offset * 4, s.param.buffer, 0, s.size * 4);
    }
  }

  /**
   * Maximal runs of adjacent parameters that have a gradient and share a step count and whether
   * they decay, each with the 1-based count its update will have. With every gradient present
   * (the usual case) this is one range over all parameters (two with noWeightDecay listed last),
   * so the update is one or two dispatches.
   */
  private ranges(active: boolean[]): UpdateRange[] {
    const out: UpdateRange[] = [];
    this.slots.forEach((s, i) => {
      if (!active[i] || s.size === 0) return;
      const last = out[out.length - 1];
      if (last && last.end === s.offset && last.step === s.steps + 1 && last.decay === s.decay) last.end = s.offset + s.size;
      else out.push({ begin: s.offset, end: s.offset + s.size, step: s.steps + 1, decay: s.decay });
    });
    return out;
  }

  private partialsBuffer(count: number): Tensor {
    if (!this.partials || this.partials.size < count) {
      this.partials?.dispose();
      this.partials = Tensor.empty([count], this.device).keep();
    }
    return this.partials;
  }

  /** Drops every parameter's gradient. */
  zeroGrad(): void {
    for (const s of this.slots) s.param.zeroGrad();
  }

  /** Host copies of the moments per parameter name and the step counts (for checkpoints). */
  async stateDict(): Promise<AdamWState> {
    const flat = this.buffers('stateDict');
    const step = this.steps;
    const paramSteps: Record<string, number> = {};
    this.slots.forEach((s, i) => (paramSteps[this.nameOf(s, i)] = s.steps));
    const [mAll, vAll] = [await flat.m.read(), await flat.v.read()];
    const m: Record<string, Float32Array> = {};
    const v: Record<string, Float32Array> = {};
    this.slots.forEach((s, i) => {
      const name = this.nameOf(s, i);
      m[name] = mAll.slice(s.offset, s.offset + s.size);
      v[name] = vAll.slice(s.offset, s.offset + s.size);
    });
    return { step, m, v, paramSteps };
  }

  /** Restores what stateDict() returned (parameter values are restored separately). */
  loadStateDict(state: AdamWState): void {
    const flat = this.buffers('loadStateDict');
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`AdamW.loadStateDict: step ${state.step} is not a non-negative integer`);
    const known = new Set(this.slots.map((s, i) => this.nameOf(s, i)));
    for (const key of ['m', 'v'] as const) {
      if (!state[key] || typeof state[key] !== 'object') throw new Error(`AdamW.loadStateDict: state has no '${key}' record`);
      for (const name of Object.keys(state[key])) {
        if (!known.has(name)) throw new Error(`AdamW.loadStateDict: state.${key} has '${name}', which is not a parameter of this optimizer (was it saved from another model?)`);
      }
    }
    const steps = this.slots.map((s, i) => {
      const name = this.nameOf(s, i);
      for (const key of ['m', 'v'] as const) {
        const a = state[key][name];
        if (!(a instanceof Float32Array)) throw new Error(`AdamW.loadStateDict: state.${key} has no Float32Array for '${name}'`);
        if (a.length !== s.size) throw new Error(`AdamW.loadStateDict: state.${key}['${name}'] has ${a.length} values, the parameter has ${s.size} (${s.param.describe()})`);
      }
      const t = state.paramSteps?.[name] ?? state.step;
      if (!Number.isInteger(t) || t < 0) throw new Error(`AdamW.loadStateDict: step count ${t} of '${name}' is not a non-negative integer`);
      return t;
    });
    this.slots.forEach((s, i) => {
      const name = this.nameOf(s, i);
      s.steps = steps[i];
      this.device.batch.upload(flat.m.buffer, state.m[name], s.offset * 4);
      this.device.batch.upload(flat.v.buffer, state.v[name], s.offset * 4);
    });
    this.steps = state.step;
  }

  /** Frees the moments and flat buffers; the parameters themselves are untouched. */
  dispose(): void {
    if (!this.flat) return;
    for (const t of Object.values(this.flat)) t.dispose();
    this.partials?.dispose();
    this.partials = null;
    this.flat = null;
  }
}
