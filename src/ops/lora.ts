// Fused LoRA projection (kernels/lora.wgsl + the matmul kernels), forward and backward.
//
//   y = act(x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ) + residual,   W [N, K] and b frozen, A [r, K], B [N, r]
//
// Forward: one row pass u = s·x·Aᵀ [rows, r] (lowrank_proj), then ONE matmul x·Wᵀ with the
// bias/activation/residual epilogue and u·Bᵀ as its low-rank addend (r FMAs per output, added to
// the register block before the store).
// Backward: dz = dy ⊙ act'(z); one row pass du = s·dz·B; dx = dz·W + du·A is ONE matmul (addend
// du·A); dA = duᵀ·x and dB = dzᵀ·u are skinny reductions over rows, both in one dispatch
// (lowrank_grad: row chunks in parallel, then a fixed-order sum of the chunk partials). dW and
// db are never computed (the weight must be frozen), and no operand is copied or packed.
// The two matmuls are fusedMatmul (src/ops/matmul.ts) with a low-rank addend; the activation's
// backward is activationBackward (src/ops/activation.ts).
//
// Dtypes. x, W, b and residual share one dtype, f32 or f16 (mixed precision: frozen f16 base
// weights, f16 activations); y and dx have that dtype. A and B are always f32 (the trained
// master parameters), and dA, dB are f32. The rank-r kernels read A and B in f32 and accumulate
// every sum (u, du, and dA, dB over all rows) in f32; u and du are stored in x's dtype because the
// matmul's low-rank addend reads its operands in the product's dtype, which is also why f16 runs
// make f16 copies of B (forward) and A (dx) for the addend, r·(N + K) elements. So in f16 the
// gradients of the masters see f16 roundings only of x, dz, u and du (one each), never an f16
// accumulation or an f16 store of dA / dB. Other combinations are refused by name.
import { Tensor } from '../tensor/tensor.ts';
import { record, isGradEnabled, noGrad } from '../tensor/autograd.ts';
import { params, checkInputs, grid1d, shapeError, unusedOutput, F32_F16 } from './util.ts';
import { fusedMatmul } from './matmul.ts';
import { toF16 } from './cast.ts';
import { activationBackward, type Activation } from './activation.ts';

/** Kernels are blocked for device.blockingClass (see rankProject and lowRankGrads). */
function isCpu(device: Tensor['device']): boolean {
  return device.blockingClass === 'cpu';
}

/** s·x·lrᵀ: [rows, r] in x's dtype (summed in f32). lr (f32) is A [r, K], or B [K, r] with lrT. */
function rankProject(x2: Tensor, lr: Tensor, r: number, s: number, lrT: boolean): Tensor {
  const device = x2.device;
  const [rows, k] = x2.shape;
  const u = Tensor.empty([rows, r], device, x2.dtype);
  if (rows === 0) return u;
  // CPU adapters (llvmpipe: a workgroup of 8 is one SIMD vector, and every load is a gather)
  // want few lanes and many rows per factor load; GPUs want wide workgroups along K.
  const cpu = isCpu(device);
  const tpr = cpu ? 8 : 64;
  const rb = cpu ? 8 : 4;
  const groups = Math.ceil(rows / rb);
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.ceil(groups / max);
  device.batch.dispatch(
    { file: 'lora', entry: 'lowrank_proj', dtype: x2.dtype, overrides: { RANK: r, TPR: tpr, RB: rb, LR_T: lrT ? 1 : 0 } },
    params([rows, k, r, 0], [s]),
    [x2.buffer, lr.buffer],
    [u.buffer],
    [Math.ceil(groups / gy), gy, 1],
  );
  return u;
}

const GRAD_WG = 64; // invocations per lowrank_grad workgroup
const GRAD_CB_CPU = 4; // columns per invocation on CPU adapters (1 on GPUs)
const GRAD_ROWS = 32; // rows per chunk (the granule)
const GRAD_MAX_CHUNKS = 512; // cap on row chunks (partials memory, length of the summing loop)

/**
 * The rank-r gradients as skinny reductions over rows, in one dispatch (plus one summing the row
 * chunks' partials in a fixed order): dA = duᵀ·x [r, K] (when `a` is given) and dB = dzᵀ·u
 * [N, r] (when `b` is given). x, du, dz, u share one dtype; dA and dB are f32 (summed in f32).
 */
