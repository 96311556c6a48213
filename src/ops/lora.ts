// Fused LoRA projection (kernels/lora.wgsl + the matmul kernels), forward and backward.
//
//   y = act(x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ) + residual,   W [N, K] and b frozen, A [r, K], B [N, r]
//
// Forward: one row pass packs X' = [x | s·x·Aᵀ] (and keeps su = s·x·Aᵀ), one pass packs
// W' = [W | B], then ONE matmul X'·W'ᵀ with the bias/activation/residual epilogue.
// Backward: dz = dy ⊙ act'(z); one row pass packs [dz | du] with du = s·dz·B; the stacked
// [W ; A] is two buffer copies; dx is ONE matmul; dA = duᵀ·x and dB = dzᵀ·su are skinny
// reductions over rows (lowrank_grad: row chunks in parallel, then a fixed-order sum of the
// chunk partials). dW and db are never computed (the weight must be frozen).
import { Tensor } from '../tensor/tensor.ts';
import { record, isGradEnabled } from '../tensor/autograd.ts';
import { checkInputs, grid1d, params, shapeError } from './util.ts';
import { matmulRaw, mm, actGrad, matmulCaps, type Activation } from './matmul.ts';
import { adapterClass } from './matmul-select.ts';

const ROW_WG = 64;

/** [rows, K] → ([rows, K + r] = [x | s·x·lrᵀ], [rows, r] = s·x·lrᵀ). lr is A [r, K], or B [K, r] with lrT. */
function packRows(x2: Tensor, lr: Tensor, r: number, s: number, lrT: boolean): [Tensor, Tensor] {
  const device = x2.device;
  const [rows, k] = x2.shape;
  const packed = Tensor.empty([rows, k + r], device);
  const su = Tensor.empty([rows, r], device);
  // CPU adapters pay for every workgroup and barrier: 8 rows per workgroup there.
  const tpr = adapterClass(matmulCaps(device)) === 'cpu' ? 8 : ROW_WG;
  const groups = Math.ceil(rows / (ROW_WG / tpr));
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.ceil(groups / max);
  device.batch.dispatch(
    { file: 'lora', entry: 'pack_rows', overrides: { WG: ROW_WG, TPR: tpr, LR_T: lrT ? 1 : 0 } },
    params([rows, k, r, 0], [s]),
    [x2.buffer, lr.buffer],
    [packed.buffer, su.buffer],
    [Math.ceil(groups / gy), gy, 1],
  );
  return [packed, su];
}

/** [W | B]: [N, K + r]. */
function packCols(w: Tensor, b: Tensor): Tensor {
  const device = w.device;
  const [n, k] = w.shape;
  const r = b.shape[1];
  const out = Tensor.empty([n, k + r], device);
  device.batch.dispatch({ file: 'lora', entry: 'pack_cols' }, params([0, k, r, n], [0]), [w.buffer, b.buffer], [out.buffer], grid1d(device, out.size, 256));
  return out;
}

/** [W ; A]: [N + r, K] — row-major stacking is two contiguous copies. */
function stackRows(w: Tensor, a: Tensor): Tensor {
  const out = Tensor.empty([w.shape[0] + a.shape[0], w.shape[1]], w.device);
  w.device.batch.copy(w.buffer, 0, out.buffer, 0, w.byteLength);
  w.device.batch.copy(a.buffer, 0, out.buffer, w.byteLength, a.byteLength);
  return out;
}

const GRAD_WG = 64; // columns per lowrank_grad workgroup
const GRAD_ROWS = 32; // ROWS_PER_WG: rows per chunk (the granule)
const GRAD_MAX_CHUNKS = 512; // cap on row chunks (partials memory, length of the summing loop)

/**
 * Skinny reduction over rows: G[j, c] = Σ_m low[m, j]·big[m, c] for big [rows, C], low [rows, r],
 * returned as [r, C] (outT false) or [C, r] (outT true). Rows are split into chunks reduced in
 * parallel (lowrank_grad), then the chunk partials are summed in a fixed order (lowrank_grad_sum).
 */
