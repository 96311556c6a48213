// matmul / linear with a fused epilogue (bias, GELU / quick GELU, residual), forward and backward,
// and fusedMatmul: the same dispatch for ops that fuse a product into their own forward (LoRA).
// Kernels: kernels/matmul.wgsl (f32, or f16 storage with f32 accumulation: the same file
// assembled with the f16 prelude), kernels/matmul_sg.wgsl (CPU adapters), kernels/matmul_sgmat.wgsl
// (subgroup matrices). Which one runs is decided in matmul-select.ts.
//
// Backward of y = act(z) + residual, z = op(A)·op(B) + bias:
//   dResidual = dY;  dZ = dY ⊙ act'(z) (z is stored by the forward kernel as a second output
//   while grad is recorded: one extra [.., M, N] write instead of recomputing a whole matmul;
//   act' is activationBackward of the activation op);
//   dBias = Σ_rows dZ;  dA, dB = matmuls of dZ with the saved operands in the matching layout.
import { Tensor, shapeStr } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import type { KernelRef } from '../gpu/kernels.ts';
import { record, isGradEnabled } from '../tensor/autograd.ts';
import { checkInputs, params, product, shapeError, unusedOutput, F32_F16 } from './util.ts';
import { sum } from './reduce.ts';
import { activationBackward, ACT_CODE, ACTIVATIONS, type Activation } from './activation.ts';
import {
  chooseMatmulVariant,
  candidateVariants,
  layoutOf,
  shapeClass,
  storeTuned,
  type MatmulCapabilities,
  type MatmulDType,
  type MatmulShape,
  type MatmulVariant,
} from './matmul-select.ts';

export type { Activation };

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  bias?: Tensor;
  activation?: Activation;
  residual?: Tensor;
  /** Force a variant by name (bench/tests); see matmul-select.ts. */
  variant?: string;
}


/** The selection's view of a device (a Device has every capability the selection reads). */
export function matmulCaps(device: Device): MatmulCapabilities {
  return device;
}

/** Shape classes matmul has seen in this process (for autotuneSeen). */
const seen = new Map<string, MatmulShape>();

/**
 * The variant for a product (chooseMatmulVariant), recording its shape class for autotuneSeen.
 * Every path goes through here: matmul / linear, fusedMatmul (LoRA's fused projection) and mm
 * (backward), so an autotune after one training step covers forward and backward shapes.
 */
function pickVariant(device: Device, shape: MatmulShape, forced?: string): MatmulVariant {
  const cls = shapeClass(shape);
  if (!seen.has(cls)) seen.set(cls, shape);
  return chooseMatmulVariant(device, shape, forced);
}

interface Plan {
  shape: MatmulShape;
  outShape: number[];
  /** Element strides between batch elements (0 = broadcast). */
  aBs: number;
  bBs: number;
}