function lowRankGrads(rows: number, r: number, a: { x: Tensor; du: Tensor } | null, b: { dz: Tensor; u: Tensor } | null): [Tensor | null, Tensor | null] {
  const device = (a?.x ?? b!.dz).device;
  const dtype = (a?.x ?? b!.dz).dtype;
  const cols0 = a ? a.x.shape[1] : 0;
  const cols1 = b ? b.dz.shape[1] : 0;
  const dA = a ? Tensor.empty([r, cols0], device) : null;
  const dB = b ? Tensor.empty([cols1, r], device) : null;
  const granules = Math.max(1, Math.ceil(rows / GRAD_ROWS));
  const span = GRAD_ROWS * Math.ceil(granules / GRAD_MAX_CHUNKS);
  const chunks = Math.max(1, Math.ceil(rows / span));
  const cb = isCpu(device) ? GRAD_CB_CPU : 1;
  const colGroups = Math.ceil(Math.max(cols0, cols1) / (GRAD_WG * cb));
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (colGroups > max) throw new Error(`loraLinear: ${Math.max(cols0, cols1)} features exceed the ${max * GRAD_WG * cb} supported by the rank-r gradient kernel`);
  const p = params([rows, cols0, cols1, span, chunks, a ? 0 : 1]);
  const ov = { RANK: r, GWG: GRAD_WG, CB: cb };
  const grad = { file: 'lora', entry: 'lowrank_grad', dtype, overrides: ov };
  // Absent operands bind a present one (read-only aliases are fine); an absent output is never
  // written (its problem has no workgroups and no columns) and binds the unused-output buffer.
  const any = (a?.x ?? b!.dz).buffer;
  const ins = [a?.x.buffer ?? any, a?.du.buffer ?? any, b?.dz.buffer ?? any, b?.u.buffer ?? any];
  const problems = (a ? 1 : 0) + (b ? 1 : 0);
  const res0 = dA ? dA.buffer : unusedOutput(device);
  const res1 = dB ? dB.buffer : unusedOutput(device);
  if (chunks === 1) {
    device.batch.dispatch(grad, p, ins, [res0, res1], [colGroups, 1, problems]);
  } else {
    const part = Tensor.empty([chunks, r, cols0 + cols1], device);
    device.batch.dispatch(grad, p, ins, [part.buffer, res1], [colGroups, chunks, problems]);
    device.batch.dispatch({ file: 'lora', entry: 'lowrank_grad_sum', dtype, overrides: { RANK: r } }, p, [part.buffer], [res0, res1], grid1d(device, r * (cols0 + cols1), 256));
    part.dispose();
  }
  return [dA, dB];
}

/**
 * LoRA-adapted nn.Linear: act(x·Wᵀ + bias + scaling·(x·Aᵀ)·Bᵀ) + residual.
 * x [..., K]; weight [N, K] (frozen); bias [N] (frozen) or undefined; loraA [r, K]; loraB [N, r].
 * x, weight, bias, residual: one dtype, f32 or f16 (the output's); loraA, loraB: f32.
 */