function lowRankGrad(big: Tensor, low: Tensor, outT: boolean): Tensor {
  const device = big.device;
  const [rows, cols] = big.shape;
  const r = low.shape[1];
  const out = Tensor.empty(outT ? [cols, r] : [r, cols], device);
  const granules = Math.max(1, Math.ceil(rows / GRAD_ROWS));
  const span = GRAD_ROWS * Math.ceil(granules / GRAD_MAX_CHUNKS);
  const chunks = Math.max(1, Math.ceil(rows / span));
  const colGroups = Math.ceil(cols / GRAD_WG);
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (colGroups > max) throw new Error(`loraLinear: ${cols} features exceed the ${max * GRAD_WG} supported by the rank-r gradient kernel`);
  const p = params([rows, cols, r, span, chunks]);
  const ov = { GWG: GRAD_WG, ROWS_PER_WG: GRAD_ROWS, OUT_T: outT ? 1 : 0 };
  if (chunks === 1) {
    device.batch.dispatch({ file: 'lora', entry: 'lowrank_grad', overrides: ov }, p, [big.buffer, low.buffer], [out.buffer], [colGroups, 1, 1]);
    return out;
  }
  const part = Tensor.empty([chunks, r, cols], device);
  device.batch.dispatch({ file: 'lora', entry: 'lowrank_grad', overrides: ov }, p, [big.buffer, low.buffer], [part.buffer], [colGroups, chunks, 1]);
  device.batch.dispatch({ file: 'lora', entry: 'lowrank_grad_sum', overrides: { OUT_T: outT ? 1 : 0 } }, p, [part.buffer], [out.buffer], grid1d(device, r * cols, 256));
  part.dispose();
  return out;
}

/**
 * LoRA-adapted nn.Linear: act(x·Wᵀ + bias + scaling·(x·Aᵀ)·Bᵀ) + residual.
 * x [..., K]; weight [N, K] (frozen); bias [N] (frozen) or undefined; loraA [r, K]; loraB [N, r].
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
  const device = checkInputs(op, named);
  if (weight.shape.length !== 2) throw shapeError(op, 'weight must be [out_features, in_features]', named);
  const [n, k] = weight.shape;
  if (x.shape.length < 2 || x.shape[x.shape.length - 1] !== k) throw shapeError(op, `x must be [..., ${k}] (in_features)`, named);
  if (loraA.shape.length !== 2 || loraA.shape[1] !== k) throw shapeError(op, `loraA must be [r, ${k}]`, named);
  const r = loraA.shape[0];
  if (loraB.shape.length !== 2 || loraB.shape[0] !== n || loraB.shape[1] !== r) throw shapeError(op, `loraB must be [${n}, ${r}] (out_features, r)`, named);
  if (weight.requiresGrad || bias?.requiresGrad) throw new Error(`${op}: the base weight and bias must be frozen (requiresGrad false); use linear() to train them`);
  if (!Number.isFinite(scaling)) throw new Error(`${op}: scaling must be a finite number, got ${scaling}`);
  for (const t of Object.values(named)) if (t.dtype !== 'f32') throw shapeError(op, 'all tensors must be f32', named);

  const rows = x.size / k;
  const lead = x.shape.slice(0, -1);
  const outShape = [...lead, n];
  if (residual && residual.shape.join(',') !== outShape.join(',')) throw shapeError(op, `residual must be [${outShape.join(', ')}]`, named);
  const x2 = x.view([rows, k], false);
  const res2 = residual ? residual.view([rows, n], false) : null;
  const [xp, su] = packRows(x2, loraA, r, scaling, false);
  const wp = packCols(weight, loraB);
  const inputs = [x, loraA, loraB, ...(residual ? [residual] : [])];
  const tracking = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  const pre = tracking && activation !== 'none' ? Tensor.empty([rows, n], device) : null;
  const y2 = matmulRaw(xp, wp, { transB: true, bias: bias ?? null, act: activation, residual: res2, pre });
  xp.dispose();
  wp.dispose();
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
    const g2 = g.view([rows, n], false);
    const dz = pre ? actGrad(g2, s[5], activation) : g2;
    // [dz | du], du = s·dz·B ([N, r] read transposed as the [K, r] factor of the row pass).
    const [dzp, du] = packRows(dz, sb, r, scaling, true);
    let dx: Tensor | null = null;
    if (needs[0]) {
      const wa = stackRows(sw, sa);
      const dx2 = mm(dzp, wa, false, false);
      wa.dispose();
      dx = dx2.view(x.shape);
      dx2.dispose();
    }
    const dA = needs[1] ? lowRankGrad(sx, du, false) : null; // duᵀ·x [r, K]
    const dB = needs[2] ? lowRankGrad(dz, ssu, true) : null; // dzᵀ·su [N, r]
    dzp.dispose();
    du.dispose();
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
