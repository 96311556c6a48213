// Fused gen->real InfoNCE loss, GMAIL Eq. 1 (kernels/infonce.wgsl), with backward.
//
// One op instead of normalize -> matmul -> cross-entropy: 2 dispatches forward (tiled S with
// per-tile softmax partials, then a merge; symmetric and the cosine term included), 1 backward (a
// tiled dS.R product with the normalisation projection in its epilogue; 2 with a learnable
// temperature). The optional cosine term's diagonal cosines come from the same tiles.
// On CPU adapters with 8-wide subgroups the tile kernels come from kernels/infonce_sg.wgsl.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import type { Device } from '../gpu/device.ts';
import { checkInputs, params, shapeError } from './util.ts';

const KERNEL = 'infonce';
const KERNEL_SG = 'infonce_sg';
/** Norm clamp, as in F.normalize's default. */
const EPS = 1e-12;
const FLAG_LEARNABLE = 1;
const FLAG_SYMMETRIC = 2;
const FLAG_COSINE = 4;

export interface InfoNceOptions {
  /** Fixed temperature (default 0.07). Not allowed together with logTau. */
  tau?: number;
  /** Learnable temperature: a scalar Parameter holding log(tau). Gets a gradient. */
  logTau?: Tensor;
  /** Also add the real->gen direction (CLIP's symmetric loss); needs M == B. */
  symmetric?: boolean;
  /**
   * Weight λ of an absolute alignment term added to the loss: λ · mean_i(1 − cos(g_i, r_i)),
   * the pairs' own cosines (row i of g with row i of r). Default 0: GMAIL's loss alone.
   */
  cosineWeight?: number;
}

export interface InfoNceResult {
  /** Scalar [] loss, differentiable w.r.t. g (and logTau). */
  loss: Tensor;
  /** Scalar [] top-1 accuracy: the fraction of rows i whose best column is i. Not differentiable. */
  accuracy: Tensor;
  /**
   * With cosineWeight > 0: [2] (InfoNCE, mean_i(1 − cos(g_i, r_i))), the loss's two terms
   * (loss = terms[0] + cosineWeight · terms[1]). Not differentiable. Absent otherwise.
   */
  terms?: Tensor;
}

/** Workgroup size covering the longest loop (B or M) without idle invocations on tiny shapes. */
function workgroupFor(n: number): { WG: number } | undefined {
  const wg = Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
  return wg === 256 ? undefined : { WG: wg };
}

/** How the two tile kernels run: entry names, overrides, and tile extents (rows x columns). */
interface TilePlan {
  file: string;
  fwd: string;
  bwd: string;
  overrides: Record<string, number> | undefined;
  rows: number;
  cols: number;
}

/**
 * Tile plan for an output of `rows x cols`: the subgroup-broadcast kernels (16 x 128 tiles) on
 * CPU adapters with 8-wide subgroups, else the workgroup-memory kernels with 64 x 64 tiles
 * (4 x 4 per invocation), or 32 x 32 (2 x 2) when 64 x 64 tiles would leave fewer than 128
 * workgroups. device.settings.blockingClass = 'gpu' makes a CPU adapter run the GPU kernels.
 */
function tilePlan(device: Device, rows: number, cols: number): TilePlan {
  if (device.blockingClass === 'cpu' && device.fixedSubgroupSize === 8) return { file: KERNEL_SG, fwd: 'fwd_tile_sg', bwd: 'bwd_tile_sg', overrides: undefined, rows: 16, cols: 128 };
  const big = Math.ceil(rows / 64) * Math.ceil(cols / 64) >= 128;
  return big
    ? { file: KERNEL, fwd: 'fwd_tile', bwd: 'bwd_tile', overrides: undefined, rows: 64, cols: 64 }
    : { file: KERNEL, fwd: 'fwd_tile', bwd: 'bwd_tile', overrides: { TM: 2, TN: 2 }, rows: 32, cols: 32 };
}