/** Validates shapes and resolves batching (see the header of matmul()). */
function plan(op: string, a: Tensor, b: Tensor, transA: boolean, transB: boolean, named: Record<string, Tensor>): Plan {
  if (a.shape.length < 2 || b.shape.length < 2) throw shapeError(op, 'both operands need at least 2 dimensions', named);
  if (a.dtype !== b.dtype) throw shapeError(op, `operand dtypes differ (${a.dtype} vs ${b.dtype}); cast one with toF16/toF32`, named);
  const ar = a.shape.length;
  const br = b.shape.length;
  const [aR, aC] = [a.shape[ar - 2], a.shape[ar - 1]];
  const [bR, bC] = [b.shape[br - 2], b.shape[br - 1]];
  const M = transA ? aC : aR;
  const Ka = transA ? aR : aC;
  const Kb = transB ? bC : bR;
  const N = transB ? bR : bC;
  if (Ka !== Kb) {
    throw shapeError(op, `inner dimensions differ: op(a) is [${M}, ${Ka}] and op(b) is [${Kb}, ${N}] (transA=${transA}, transB=${transB})`, named);
  }
  const aLead = a.shape.slice(0, ar - 2);
  const bLead = b.shape.slice(0, br - 2);
  const layout = layoutOf(transA, transB);
  const dtype = a.dtype;
  if (bLead.length === 0) {
    if (!transA) {
      // Shared weight: a's leading dims are extra rows.
      const rows = product(aLead) * M;
      return { shape: { batch: 1, M: rows, N, K: Ka, layout, dtype }, outShape: [...aLead, M, N], aBs: 0, bBs: 0 };
    }
    const batch = product(aLead);
    return { shape: { batch, M, N, K: Ka, layout, dtype }, outShape: [...aLead, M, N], aBs: M * Ka, bBs: 0 };
  }
  if (aLead.length === 0) {
    const batch = product(bLead);
    return { shape: { batch, M, N, K: Ka, layout, dtype }, outShape: [...bLead, M, N], aBs: 0, bBs: Ka * N };
  }
  if (aLead.length !== bLead.length || aLead.some((d, i) => d !== bLead[i])) {
    throw shapeError(op, 'batch dimensions must be equal, or b must be rank 2 (a shared weight), or a rank 2', named);
  }
  const batch = product(aLead);
  return { shape: { batch, M, N, K: Ka, layout, dtype }, outShape: [...aLead, M, N], aBs: M * Ka, bBs: Ka * N };
}

/**
 * A rank-r addend Σ_q u[m, q]·V(q, n) added to the product before the epilogue (LoRA's low-rank
 * path, see src/ops/lora.ts): u is [M, r]; v is [N, r] (V(q, n) = v[n, q]) or, with vT, [r, N].
 * Only for unbatched products (rank-2 b, rows of a flattened).
 */
export interface LowRankAddend {
  u: Tensor;
  v: Tensor;
  vT: boolean;
}

interface Epilogue {
  bias: Tensor | null;
  act: Activation;
  residual: Tensor | null;
  pre: Tensor | null;
  lowRank?: LowRankAddend | null;
}

/** Records the dispatch(es) of one matmul with the given variant. No validation, no autograd. */
function runVariant(v: MatmulVariant, a: Tensor, b: Tensor, pl: Plan, out: Tensor, epi: Epilogue): void {
  const device = a.device;
  const { batch, M, N, K, layout } = pl.shape;
  if (out.size === 0) return;
  const overrides = {
    ...v.overrides,
    TRANS_A: layout[0] === 'T' ? 1 : 0,
    TRANS_B: layout[1] === 'T' ? 1 : 0,
    HAS_BIAS: epi.bias ? 1 : 0,
    HAS_RES: epi.residual ? 1 : 0,
    STORE_PRE: epi.pre ? 1 : 0,
    ACT: ACT_CODE[epi.act],
    ...(epi.lowRank ? { LR_RANK: epi.lowRank.u.shape[1], LR_VT: epi.lowRank.vT ? 1 : 0 } : {}),
  };
  // Vec4 kernels (mm_tiled_v4, mm_tile8, ...) load four elements at a time along each operand's
  // contiguous dimension; where one of them is not a multiple of 4 the variant's fallback runs.
  const vec4Ok = (layout[0] === 'T' ? M : K) % 4 === 0 && (layout[1] === 'T' ? K : N) % 4 === 0;
  if (v.vec4Fallback && !vec4Ok) v = v.vec4Fallback;
  const entry = v.entry;
  const gx = Math.ceil(N / v.tileN);
  const gy = Math.ceil(M / v.tileM);
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (gx > max || gy > max) {
    throw new Error(`matmul: output [${M}, ${N}] needs a ${gx}x${gy} grid of ${v.tileM}x${v.tileN} tiles, beyond the device limit ${max} per dimension; split the input into smaller batches`);
  }
  // Unused optional operands bind `a` (read-only aliases are allowed).
  const lr = epi.lowRank;
  const inputs = [a.buffer, b.buffer, (epi.bias ?? a).buffer, (epi.residual ?? a).buffer, (lr?.u ?? a).buffer, (lr?.v ?? a).buffer];
  const outputs = [out.buffer, epi.pre ? epi.pre.buffer : unusedOutput(device)];
  // K = 0 needs nothing special: the kernels run no k iterations (z = bias, or 0).
  const ref: KernelRef = { file: v.file, entry, dtype: v.dtype, overrides, ...(v.accumulator ? { accumulator: v.accumulator } : {}), ...(v.consts ? { consts: v.consts } : {}) };
  for (let b0 = 0; b0 < batch; b0 += max) {
    const nb = Math.min(max, batch - b0);
    device.batch.dispatch(
      ref,
      params([M, N, K, b0, pl.aBs, pl.bBs, M * N, 0]),
      inputs,
      outputs,
      [gx, gy, nb],
    );
  }
}

