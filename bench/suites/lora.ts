// LoRA bench: the fused loraLinear (src/ops/lora.ts) against the plain linear it adapts, at a
// ViT-B/32 q/k/v/out projection: x [R, 768], W [768, 768] frozen, bias [768] frozen, rank r = 4
// (A [4, 768], B [768, 4]), scaling 1. R = 1600 tokens (batch 32).
//
// Rows, forward and forward + backward (dy a fixed input):
//   linear 'plain':  linear(x, W, b); backward with x requiring grad only (returns dx);
//   lora-linear:     loraLinear(x, W, b, A, B, s); backward with x, A and B requiring grad
//                    (returns dx, dA, dB). Two rows: peer = genalign's unfused composition
//                    linear(x, W, b) + scale(linear(linear(x, A), B), s) ('genalign-composed'),
//                    and peer = tfjs composing the same (fwd+bwd: tf.grads for x, A, B).
// extra.lora_over_plain = lora ms / plain ms of the same pass in this run (the target: ≤ ~1.1);
// extra.paired_over_plain = the same ratio with plain and LoRA timed alternately, rep by rep (the
// median of per-rep ratios: robust to the host's slow drifts; read this one on a shared machine);
// on the fwd+bwd row, extra.bwd_over_plain = (lora fwd+bwd − lora fwd) / (plain fwd+bwd − plain fwd),
// the backward alone, with each LoRA time taken as plain ms × paired_over_plain (a difference of
// two measurements, so noisier than either ratio).
//
// max_abs_err: host float64 with W' = W + s·B·A on 256 sampled outputs (dx: 256 sampled
// entries; dA and dB: all entries).
// GFLOP/s counts the dense work 2·R·768·768 per product (fwd: 1 product, fwd+bwd: 2, dx being
// the second) plus the rank-r products of the LoRA path, so plain and LoRA rows compare directly.
import { loraLinear } from '../../src/ops/lora.ts';
import { add, linear, scale } from '../../src/ops/index.ts';
import { scope, type Tensor } from '../../src/tensor/tensor.ts';
import { forwardBackward, uniform, type BenchCase, type HostTensor, type Row, type Suite } from '../harness.ts';
import type { Peer, PeerTensor } from '../peer-tfjs.ts';

const SAMPLES = 256;
const SCALING = 1;

interface Dims {
  rows: number;
  k: number;
  n: number;
  r: number;
}

function worst(acc: number, d: number): number {
  return d <= acc ? acc : Number.isNaN(d) ? Infinity : d;
}

/** Evenly strided sample indices over [0, total). */
function samples(total: number): number[] {
  const count = Math.min(SAMPLES, total);
  return Array.from({ length: count }, (_, s) => (count === total ? s : Math.floor((s * (total - 1)) / (count - 1))));
}

/** W' = W + s·B·A as float64 [n, k] (B zero for the plain rows). */
function mergedWeight(d: Dims, w: Float32Array, a: Float32Array | null, b: Float32Array | null): Float64Array {
  const out = Float64Array.from(w);
  if (!a || !b) return out;
  for (let j = 0; j < d.n; j++) for (let q = 0; q < d.r; q++) {
    const bj = SCALING * b[j * d.r + q];
    for (let kk = 0; kk < d.k; kk++) out[j * d.k + kk] += bj * a[q * d.k + kk];
  }
  return out;
}

/**
 * Host check. Inputs: x, W, bias, dy[, A, B]. Output layout: forward y [rows, n]; fwd+bwd
 * dx [rows, k] then (LoRA) dA [r, k] and dB [n, r].
 */