function tileGrid(device: Device, tp: TilePlan, rows: number, cols: number): [number, number, number] {
  const x = Math.ceil(cols / tp.cols);
  const y = Math.ceil(rows / tp.rows);
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (x > max || y > max) throw new Error(`infoNceGenToReal: ${rows}x${cols} needs more than ${max} tiles per dimension`);
  return [x, y, 1];
}

/**
 * GMAIL's gen->real contrastive loss. g: student embeddings [B, D]; r: teacher embeddings
 * [M, D] with M >= B, where rows B.. of r are extra negatives (e.g. a cached teacher batch);
 * the positive for row i is column i. Both are L2-normalised inside the kernel and
 * S = ĝ r̂ᵀ / tau; loss = mean_i -log softmax_j(S_ij)[i], plus cosineWeight · mean_i(1 − ĝ_i·r̂_i)
 * when cosineWeight > 0.
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
  const cosineWeight = opts.cosineWeight ?? 0;
  if (typeof cosineWeight !== 'number' || !Number.isFinite(cosineWeight) || cosineWeight < 0) {
    throw new Error(`${op}: cosineWeight must be a finite number >= 0 (0 = no cosine term), got ${String(cosineWeight)}`);
  }
  const cosine = cosineWeight > 0;

  const flags = (logTau ? FLAG_LEARNABLE : 0) | (symmetric ? FLAG_SYMMETRIC : 0) | (cosine ? FLAG_COSINE : 0);
  const fp = tilePlan(device, b, m);
  const ntc = Math.ceil(m / fp.cols);
  const ntr = Math.ceil(b / fp.rows);
  const u = params([b, m, d, flags, ntc, ntr], [EPS, 1 / tau, cosineWeight]);
  // When tau is fixed the logtau binding is unused; g stands in for it.
  const tauBuf = logTau ? logTau.buffer : g.buffer;

  const s = Tensor.empty([b, m], device);
  const stats = Tensor.empty([4 * b + 3 * m + (cosine ? b : 0)], device);
  const part = Tensor.empty([3 * b * ntc + 2 * m * ntr], device);
  const loss = Tensor.empty([], device);
  const accuracy = Tensor.empty([], device);
  const terms = cosine ? Tensor.empty([2], device) : undefined;
  device.batch.dispatch({ file: fp.file, entry: fp.fwd, overrides: fp.overrides }, u, [g.buffer, r.buffer, tauBuf], [s.buffer, part.buffer, stats.buffer], tileGrid(device, fp, b, m));
  const merged = [stats.buffer, loss.buffer, accuracy.buffer, ...(terms ? [terms.buffer] : [])];
  device.batch.dispatch({ file: KERNEL, entry: terms ? 'fwd_merge_cosine' : 'fwd_merge', overrides: workgroupFor(Math.max(b, m)) }, u, [part.buffer, s.buffer], merged, [1]);
  part.dispose();

  const gradG = g.requiresGrad;
  const gradTau = logTau !== undefined && logTau.requiresGrad;
  const inputs = logTau ? [g, logTau] : [g];
  const saved = logTau ? [g, r, s, stats, logTau] : [g, r, s, stats];
  const out = record(op, inputs, loss, saved, (gl, [sg, sr, ss, sst, slt]) => {
    const dev = gl.device;
    const bp = tilePlan(dev, b, d);
    const dg = Tensor.empty(sg.shape, dev);
    const dtRows = Tensor.empty([b], dev);
    const tb = slt ? slt.buffer : sg.buffer;
    dev.batch.dispatch({ file: bp.file, entry: bp.bwd, overrides: bp.overrides }, u, [sg.buffer, sr.buffer, ss.buffer, sst.buffer, tb, gl.buffer], [dg.buffer, dtRows.buffer], tileGrid(dev, bp, b, d));
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
  return terms ? { loss: out, accuracy, terms } : { loss: out, accuracy };
}
