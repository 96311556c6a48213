// permute / transpose (kernels/permute.wgsl): a strided copy into a new contiguous tensor,
// with backward (the gradient permuted by the inverse permutation). f32 and f16 tensors; the
// output and the gradient keep the dtype.
import { Tensor, shapeStr } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, F32_F16, grid1d, normAxis, params } from './util.ts';

const WG = 256;
/** The uniform holds 8 dims; 6 is the supported maximum (ViT needs at most 5). */
const MAX_RANK = 6;

/** Copies x into out = x.permute(perm); perm is already validated and non-negative. */
function permuteRaw(x: Tensor, perm: readonly number[]): Tensor {
  const device = x.device;
  const rank = perm.length;
  const outShape = perm.map((d) => x.shape[d]);
  const out = Tensor.empty(outShape, device, x.dtype);
  if (out.size === 0) return out;
  const inStrides: number[] = new Array(rank);
  let s = 1;
  for (let d = rank - 1; d >= 0; d--) {
    inStrides[d] = s;
    s *= x.shape[d];
  }
  const shape8 = [...outShape, ...new Array(8 - rank).fill(1)];
  const stride8 = [...perm.map((d) => inStrides[d]), ...new Array(8 - rank).fill(0)];
  device.batch.dispatch({ file: 'permute', entry: 'main', dtype: x.dtype }, params([out.size, rank, 0, 0, ...shape8, ...stride8]), [x.buffer], [out.buffer], grid1d(device, out.size, WG));
  return out;
}

function isIdentity(perm: readonly number[]): boolean {
  return perm.every((d, i) => d === i);
}

/** Reorders the dims of x like torch.permute; the result is a contiguous copy (rank <= 6). */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  checkInputs('permute', { x }, F32_F16);
  const rank = x.shape.length;
  const bad = (why: string): Error => new Error(`permute: dims [${dims.join(', ')}] ${why} for x=${shapeStr(x.shape)}`);
  if (rank > MAX_RANK) throw new Error(`permute: rank ${rank} of x=${shapeStr(x.shape)} exceeds the supported maximum ${MAX_RANK}`);
  if (dims.length !== rank) throw bad(`must list ${rank} dims (one per dim of x)`);
  const perm = dims.map((d) => {
    if (!Number.isInteger(d) || d < -rank || d >= rank) throw bad(`has ${d}, out of range for rank ${rank}`);
    return d < 0 ? d + rank : d;
  });
  if (new Set(perm).size !== rank) throw bad('is not a permutation (a dim repeats)');
  const inverse = new Array<number>(rank);
  perm.forEach((d, i) => (inverse[d] = i));
  // The identity still copies: callers may write into the result, and outputs never alias inputs
  // except through reshape.
  const out = permuteRaw(x, perm);
  return record('permute', [x], out, [], (g) => [isIdentity(inverse) ? g.view() : permuteRaw(g, inverse)]);
}

/** Swaps two dims (a permute); negative dims count from the end. */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  checkInputs('transpose', { x }, F32_F16);
  const rank = x.shape.length;
  const a = normAxis('transpose', dim0, rank);
  const b = normAxis('transpose', dim1, rank);
  const perm = x.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}
