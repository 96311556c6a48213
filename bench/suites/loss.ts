// Loss bench: the fused gen→real InfoNCE (src/ops/infonce.ts, GMAIL Eq. 1) at B = M = 256 and
// B = 32, M = 256 (a micro-batch against the effective batch's reals), D = 512, tau = 0.07;
// forward (the loss) and forward + backward (dL/dg; r is the frozen teacher and gets none).
//
// Rows per shape/pass: vs tfjs (g/‖g‖, r/‖r‖, matMul(ĝ, r̂ᵀ),
// mul(1/tau), logSoftmax, mean of the diagonal; fwd+bwd: tf.grads of it for g) and vs genalign's own composition
// l2Normalize → matmul(transB) → scale(1/tau) → crossEntropy ('genalign-composed').
// The JSON's `dispatches` (ours) and extra.peer_dispatches (the composition) count compute
// dispatches per run.
//
// max_abs_err: host float64 InfoNCE (forward: the loss; fwd+bwd: dL/dg).
// GFLOP/s counts the similarity product 2·B·M·D (forward) and twice that for forward + backward
// (dĝ = dS·r̂ is the second product); normalisation and softmax work is not counted.
import { infoNceGenToReal } from '../../src/ops/infonce.ts';
import { crossEntropy, l2Normalize, matmul, scale } from '../../src/ops/index.ts';
import { scope, type Tensor } from '../../src/tensor/tensor.ts';
import type { Peer, PeerTensor } from '../peer-tfjs.ts';
import { forwardBackward, maxAbsDiff, uniform, type BenchCase, type HostTensor, type Suite } from '../harness.ts';

export const TAU = 0.07;

function fusedLoss(g: Tensor, r: Tensor): Tensor {
  return scope(() => infoNceGenToReal(g, r, { tau: TAU }).loss);
}

function composedLoss(g: Tensor, r: Tensor): Tensor {
  const b = g.shape[0];
  return scope(() => crossEntropy(scale(matmul(l2Normalize(g), l2Normalize(r), { transB: true }), 1 / TAU), Array.from({ length: b }, (_, i) => i)));
}

function tfjsLoss(peer: Peer, g: PeerTensor, r: PeerTensor): PeerTensor {
  const tf = peer.tf;
  return tf.tidy(() => {
    const [b, m] = [g.shape[0], r.shape[0]];
    const gn = tf.div(g, tf.norm(g, 'euclidean', -1, true));
    const rn = tf.div(r, tf.norm(r, 'euclidean', -1, true));
    const logp = tf.logSoftmax(tf.mul(tf.matMul(gn, rn, false, true), 1 / TAU));
    return tf.neg(tf.div(tf.sum(tf.mul(logp, tf.oneHot(tf.range(0, b, 1, 'int32'), m))), b));
  });
}

/** Host float64 InfoNCE: [loss] or, with grad, dL/dg [B, D]. */
export function hostInfoNce(g: Float32Array, r: Float32Array, b: number, m: number, d: number, grad: boolean): Float64Array {
  const norm = (x: Float32Array, rows: number): Float64Array => {
    const out = new Float64Array(rows * d);
    for (let i = 0; i < rows; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += x[i * d + j] ** 2;
      const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
      for (let j = 0; j < d; j++) out[i * d + j] = x[i * d + j] * inv;
    }
    return out;
  };
  const gn = norm(g, b);
  const rn = norm(r, m);
  let loss = 0;
  const dg = new Float64Array(b * d);
  const row = new Float64Array(m);
  const dgn = new Float64Array(d);
  for (let i = 0; i < b; i++) {
    let mx = -Infinity;
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let kk = 0; kk < d; kk++) s += gn[i * d + kk] * rn[j * d + kk];
      row[j] = s / TAU;
      mx = Math.max(mx, row[j]);
    }
    let z = 0;
    for (let j = 0; j < m; j++) z += Math.exp(row[j] - mx);
    loss += (mx + Math.log(z) - row[i]) / b;
    if (!grad) continue;
    // dS_ij = (p_ij - [i == j]) / B; dĝ_i = Σ_j dS_ij r̂_j / tau; dg = (dĝ - ĝ(ĝ·dĝ)) / ‖g‖.
    dgn.fill(0);
    for (let j = 0; j < m; j++) {
      const ds = (Math.exp(row[j] - mx) / z - (i === j ? 1 : 0)) / (b * TAU);
      for (let kk = 0; kk < d; kk++) dgn[kk] += ds * rn[j * d + kk];
    }
    let dot = 0;
    let gnorm = 0;
    for (let kk = 0; kk < d; kk++) {
      dot += gn[i * d + kk] * dgn[kk];
      gnorm += g[i * d + kk] ** 2;
    }
    const inv = 1 / Math.max(Math.sqrt(gnorm), 1e-12);
    for (let kk = 0; kk < d; kk++) dg[i * d + kk] = (dgn[kk] - gn[i * d + kk] * dot) * inv;
  }
  return grad ? dg : Float64Array.of(loss);
}

function lossCases(b: number, m: number, d: number, backwardToo: boolean): BenchCase[] {
  const base = {
    kernel: 'infonce',
    variant: 'fused',
    shape: `${backwardToo ? 'fwd+bwd' : 'fwd'} B=${b} M=${m} D=${d}`,
    dtype: 'f32',
    flops: (backwardToo ? 4 : 2) * b * m * d,
    inputs: (): HostTensor[] => [
      { shape: [b, d], data: uniform(b * d, 71 + b) },
      { shape: [m, d], data: uniform(m * d, 73 + m) },
    ],
    run: backwardToo ? (t: Tensor[]) => forwardBackward(t, [true, false], ([g, r]) => fusedLoss(g, r)) : ([g, r]: Tensor[]) => fusedLoss(g, r),
    composed: backwardToo ? (t: Tensor[]) => forwardBackward(t, [true, false], ([g, r]) => composedLoss(g, r)) : ([g, r]: Tensor[]) => composedLoss(g, r),
    check: {
      reference: `host f64 InfoNCE (${backwardToo ? 'dL/dg' : 'loss'})`,
      maxAbsErr: (out: Float32Array, [g, r]: HostTensor[]) => maxAbsDiff(out, hostInfoNce(g.data, r.data, b, m, d, backwardToo)),
    },
  };
  const fwdPeer = (peer: Peer, [g, r]: PeerTensor[]): PeerTensor => tfjsLoss(peer, g, r);
  // fwd+bwd: tf.grads of the loss for g (the teacher r is frozen), upstream gradient 1.
  const bwdPeer = (peer: Peer, [g, r]: PeerTensor[]): PeerTensor[] => peer.tf.tidy(() => peer.grads(([gg]) => tfjsLoss(peer, gg, r), [g], peer.tf.scalar(1)));
  return [{ ...base, ...(backwardToo ? { peer: bwdPeer, peerNeedsGradients: true } : { peer: fwdPeer }) }, { ...base, peerKind: 'composed' }];
}

export const lossSuite: Suite = {
  name: 'loss',
  cases({ quick }) {
    const shapes: [number, number, number][] = quick
      ? [[4, 8, 32]]
      : [
          [256, 256, 512],
          [32, 256, 512],
        ];
    return shapes.flatMap(([b, m, d]) => [...lossCases(b, m, d, false), ...lossCases(b, m, d, true)]);
  },
};
