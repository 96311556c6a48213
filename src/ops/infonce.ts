// Fused gen->real InfoNCE loss, GMAIL Eq. 1 (kernels/infonce.wgsl), with backward.
//
// One op instead of normalize -> matmul -> cross-entropy: 2 dispatches forward (3 when
// symmetric), 1 backward (2 with a learnable temperature), for B, M, D in the thousands.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, grid1d, params, shapeError } from './util.ts';

const KERNEL = 'infonce';
/** Norm clamp, as in F.normalize's default. */
const EPS = 1e-12;
const FLAG_LEARNABLE = 1;
const FLAG_SYMMETRIC = 2;

export interface InfoNceOptions {
  /** Fixed temperature (default 0.07). Not allowed together with logTau. */
  tau?: number;
  /** Learnable temperature: a scalar Parameter holding log(tau). Gets a gradient. */
  logTau?: Tensor;
  /** Also add the real->gen direction (CLIP's symmetric loss); needs M == B. */
  symmetric?: boolean;
}

export interface InfoNceResult {
  /** Scalar [] loss, differentiable w.r.t. g (and logTau). */
  loss: Tensor;
  /** Scalar [] top-1 accuracy: the fraction of rows i whose best column is i. Not differentiable. */
  accuracy: Tensor;
}

/** Workgroup size covering the longest loop (D or M) without idle invocations on tiny shapes. */
function workgroupFor(n: number): { WG: number } | undefined {
  const wg = Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
  return wg === 256 ? undefined : { WG: wg };
}

/**
 * GMAIL's gen->real contrastive loss. g: student embeddings [B, D]; r: teacher embeddings
 * [M, D] with M >= B, where rows B.. of r are extra negatives (e.g. a cached teacher batch);
 * the positive for row i is column i. Both are L2-normalised inside the kernel and
 * S = ĝ r̂ᵀ / tau; loss = mean_i -log softmax_j(S_ij)[i].
 *
 * The teacher is frozen: r is treated as a constant and gets NO gradient, even when it
 * requires grad (only g and logTau are recorded as differentiable inputs).
 */
export function infoNceGenToReal(g: Tensor, r: Tensor, opts: InfoNceOptions = {}): InfoNceResult {
  const op = 'infoNceGenToReal';
  const { logTau, symmetric = false } = opts;
  const device = logTau ? checkInputs(op, { g, r, logTau }) : checkInputs(op, { g, r });
  if (g.shape.length !== 2 || r.shape.length !== 2) throw shapeError(op, 'g must be [B, D] and r must be [M, D]', { g, r });
  const [b, d] = g.shape;
  const m = r.shape[0];
  if (r.shape[1] !== d) throw shapeError(op, `g and r must have the same embedding dim (${d} vs ${r.shape[1]})`, { g, r });
  if (b === 0 || d === 0) throw shapeError(op, 'g must have at least one row and one column', { g, r });
  if (m < b) throw shapeError(op, `r needs at least as many rows as g (M >= B; row i of r is the positive for row i of g), got M=${m} < B=${b}`, { g, r });
  if (symmetric && m !== b) throw shapeError(op, `symmetric: true needs M == B (the real->gen direction has no positives for the ${m - b} extra rows of r)`, { g, r });
  if (logTau && opts.tau !== undefined) throw new Error(`${op}: pass either tau (fixed) or logTau (learnable), not both`);
  if (logTau && logTau.size !== 1) throw shapeError(op, 'logTau must be a scalar (one element) holding log(tau)', { logTau });
  const tau = opts.tau ?? 0.07;
  if (!(tau > 0) || !Number.isFinite(tau)) throw new Error(`${op}: tau must be a positive finite number, got ${tau}`);

  const flags = (logTau ? FLAG_LEARNABLE : 0) | (symmetric ? FLAG_SYMMETRIC : 0);
  const u = params([b, m, d, flags], [EPS, 1 / tau]);
  const overrides = workgroupFor(Math.max(d, m));
  const reduceOverrides = workgroupFor(Math.max(b, m));
  // When tau is fixed the logtau binding is unused; g stands in for it.
  const tauBuf = logTau ? logTau.buffer : g.buffer;

  const s = Tensor.empty([b, m], device);
  const stats = Tensor.empty([4 * b + 3 * m], device);
  const loss = Tensor.empty([], device);
  const accuracy = Tensor.empty([], device);
  device.batch.dispatch({ file: KERNEL, entry: 'forward_rows', overrides }, u, [g.buffer, r.buffer, tauBuf], [s.buffer, stats.buffer], grid1d(device, b, 1));
  if (symmetric) {
    device.batch.dispatch({ file: KERNEL, entry: 'forward_cols', overrides: workgroupFor(b) }, u, [s.buffer], [stats.buffer], grid1d(device, m, 1));
  }
  device.batch.dispatch({ file: KERNEL, entry: 'reduce_forward', overrides: reduceOverrides }, u, [stats.buffer], [loss.buffer, accuracy.buffer], [1]);

  const gradG = g.requiresGrad;
  const gradTau = logTau !== undefined && logTau.requiresGrad;
  const inputs = logTau ? [g, logTau] : [g];
  const saved = logTau ? [g, r, s, stats, logTau] : [g, r, s, stats];
  const out = record(op, inputs, loss, saved, (gl, [sg, sr, ss, sst, slt]) => {
    const dev = gl.device;
    const dg = Tensor.empty(sg.shape, dev);
    const dtRows = Tensor.empty([b], dev);
    const tb = slt ? slt.buffer : sg.buffer;
    dev.batch.dispatch({ file: KERNEL, entry: 'backward_rows', overrides }, u, [sg.buffer, sr.buffer, ss.buffer, sst.buffer, tb, gl.buffer], [dg.buffer, dtRows.buffer], grid1d(dev, b, 1));
    let dLogTau: Tensor | null = null;
    if (gradTau) {
      dLogTau = Tensor.empty(slt.shape, dev);
      dev.batch.dispatch({ file: KERNEL, entry: 'reduce_dlogtau', overrides: workgroupFor(b) }, u, [dtRows.buffer], [dLogTau.buffer], [1]);
    }
    dtRows.dispose();
    const dG = gradG ? dg : null;
    if (!gradG) dg.dispose();
    return slt ? [dG, dLogTau] : [dG];
  });
  s.dispose();
  stats.dispose();
  return { loss: out, accuracy };
}