function checkEpilogue(op: string, outShape: readonly number[], N: number, dtype: MatmulDType, bias: Tensor | undefined, residual: Tensor | undefined, named: Record<string, Tensor>): void {
  if (bias) {
    if (bias.shape.length !== 1 || bias.shape[0] !== N) throw shapeError(op, `bias must be [${N}] (the output's last dim)`, named);
    if (bias.dtype !== dtype) throw shapeError(op, `bias dtype ${bias.dtype} differs from the operands' ${dtype}`, named);
  }
  if (residual) {
    if (residual.shape.join(',') !== outShape.join(',')) throw shapeError(op, `residual must have the output shape ${shapeStr(outShape)}`, named);
    if (residual.dtype !== dtype) throw shapeError(op, `residual dtype ${residual.dtype} differs from the operands' ${dtype}`, named);
  }
}

/**
 * out = act(op(a)·op(b) + bias) + residual.
 * a is [..., M, K] ([..., K, M] with transA), b is [..., K, N] ([..., N, K] with transB).
 * Batching: b rank 2 (a shared weight; a's leading dims become extra rows when !transA), a rank
 * 2 (shared over b's batch), or identical batch dims. bias is [N]; residual has the output shape.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = 'matmul';
  const named: Record<string, Tensor> = { a, b };
  if (opts.bias) named.bias = opts.bias;
  if (opts.residual) named.residual = opts.residual;
  checkInputs(op, named, F32_F16);
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const act = opts.activation ?? 'none';
  if (!ACTIVATIONS.includes(act)) throw new Error(`${op}: unknown activation '${act}' (use 'none', 'gelu' or 'quick_gelu')`);
  const pl = plan(op, a, b, transA, transB, named);
  checkEpilogue(op, pl.outShape, pl.shape.N, pl.shape.dtype, opts.bias, opts.residual, named);
  const device = a.device;
  const variant = pickVariant(device, pl.shape, opts.variant);
  if (variant.dtype !== pl.shape.dtype) throw new Error(`${op}: variant '${variant.name}' is for ${variant.dtype}, operands are ${pl.shape.dtype}`);

  const inputs = [a, b, ...(opts.bias ? [opts.bias] : []), ...(opts.residual ? [opts.residual] : [])];
  const tracking = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  const out = Tensor.empty(pl.outShape, device, pl.shape.dtype);
  const pre = tracking && act !== 'none' ? Tensor.empty(pl.outShape, device, pl.shape.dtype) : null;
  runVariant(variant, a, b, pl, out, { bias: opts.bias ?? null, act, residual: opts.residual ?? null, pre });
  if (!tracking) return out;

  const hasBias = !!opts.bias;
  const hasRes = !!opts.residual;
  const aShape = a.shape;
  const bShape = b.shape;
  const saved = pre ? [a, b, pre] : [a, b];
  const result = record(op, inputs, out, saved, (g, s, needs) => {
    const [sa, sb] = s;
    const dz = pre && act !== 'none' ? activationBackward(g, s[2], act) : g;
    // Frozen operands (e.g. pretrained weights under LoRA) get no gradient and cost nothing.
    const [da, db] = operandGrads(sa, sb, dz, transA, transB, aShape, bShape, needs[0], needs[1]);
    const grads: (Tensor | null)[] = [da, db];
    if (hasBias) grads.push(needs[2] ? biasGrad(dz, pl.shape.N) : null);
    if (hasRes) grads.push(needs[hasBias ? 3 : 2] ? g.view() : null);
    if (dz !== g) dz.dispose();
    return grads;
  });
  // The node holds its own view of pre.
  pre?.dispose();
  return result;
}

function checkLowRank(op: string, pl: Plan, lr: LowRankAddend, named: Record<string, Tensor>): void {
  const { batch, M, N, dtype } = pl.shape;
  if (batch !== 1) throw new Error(`${op}: a low-rank addend needs an unbatched product (got batch ${batch})`);
  const r = lr.u.shape[1];
  const all = { ...named, lowRankU: lr.u, lowRankV: lr.v };
  if (lr.u.shape.length !== 2 || lr.u.shape[0] !== M || r < 1) throw shapeError(op, `the low-rank u must be [${M}, r] (rows of the output)`, all);
  const vShape = lr.vT ? [r, N] : [N, r];
  if (lr.v.shape.join(',') !== vShape.join(',')) throw shapeError(op, `the low-rank v must be [${vShape.join(', ')}]`, all);
  if (lr.u.dtype !== dtype || lr.v.dtype !== dtype) throw shapeError(op, `low-rank operands must be ${dtype} like the product`, all);
}

/** What fusedMatmul does with the product before it is stored; every field is optional. */
export interface FusedMatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** [N], added to every row. */
  bias?: Tensor;
  activation?: Activation;
  /** The output's shape, added after the activation. */
  residual?: Tensor;
  /** Σ_q u[m, q]·V(q, n) added to the product before the bias (unbatched products only). */
  lowRank?: LowRankAddend;
  /**
   * Receives z, the pre-activation (product + addend + bias), in the output's shape and dtype,
   * for the caller's backward: dz = activationBackward(dy, z, activation).
   */
  saveZ?: Tensor;
  /** Force a variant by name (tests and benches); see matmul-select.ts. */
  variant?: string;
}