export function loraLinear(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  loraA: Tensor,
  loraB: Tensor,
  scaling: number,
  activation: Activation = 'none',
  residual?: Tensor,
): Tensor {
  const op = 'loraLinear';
  const named: Record<string, Tensor> = { x, weight, loraA, loraB };
  if (bias) named.bias = bias;
  if (residual) named.residual = residual;
  const device = checkInputs(op, named, F32_F16);
  const dtype = x.dtype;
  for (const [name, t] of Object.entries(named)) {
    if (name === 'loraA' || name === 'loraB') {
      if (t.dtype !== 'f32') throw new Error(`${op}: argument '${name}' (${t.describe()}) is ${t.dtype}, but the LoRA factors are f32 master parameters (x, weight, bias and residual may be f16); convert it with toF32`);
    } else if (t.dtype !== dtype) {
      throw new Error(`${op}: argument '${name}' (${t.describe()}) is ${t.dtype} but x is ${dtype}; x, weight, bias and residual must share one dtype (f32, or f16 with f32 loraA / loraB); convert it with ${dtype === 'f16' ? 'toF16' : 'toF32'}`);
    }
  }
  if (weight.shape.length !== 2) throw shapeError(op, 'weight must be [out_features, in_features]', named);
  const [n, k] = weight.shape;
  if (x.shape.length < 2 || x.shape[x.shape.length - 1] !== k) throw shapeError(op, `x must be [..., ${k}] (in_features)`, named);
  if (loraA.shape.length !== 2 || loraA.shape[1] !== k) throw shapeError(op, `loraA must be [r, ${k}]`, named);
  const r = loraA.shape[0];
  if (loraB.shape.length !== 2 || loraB.shape[0] !== n || loraB.shape[1] !== r) throw shapeError(op, `loraB must be [${n}, ${r}] (out_features, r)`, named);
  if (weight.requiresGrad || bias?.requiresGrad) throw new Error(`${op}: the base weight and bias must be frozen (requiresGrad false); use linear() to train them`);
  if (!Number.isFinite(scaling)) throw new Error(`${op}: scaling must be a finite number, got ${scaling}`);

  const rows = x.size / k;
  const lead = x.shape.slice(0, -1);
  const outShape = [...lead, n];
  if (residual && residual.shape.join(',') !== outShape.join(',')) throw shapeError(op, `residual must be [${outShape.join(', ')}]`, named);
  const x2 = x.view([rows, k], false);
  const res2 = residual ? residual.view([rows, n], false) : null;
  const su = rankProject(x2, loraA, r, scaling, false);
  const inputs = [x, loraA, loraB, ...(residual ? [residual] : [])];
  const tracking = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  const pre = tracking && activation !== 'none' ? Tensor.empty([rows, n], device, dtype) : null;
  // The addend's second factor in the product's dtype (see the header).
  const bAddend = dtype === 'f32' ? loraB : noGrad(() => toF16(loraB));
  const y2 = fusedMatmul(x2, weight, {
    transB: true,
    bias,
    activation,
    ...(res2 ? { residual: res2 } : {}),
    ...(pre ? { saveZ: pre } : {}),
    lowRank: { u: su, v: bAddend, vT: false },
  });
  if (bAddend !== loraB) bAddend.dispose();
  res2?.dispose();
  const out = y2.view(outShape);
  y2.dispose();
  if (!tracking) {
    x2.dispose();
    su.dispose();
    return out;
  }
  const hasRes = !!residual;
  const saved = [x2, su, weight, loraA, loraB, ...(pre ? [pre] : [])];
  const result = record(op, inputs, out, saved, (g, s, needs) => {
    const [sx, ssu, sw, sa, sb] = s;
    if (g.dtype !== dtype) throw new Error(`${op}: the gradient of the output is ${g.dtype}, the output is ${dtype}; pass a ${dtype} gradOutput to backward()`);
    const g2 = g.view([rows, n], false);
    const dz = pre && activation !== 'none' ? activationBackward(g2, s[5], activation) : g2;
    // du = s·dz·B ([N, r] read transposed as the [K, r] factor of the row pass).
    const du = needs[0] || needs[1] ? rankProject(dz, sb, r, scaling, true) : null;
    let dx: Tensor | null = null;
    if (du && needs[0]) {
      // dx = dz·W + du·A: W [N, K] is the NN right operand, A [r, K] the addend's [r, K] factor.
      const aAddend = dtype === 'f32' ? sa : toF16(sa);
      const dx2 = fusedMatmul(dz, sw, { lowRank: { u: du, v: aAddend, vT: true } });
      if (aAddend !== sa) aAddend.dispose();
      dx = dx2.view(x.shape);
      dx2.dispose();
    }
    const [dA, dB] = needs[1] || needs[2] ? lowRankGrads(rows, r, du && needs[1] ? { x: sx, du } : null, needs[2] ? { dz, u: ssu } : null) : [null, null];
    du?.dispose();
    const grads: (Tensor | null)[] = [dx, dA, dB];
    if (hasRes) grads.push(needs[3] ? g.view() : null);
    if (dz !== g2) dz.dispose();
    g2.dispose();
    return grads;
  });
  x2.dispose();
  su.dispose();
  pre?.dispose();
  return result;
}

/** The rank-r kernels on their own (profiling scripts and benches; loraLinear is the API). */
export const loraPieces = { rankProject, lowRankGrads };
