// LayerNorm bench: the fused layerNorm (src/ops/layernorm.ts) over the last dim of x [R, 768] at
// the ViT-B/32 token count of batch 32 (R = 32·50) and the ViT-B/16 count of batch 2 (R = 2·197),
// forward and forward + backward (dy a fixed input; the gradients of x, weight and bias returned).
//
// Rows per shape/pass: vs tfjs (tf.moments → sub → mul(rsqrt(var + eps)) → mul(w) →
// add(b); fwd+bwd: tf.grads of it for x, w, b) and vs genalign's own composition
// (peer 'genalign-composed'). genalign has no rsqrt op, so the composition normalises with
// l2Normalize: x̂ = √D·(x−μ)/max(‖x−μ‖, ε'), which equals (x−μ)/√(var+ε) up to ε (relative
// difference ≈ D·ε/(2‖x−μ‖²) ≈ 1.5e-5 at these inputs). Its steps: transpose → mean over rows →
// sub (broadcast over the leading dim) → transpose → l2Normalize → scale √D → mul(w) → add(b).
//
// max_abs_err: host float64 LayerNorm (forward: y; fwd+bwd: dx, dweight, dbias).
// GB/s counts the ideal traffic, each big tensor touched once: forward reads x and writes y
// (2·R·D floats), forward + backward also reads x and dy and writes dx (5·R·D floats).
import { layerNorm } from '../../src/ops/layernorm.ts';
import { add, l2Normalize, mean, mul, scale, sub, transpose } from '../../src/ops/index.ts';
import { scope, type Tensor } from '../../src/tensor/tensor.ts';
import type { Peer, PeerTensor } from '../peer-tfjs.ts';
import { forwardBackward, maxAbsDiff, uniform, type BenchCase, type HostTensor, type Suite } from '../harness.ts';

const EPS = 1e-5;

function composedLayerNorm(x: Tensor, w: Tensor, b: Tensor): Tensor {
  return scope(() => {
    const d = x.shape[1];
    const xt = transpose(x, 0, 1);
    const xc = transpose(sub(xt, mean(xt, 0)), 0, 1);
    return add(mul(scale(l2Normalize(xc), Math.sqrt(d)), w), b);
  });
}

function tfjsLayerNorm(peer: Peer, x: PeerTensor, w: PeerTensor, b: PeerTensor): PeerTensor {
  const tf = peer.tf;
  return tf.tidy(() => {
    const { mean: mu, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mu), tf.rsqrt(tf.add(variance, EPS))), w), b);
  });
}

/** Host float64 LayerNorm: y, and with dy also [dx, dweight, dbias] (concatenated in that order). */
function hostLayerNorm([x, w, b, dy]: HostTensor[], backwardToo: boolean): Float64Array {
  const [rows, d] = x.shape;
  const y = new Float64Array(rows * d);
  const dx = new Float64Array(rows * d);
  const dw = new Float64Array(d);
  const db = new Float64Array(d);
  const xhat = new Float64Array(d);
  for (let i = 0; i < rows; i++) {
    const o = i * d;
    let mu = 0;
    for (let j = 0; j < d; j++) mu += x.data[o + j];
    mu /= d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (x.data[o + j] - mu) ** 2;
    const rstd = 1 / Math.sqrt(v / d + EPS);
    for (let j = 0; j < d; j++) {
      xhat[j] = (x.data[o + j] - mu) * rstd;
      y[o + j] = xhat[j] * w.data[j] + b.data[j];
    }
    if (!backwardToo) continue;
    let m1 = 0;
    let m2 = 0;
    for (let j = 0; j < d; j++) {
      const gw = dy.data[o + j] * w.data[j];
      m1 += gw;
      m2 += gw * xhat[j];
      dw[j] += dy.data[o + j] * xhat[j];
      db[j] += dy.data[o + j];
    }
    for (let j = 0; j < d; j++) dx[o + j] = rstd * (dy.data[o + j] * w.data[j] - m1 / d - (xhat[j] * m2) / d);
  }
  if (!backwardToo) return y;
  const out = new Float64Array(rows * d + 2 * d);
  out.set(dx, 0);
  out.set(dw, rows * d);
  out.set(db, rows * d + d);
  return out;
}

function layerNormCases(label: string, rows: number, d: number, backwardToo: boolean): BenchCase[] {
  const needGrad = [true, true, true, false];
  const base = {
    kernel: 'layernorm',
    variant: 'fused',
    shape: `${backwardToo ? 'fwd+bwd' : 'fwd'} ${label} [${rows},${d}]`,
    dtype: 'f32',
    bytes: 4 * (backwardToo ? 5 : 2) * rows * d,
    inputs: (): HostTensor[] => [
      { shape: [rows, d], data: uniform(rows * d, 3 + rows) },
      { shape: [d], data: uniform(d, 5).map((v) => 1 + 0.1 * v) },
      { shape: [d], data: uniform(d, 7, 0.1) },
      { shape: [rows, d], data: uniform(rows * d, 9 + rows) },
    ],
    run: backwardToo
      ? (t: Tensor[]) => forwardBackward(t, needGrad, ([x, w, b]) => layerNorm(x, w, b, EPS), t[3])
      : ([x, w, b]: Tensor[]) => layerNorm(x, w, b, EPS),
    composed: backwardToo
      ? (t: Tensor[]) => forwardBackward(t, needGrad, ([x, w, b]) => composedLayerNorm(x, w, b), t[3])
      : ([x, w, b]: Tensor[]) => composedLayerNorm(x, w, b),
    check: {
      reference: 'host f64 LayerNorm',
      maxAbsErr: (out: Float32Array, host: HostTensor[]) => maxAbsDiff(out, hostLayerNorm(host, backwardToo)),
    },
  };
  const fwdPeer = (peer: Peer, [x, w, b]: PeerTensor[]): PeerTensor => tfjsLayerNorm(peer, x, w, b);
  // fwd+bwd: tf.grads for x, w, b with dy as the upstream gradient.
  const bwdPeer = (peer: Peer, [x, w, b, dy]: PeerTensor[]): PeerTensor[] => peer.tf.tidy(() => peer.grads(([xx, ww, bb]) => tfjsLayerNorm(peer, xx, ww, bb), [x, w, b], dy));
  return [{ ...base, ...(backwardToo ? { peer: bwdPeer, peerNeedsGradients: true } : { peer: fwdPeer }) }, { ...base, peerKind: 'composed' }];
}

export const layernormSuite: Suite = {
  name: 'layernorm',
  cases({ quick }) {
    const shapes: [string, number, number][] = quick
      ? [['tiny', 2 * 17, 64]]
      : [
          ['B/32 B=32', 32 * 50, 768],
          ['B/16 B=2', 2 * 197, 768],
        ];
    return shapes.flatMap(([label, rows, d]) => [...layerNormCases(label, rows, d, false), ...layerNormCases(label, rows, d, true)]);
  },
};