/**
 * One matmul dispatch with a fused epilogue, for ops that fuse a product into their own forward
 * and write their own backward (loraLinear): out = act(op(a)·op(b) + lowRank + bias) + residual.
 * Nothing is recorded for autograd. Shapes and batching as matmul().
 */
export function fusedMatmul(a: Tensor, b: Tensor, o: FusedMatmulOptions = {}): Tensor {
  const op = 'fusedMatmul';
  const named: Record<string, Tensor> = { a, b };
  if (o.bias) named.bias = o.bias;
  if (o.residual) named.residual = o.residual;
  if (o.saveZ) named.saveZ = o.saveZ;
  checkInputs(op, named, F32_F16);
  const act = o.activation ?? 'none';
  if (!ACTIVATIONS.includes(act)) throw new Error(`${op}: unknown activation '${act}' (use 'none', 'gelu' or 'quick_gelu')`);
  const pl = plan(op, a, b, o.transA ?? false, o.transB ?? false, named);
  checkEpilogue(op, pl.outShape, pl.shape.N, pl.shape.dtype, o.bias, o.residual, named);
  if (o.lowRank) checkLowRank(op, pl, o.lowRank, named);
  if (o.saveZ && (o.saveZ.shape.join(',') !== pl.outShape.join(',') || o.saveZ.dtype !== pl.shape.dtype)) {
    throw shapeError(op, `saveZ must hold the output: ${shapeStr(pl.outShape)} ${pl.shape.dtype}`, named);
  }
  const v = pickVariant(a.device, pl.shape, o.variant);
  const out = Tensor.empty(pl.outShape, a.device, pl.shape.dtype);
  runVariant(v, a, b, pl, out, { bias: o.bias ?? null, act, residual: o.residual ?? null, pre: o.saveZ ?? null, lowRank: o.lowRank ?? null });
  return out;
}

