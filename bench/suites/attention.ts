// Attention bench: the fused flash-style attention (src/ops/attention.ts) on q, k, v [B, N, H, Dh]
// at the ViT-B/32 shape (N = 50 tokens, B = 8 images: batch 32 is too slow for lavapipe), the
// ViT-B/16 shape (N = 197, B = 2) and the ViT-L/14 shape (N = 257, 16 heads, B = 1), forward and
// forward + backward (dO is a fixed input; the gradients of q, k and v are returned).
//
// Each shape/pass gives two rows, each timing the fused op:
//   peer tfjs:     tfjs composing transpose → matMul(q, kᵀ) → mul(scale) → softmax → matMul(·, v) → transpose
//                  (fwd+bwd: tf.grads of it for q, k, v; see bench/peer-tfjs.ts for how tfjs's
//                  gradients are registered under Node);
//   peer composed: the same composition from genalign's own ops (permute, matmul, scale, softmax,
//                  matmul, permute) with autograd.
// max_abs_err is against the genalign composition's output (fwd: O; fwd+bwd: dQ, dK, dV).
// GFLOP/s counts 4·B·H·N²·Dh forward (QKᵀ and PV) and 12·B·H·N²·Dh forward + backward (plus dV,
// dP, dQ, dK; the fused backward's recomputation of QKᵀ is not counted), for every row and peer.
import { attention } from '../../src/ops/attention.ts';
import { permute, matmul, scale, softmax } from '../../src/ops/index.ts';
import { scope, type Tensor } from '../../src/tensor/tensor.ts';
import type { Peer, PeerTensor } from '../peer-tfjs.ts';
import { forwardBackward, uniform, type BenchCase, type Suite } from '../harness.ts';

interface Shape {
  label: string;
  b: number;
  n: number;
  h: number;
  dh: number;
}

/** Our composition: [B,N,H,Dh] → [B,H,N,Dh], softmax(s·QKᵀ)V, back to [B,N,H,Dh]. */
function composedAttention(q: Tensor, k: Tensor, v: Tensor, s: number): Tensor {
  return scope(() => {
    const [qh, kh, vh] = [q, k, v].map((t) => permute(t, [0, 2, 1, 3]));
    const p = softmax(scale(matmul(qh, kh, { transB: true }), s));
    return permute(matmul(p, vh), [0, 2, 1, 3]);
  });
}

function tfjsAttention(peer: Peer, q: PeerTensor, k: PeerTensor, v: PeerTensor, s: number): PeerTensor {
  const tf = peer.tf;
  const [qh, kh, vh] = [q, k, v].map((t) => tf.transpose(t, [0, 2, 1, 3]));
  const p = tf.softmax(tf.mul(tf.matMul(qh, kh, false, true), s));
  return tf.transpose(tf.matMul(p, vh), [0, 2, 1, 3]);
}

function attentionCases(sh: Shape, backwardToo: boolean, allVariants: boolean): BenchCase[] {
  const { b, n, h, dh } = sh;
  const s = dh ** -0.5;
  const size = b * n * h * dh;
  const shape = [b, n, h, dh];
  const all = [true, true, true, false];
  const base = {
    kernel: 'attention',
    variant: 'fused',
    // The pass is part of the shape label: rows of one label share one tfjs measurement.
    shape: `${backwardToo ? 'fwd+bwd' : 'fwd'} ${sh.label} B=${b} N=${n} H=${h} Dh=${dh}`,
    dtype: 'f32',
    flops: (backwardToo ? 12 : 4) * b * h * n * n * dh,
    // q, k, v in [-1, 1); dO (used by fwd+bwd only) in [-1, 1).
    inputs: () => [0, 1, 2, 3].map((i) => ({ shape, data: uniform(size, 101 + 7 * i + n) })),
    run: backwardToo
      ? (x: Tensor[]) => forwardBackward(x, all, ([q, k, v]) => attention(q, k, v, { scale: s }), x[3])
      : ([q, k, v]: Tensor[]) => attention(q, k, v, { scale: s }),
    composed: backwardToo
      ? (x: Tensor[]) => forwardBackward(x, all, ([q, k, v]) => composedAttention(q, k, v, s), x[3])
      : ([q, k, v]: Tensor[]) => composedAttention(q, k, v, s),
    check: 'composed' as const,
  };
  const fwdPeer = (peer: Peer, [q, k, v]: PeerTensor[]): PeerTensor => peer.tf.tidy(() => tfjsAttention(peer, q, k, v, s));
  // fwd+bwd: tf.grads of the same composition for q, k, v with dO as the upstream gradient.
  const bwdPeer = (peer: Peer, [q, k, v, dy]: PeerTensor[]): PeerTensor[] => peer.tf.tidy(() => peer.grads(([a, b, c]) => tfjsAttention(peer, a, b, c, s), [q, k, v], dy));
  const tfjsRow = backwardToo ? { peer: bwdPeer, peerNeedsGradients: true } : { peer: fwdPeer };
  const rows: BenchCase[] = [{ ...base, ...tfjsRow }, { ...base, peerKind: 'composed' }];
  // --all-variants: the split factor forced to 1, 2 and 4 (the automatic choice is the 'fused'
  // rows), each against the tfjs peer, to tune the GPU rule.
  for (const split of allVariants ? [1, 2, 4] : []) {
    rows.push({
      ...base,
      variant: `fused-split${split}`,
      run: backwardToo
        ? (x: Tensor[]) => forwardBackward(x, all, ([q, k, v]) => attention(q, k, v, { scale: s, split }), x[3])
        : ([q, k, v]: Tensor[]) => attention(q, k, v, { scale: s, split }),
      ...tfjsRow,
    });
  }
  return rows;
}

export const attentionSuite: Suite = {
  name: 'attention',
  cases({ quick, allVariants }) {
    const shapes: Shape[] = quick
      ? [{ label: 'tiny', b: 2, n: 17, h: 4, dh: 16 }]
      : [
          { label: 'B/32', b: 8, n: 50, h: 12, dh: 64 },
          { label: 'B/16', b: 2, n: 197, h: 12, dh: 64 },
          { label: 'L/14', b: 1, n: 257, h: 16, dh: 64 },
        ];
    return shapes.flatMap((sh) => [...attentionCases(sh, false, allVariants), ...attentionCases(sh, true, allVariants)]);
  },
};
