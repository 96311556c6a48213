// Mean softmax cross-entropy over a batch (kernels/cross_entropy.wgsl), with backward.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, grid1d, params, shapeError } from './util.ts';

const KERNEL = 'cross_entropy';

/** Workgroup size for one row of n elements: a power of two in [32, 256] (the WGSL default is 256). */
function rowWorkgroup(n: number): { WG: number } | undefined {
  const wg = Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
  return wg === 256 ? undefined : { WG: wg };
}

/**
 * Mean over the batch of -log_softmax(logits)[i, t_i], like torch.nn.functional.cross_entropy.
 * logits [B, C]; targets B class indices in [0, C). Returns a scalar (shape []) tensor.
 * Backward: dlogits = dloss * (softmax(logits) - onehot(targets)) / B.
 */
export function crossEntropy(logits: Tensor, targets: readonly number[] | Int32Array): Tensor {
  const device = checkInputs('crossEntropy', { logits });
  if (logits.shape.length !== 2) throw shapeError('crossEntropy', 'logits must be [B, C]', { logits });
  const [b, c] = logits.shape;
  if (b === 0 || c === 0) throw shapeError('crossEntropy', 'logits must have at least one row and one class', { logits });
  if (targets.length !== b) throw new Error(`crossEntropy: got ${targets.length} targets for ${b} logit rows (logits=[${b}, ${c}]); pass one class index per row`);
  const tgt = new Int32Array(b);
  for (let i = 0; i < b; i++) {
    const v = targets[i];
    if (!Number.isInteger(v) || v < 0 || v >= c) throw new Error(`crossEntropy: targets[${i}] = ${v} is not a class index in [0, ${c}) (logits=[${b}, ${c}])`);
    tgt[i] = v;
  }
  // The class indices travel as i32 bits in a (f32-typed) tensor so their lifetime is managed.
  const targetBuf = Tensor.empty([b], device);
  device.batch.upload(targetBuf.buffer, tgt);
  const rowstat = Tensor.empty([b, 2], device);
  const loss = Tensor.empty([], device);
  const u = params([b, c]);
  const overrides = rowWorkgroup(c);
  device.batch.dispatch({ file: KERNEL, entry: 'forward_rows', overrides }, u, [logits.buffer, targetBuf.buffer], [rowstat.buffer], grid1d(device, b, 1));
  device.batch.dispatch({ file: KERNEL, entry: 'mean_loss', overrides: rowWorkgroup(b) }, u, [rowstat.buffer], [loss.buffer], [1]);
  const out = record('crossEntropy', [logits], loss, [logits, targetBuf, rowstat], (g, [sl, st, sr]) => {
    const dl = Tensor.empty(sl.shape, g.device);
    g.device.batch.dispatch({ file: KERNEL, entry: 'backward_rows', overrides }, u, [sl.buffer, st.buffer, sr.buffer, g.buffer], [dl.buffer], grid1d(g.device, b, 1));
    return [dl];
  });
  targetBuf.dispose();
  rowstat.dispose();
  return out;
}