/** PyTorch nn.Linear: y = act(x·Wᵀ + b) + residual with W [out, in]; x [..., in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor, activation?: Activation, residual?: Tensor): Tensor {
  const named: Record<string, Tensor> = { x, weight };
  checkInputs('linear', named, F32_F16);
  if (weight.shape.length !== 2) throw shapeError('linear', 'weight must be [out_features, in_features]', named);
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== weight.shape[1]) {
    throw shapeError('linear', `x's last dim must equal in_features ${weight.shape[1]}`, named);
  }
  const x2 = x.shape.length === 1 ? x.view([1, x.shape[0]]) : x;
  const y = matmul(x2, weight, { transB: true, bias, activation, residual: residual && x.shape.length === 1 ? residual.view([1, residual.size]) : residual });
  if (x2 !== x) {
    x2.dispose();
    const y1 = y.view([weight.shape[0]]);
    y.dispose();
    return y1;
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Backward pieces (run under noGrad by autograd.backward).

/** Plain matmul for backward: no epilogue, no recording. */
function mm(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const pl = plan('matmul backward', a, b, transA, transB, { a, b });
  const v = pickVariant(a.device, pl.shape);
  const out = Tensor.empty(pl.outShape, a.device, pl.shape.dtype);
  runVariant(v, a, b, pl, out, { bias: null, act: 'none', residual: null, pre: null });
  return out;
}

/** Sums a batched gradient [batch..., R, C] down to [R, C] (for a broadcast rank-2 operand). */
function sumBatch(t: Tensor, r: number, c: number): Tensor {
  if (t.shape.length === 2) return t;
  const flat = t.view([t.size / (r * c), r * c]);
  const s = sum(flat, 0);
  flat.dispose();
  t.dispose();
  const out = s.view([r, c]);
  s.dispose();
  return out;
}

/**
 * dA, dB for z = op(A)·op(B) given dZ (shape [..., M, N]):
 *   NN: dA = dZ·Bᵀ,      dB = Aᵀ·dZ
 *   NT: dA = dZ·B,       dB = dZᵀ·A        (B stored [N, K])
 *   TN: dA = B·dZᵀ,      dB = A·dZ         (A stored [K, M])
 *   TT: dA = Bᵀ·dZᵀ,     dB = dZᵀ·Aᵀ
 * With a shared rank-2 B and !transA, A's leading dims are rows, so dB is one matmul over all
 * rows; other broadcasts compute per-batch products and sum them.
 */
function operandGrads(a: Tensor, b: Tensor, dz: Tensor, transA: boolean, transB: boolean, aShape: readonly number[], bShape: readonly number[], needA = true, needB = true): [Tensor | null, Tensor | null] {
  const rowsFlat = bShape.length === 2 && !transA && aShape.length > 2;
  const a2 = rowsFlat ? a.view([a.size / aShape[aShape.length - 1], aShape[aShape.length - 1]]) : a;
  const dz2 = rowsFlat ? dz.view([dz.size / dz.shape[dz.shape.length - 1], dz.shape[dz.shape.length - 1]]) : dz;
  let da: Tensor | null = null;
  let db: Tensor | null = null;
  if (!transA && !transB) {
    if (needA) da = mm(dz2, b, false, true);
    if (needB) db = mm(a2, dz2, true, false);
  } else if (!transA && transB) {
    if (needA) da = mm(dz2, b, false, false);
    if (needB) db = mm(dz2, a2, true, false);
  } else if (transA && !transB) {
    if (needA) da = mm(b, dz2, false, true);
    if (needB) db = mm(a2, dz2, false, false);
  } else {
    if (needA) da = mm(b, dz2, true, true);
    if (needB) db = mm(dz2, a2, true, true);
  }
  if (rowsFlat) {
    a2.dispose();
    dz2.dispose();
  }
  // Back to the operands' shapes (summing over broadcast batch dims).
  const reshapeTo = (t: Tensor | null, shape: readonly number[]): Tensor | null => {
    if (!t) return null;
    if (t.size !== product(shape)) t = sumBatch(t, shape[shape.length - 2], shape[shape.length - 1]);
    const v = t.view(shape);
    t.dispose();
    return v;
  };
  return [reshapeTo(da, aShape), reshapeTo(db, bShape)];
}