function hostErr(d: Dims, lora: boolean, backwardToo: boolean, out: Float32Array, [x, w, bias, dy, a, b]: HostTensor[]): number {
  const { rows, k, n, r } = d;
  const wp = mergedWeight(d, w.data, lora ? a.data : null, lora ? b.data : null);
  let err = 0;
  if (!backwardToo) {
    for (const idx of samples(rows * n)) {
      const i = Math.floor(idx / n);
      const j = idx % n;
      let acc = bias.data[j];
      for (let kk = 0; kk < k; kk++) acc += x.data[i * k + kk] * wp[j * k + kk];
      err = worst(err, Math.abs(out[idx] - acc));
    }
    return err;
  }
  for (const idx of samples(rows * k)) {
    const i = Math.floor(idx / k);
    const kk = idx % k;
    let acc = 0;
    for (let j = 0; j < n; j++) acc += dy.data[i * n + j] * wp[j * k + kk];
    err = worst(err, Math.abs(out[idx] - acc));
  }
  if (!lora) return err;
  // u = s·dy·B [rows, r]; xa = x·Aᵀ [rows, r]; dA = uᵀ·x; dB = s·dyᵀ·xa.
  const u = new Float64Array(rows * r);
  const xa = new Float64Array(rows * r);
  for (let i = 0; i < rows; i++) for (let q = 0; q < r; q++) {
    let su = 0;
    for (let j = 0; j < n; j++) su += dy.data[i * n + j] * b.data[j * r + q];
    u[i * r + q] = SCALING * su;
    let sx = 0;
    for (let kk = 0; kk < k; kk++) sx += x.data[i * k + kk] * a.data[q * k + kk];
    xa[i * r + q] = sx;
  }
  const offA = rows * k;
  for (let q = 0; q < r; q++) for (let kk = 0; kk < k; kk++) {
    let acc = 0;
    for (let i = 0; i < rows; i++) acc += u[i * r + q] * x.data[i * k + kk];
    err = worst(err, Math.abs(out[offA + q * k + kk] - acc));
  }
  const offB = offA + r * k;
  for (let j = 0; j < n; j++) for (let q = 0; q < r; q++) {
    let acc = 0;
    for (let i = 0; i < rows; i++) acc += dy.data[i * n + j] * xa[i * r + q];
    err = worst(err, Math.abs(out[offB + j * r + q] - SCALING * acc));
  }
  return err;
}

function composedLora(x: Tensor, w: Tensor, bias: Tensor, a: Tensor, b: Tensor): Tensor {
  return scope(() => add(linear(x, w, bias), scale(linear(linear(x, a), b), SCALING)));
}