/** dBias = Σ_rows dZ ([n]; dz holds rows of n). */
function biasGrad(dz: Tensor, n: number): Tensor {
  const device = dz.device;
  const out = Tensor.empty([n], device, dz.dtype);
  const rows = dz.size / n;
  device.batch.dispatch(
    { file: 'matmul', entry: 'bias_grad', dtype: dz.dtype },
    params([rows, n, 0, 0, 0, 0, 0, 0]),
    [dz.buffer],
    [out.buffer],
    [Math.ceil(n / 64), 1, 1],
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// Autotune (opt-in: explicit call, or GENALIGN_AUTOTUNE=1 to use cached winners).

export interface AutotuneResult {
  shapeClass: string;
  winner: string;
  gflops: Record<string, number>;
}

/**
 * Times every candidate variant (or those named in `only`) on a representative problem of
 * `shape`'s class (constant data, a warm-up then `reps` timed runs, wall clock around
 * device.sync()) and stores the fastest in the on-disk cache for this adapter. Variants that
 * fail to compile or run are skipped.
 */
export async function autotuneMatmul(device: Device, shape: MatmulShape, reps = 3, only?: readonly string[]): Promise<AutotuneResult> {
  const { batch, M, N, K, layout, dtype } = shape;
  const transA = layout[0] === 'T';
  const transB = layout[1] === 'T';
  const a = Tensor.empty(transA ? [batch, K, M] : [batch, M, K], device, dtype).keep();
  const b = Tensor.empty(transB ? [batch, N, K] : [batch, K, N], device, dtype).keep();
  const fill = (t: Tensor): void => {
    const n = dtype === 'f16' ? Math.ceil(t.size / 2) : t.size;
    const data = dtype === 'f16' ? new Uint32Array(n).fill(0x3c003c00) : new Float32Array(n).fill(0.5);
    device.batch.upload(t.buffer, data);
  };
  fill(a);
  fill(b);
  const gflops: Record<string, number> = {};
  try {
    for (const v of candidateVariants(device, dtype).filter((c) => !only || only.includes(c.name))) {
      try {
        const pl = plan('autotune', a, b, transA, transB, { a, b });
        const out = Tensor.empty(pl.outShape, device, dtype).keep();
        try {
          runVariant(v, a, b, pl, out, { bias: null, act: 'none', residual: null, pre: null });
          await device.sync();
          const t0 = performance.now();
          for (let i = 0; i < reps; i++) runVariant(v, a, b, pl, out, { bias: null, act: 'none', residual: null, pre: null });
          await device.sync();
          const sec = (performance.now() - t0) / 1000 / reps;
          gflops[v.name] = (2 * batch * M * N * K) / sec / 1e9;
        } finally {
          out.dispose();
        }
      } catch {
        // Candidate not usable on this adapter; leave it out.
      }
    }
  } finally {
    a.dispose();
    b.dispose();
  }
  const ranked = Object.entries(gflops).sort((x, y) => y[1] - x[1]);
  if (ranked.length === 0) throw new Error(`autotuneMatmul: no variant ran for ${shapeClass(shape)} on ${device.adapter.name}`);
  const [winner, best] = ranked[0];
  storeTuned(device, shape, { variant: winner, gflops: Number(best.toPrecision(4)) });
  return { shapeClass: shapeClass(shape), winner, gflops };
}

/** One representative shape per class matmul has run in this process, in first-seen order. */
export function seenMatmulShapes(): MatmulShape[] {
  return [...seen.values()];
}

/** Autotunes every shape class matmul has seen so far in this process (e.g. after step 1). */
export async function autotuneSeen(device: Device, reps = 3, only?: readonly string[]): Promise<AutotuneResult[]> {
  const results: AutotuneResult[] = [];
  for (const shape of seen.values()) results.push(await autotuneMatmul(device, shape, reps, only));
  return results;
}