function loraCases(label: string, d: Dims): BenchCase[] {
  const { rows, k, n, r } = d;
  const dense = 2 * rows * k * n;
  // Rank-r work of the LoRA path: x·Aᵀ and (·)·Bᵀ forward; dy·B, dx's r-column part, dA and dB backward.
  const lowRank = 2 * rows * r * (k + n);
  const inputs = (): HostTensor[] => [
    { shape: [rows, k], data: uniform(rows * k, 41 + rows) },
    // nn.Linear-like scale 1/√k keeps y O(1).
    { shape: [n, k], data: uniform(n * k, 43, 1 / Math.sqrt(k)) },
    { shape: [n], data: uniform(n, 47, 0.1) },
    { shape: [rows, n], data: uniform(rows * n, 53 + rows) },
    { shape: [r, k], data: uniform(r * k, 59, 1 / Math.sqrt(k)) },
    // B is non-zero (a trained adapter), so the check sees the LoRA term.
    { shape: [n, r], data: uniform(n * r, 61, 0.5) },
  ];
  const cases: BenchCase[] = [];
  for (const backwardToo of [false, true]) {
    const pass = backwardToo ? 'fwd+bwd' : 'fwd';
    const plainRun = backwardToo
      ? (t: Tensor[]) => forwardBackward(t, [true], ([x, w, bias]) => linear(x, w, bias), t[3])
      : ([x, w, bias]: Tensor[]) => linear(x, w, bias);
    const shape = `${pass} ${label} x[${rows},${k}] W[${n},${k}] r=${r}`;
    cases.push({
      kernel: 'linear',
      variant: 'plain',
      shape,
      dtype: 'f32',
      flops: dense * (backwardToo ? 2 : 1),
      inputs,
      run: plainRun,
      check: { reference: `host f64 on ${SAMPLES} sampled outputs`, maxAbsErr: (out, host) => hostErr(d, false, backwardToo, out, host) },
    });
    cases.push({
      kernel: 'lora-linear',
      variant: 'fused',
      shape,
      dtype: 'f32',
      flops: dense * (backwardToo ? 2 : 1) + lowRank * (backwardToo ? 3 : 1),
      inputs,
      // Inputs: x, W, bias, dy, A, B; grads for x, A, B.
      run: backwardToo
        ? (t) => forwardBackward([t[0], t[4], t[5]], [true, true, true], ([x, a, b]) => loraLinear(x, t[1], t[2], a, b, SCALING), t[3])
        : ([x, w, bias, , a, b]) => loraLinear(x, w, bias, a, b, SCALING),
      composed: backwardToo
        ? (t) => forwardBackward([t[0], t[4], t[5]], [true, true, true], ([x, a, b]) => composedLora(x, t[1], t[2], a, b), t[3])
        : ([x, w, bias, , a, b]) => composedLora(x, w, bias, a, b),
      peerKind: 'composed',
      pairedBaseline: { name: 'paired_over_plain', run: plainRun },
      check: {
        reference: `host f64 with W + s·B·A (${SAMPLES} sampled outputs${backwardToo ? '/dx entries; all of dA, dB' : ''})`,
        maxAbsErr: (out, host) => hostErr(d, true, backwardToo, out, host),
      },
      derived: (row: Row, earlier: readonly Row[]): Record<string, number> => {
        const plain = earlier.find((e) => e.kernel === 'linear' && e.shape === shape);
        if (!plain) return {};
        const out: Record<string, number> = { lora_over_plain: row.ms / plain.ms };
        if (backwardToo) {
          // Backward alone: (fwd+bwd − fwd) of each op from this run's rows, each LoRA time taken
          // as plain ms × its paired ratio when there is one (drift-free), else its own ms.
          const fwdShape = shape.replace(/^fwd\+bwd /, 'fwd ');
          const plainF = earlier.find((e) => e.kernel === 'linear' && e.shape === fwdShape);
          const loraF = earlier.find((e) => e.kernel === 'lora-linear' && e.shape === fwdShape && e.peer !== null && !e.peer.startsWith('tfjs'));
          if (plainF && loraF && plain.ms > plainF.ms) {
            const loraFb = plain.ms * (row.extra?.paired_over_plain ?? row.ms / plain.ms);
            const loraFw = plainF.ms * (loraF.extra?.paired_over_plain ?? loraF.ms / plainF.ms);
            out.bwd_over_plain = (loraFb - loraFw) / (plain.ms - plainF.ms);
          }
        }
        return out;
      },
    });
    // The same op against tfjs composing it (fwd+bwd: tf.grads for x, A, B), as a second row.
    const loraRow = cases[cases.length - 1];
    cases.push({
      kernel: loraRow.kernel,
      variant: loraRow.variant,
      shape,
      dtype: 'f32',
      flops: loraRow.flops,
      inputs,
      run: loraRow.run,
      check: loraRow.check,
      ...(backwardToo
        ? { peer: (peer: Peer, [x, w, bias, dy, a, b]: PeerTensor[]) => peer.tf.tidy(() => peer.grads(([xx, aa, bb]) => tfjsLora(peer, xx, w, bias, aa, bb), [x, a, b], dy)), peerNeedsGradients: true }
        : { peer: (peer: Peer, [x, w, bias, , a, b]: PeerTensor[]) => peer.tf.tidy(() => tfjsLora(peer, x, w, bias, a, b)) }),
    });
  }
  return cases;
}

/** tfjs composing the LoRA projection: x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ. */
function tfjsLora(peer: Peer, x: PeerTensor, w: PeerTensor, bias: PeerTensor, a: PeerTensor, b: PeerTensor): PeerTensor {
  const tf = peer.tf;
  return tf.add(tf.add(tf.matMul(x, w, false, true), bias), tf.mul(tf.matMul(tf.matMul(x, a, false, true), b, false, true), SCALING));
}

export const loraSuite: Suite = {
  name: 'lora',
  cases: ({ quick }) => (quick ? loraCases('tiny', { rows: 2 * 17, k: 64, n: 64, r: 4 }) : loraCases('B/32 q/k/v/out', { rows: 1600, k: 768, n: 768, r: 4 })),
};
