// add / sub / mul with broadcasting over leading dims (kernels/elementwise.wgsl), with backward.
// The smaller operand's shape must be a suffix of the larger one's: x[B,N,D] + bias[D] is a
// bias add, x[B,N,D] + pos[N,D] adds a position table to every batch element.
// f32 and f16 tensors (f16 storage, f32 math; f16 needs 'shader-f16'); both operands share one
// dtype, which is the output's and the gradients'.
import { Tensor, shapeStr } from '../tensor/tensor.ts';
import { record, setGradAccumulator } from '../tensor/autograd.ts';
import { checkInputsOneDtype, grid1d, params, shapeError } from './util.ts';
import { sumToShape } from './reduce.ts';
import { affine } from './scale.ts';

const WG = 256;

type BinaryKind = 'add' | 'sub' | 'mul';

/** The OP override of kernels/elementwise.wgsl. */
const OP_CODE: Record<BinaryKind | 'axpy', number> = { add: 0, sub: 1, mul: 2, axpy: 3 };

function isSuffix(small: readonly number[], big: readonly number[]): boolean {
  if (small.length > big.length) return false;
  const off = big.length - small.length;
  return small.every((d, i) => d === big[off + i]);
}

function broadcastShape(op: string, a: Tensor, b: Tensor): readonly number[] {
  if (isSuffix(b.shape, a.shape)) return a.shape;
  if (isSuffix(a.shape, b.shape)) return b.shape;
  throw shapeError(op, 'shapes do not broadcast: the smaller shape must equal the trailing dims of the larger', { a, b });
}

function binaryRaw(kind: BinaryKind | 'axpy', a: Tensor, b: Tensor, outShape: readonly number[], alpha = 0): Tensor {
  const device = a.device;
  if (a.dtype !== b.dtype) {
    // Reached only from backward, with a gradient whose dtype is not its tensor's.
    throw new Error(`${kind}: operands are ${a.dtype} and ${b.dtype}; a gradient must have its tensor's dtype (pass backward() a gradOutput of the output's dtype)`);
  }
  const out = Tensor.empty(outShape, device, a.dtype);
  if (out.size === 0) return out;
  // The vec4 entry point when every size is a multiple of 4 (indices then count vec4s). Buffers
  // hold whole tensors from offset 0, so a vec4 of either dtype (16 or 8 bytes) is aligned.
  const v = out.size % 4 === 0 && a.size % 4 === 0 && b.size % 4 === 0 ? 4 : 1;
  device.batch.dispatch(
    { file: 'elementwise', entry: v === 4 ? 'binary4' : 'binary', dtype: a.dtype, overrides: { OP: OP_CODE[kind] } },
    params([out.size / v, a.size / v, b.size / v, 0], [alpha]),
    [a.buffer, b.buffer],
    [out.buffer],
    grid1d(device, out.size / v, WG),
  );
  return out;
}

function binary(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  checkInputsOneDtype(kind, { a, b });
  const outShape = broadcastShape(kind, a, b);
  const out = binaryRaw(kind, a, b, outShape);
  const aShape = a.shape;
  const bShape = b.shape;
  const saved = kind === 'mul' ? [a, b] : [];
  return record(kind, [a, b], out, saved, (g, s) => {
    if (kind === 'add') return [sumToShape(g, aShape), sumToShape(g, bShape)];
    if (kind === 'sub') {
      const gb = sumToShape(g, bShape);
      const neg = affine(gb, -1);
      gb.dispose();
      return [sumToShape(g, aShape), neg];
    }
    const [sa, sb] = s;
    const gaFull = binaryRaw('mul', g, sb, outShape);
    const gbFull = binaryRaw('mul', g, sa, outShape);
    const ga = sumToShape(gaFull, aShape);
    const gb = sumToShape(gbFull, bShape);
    gaFull.dispose();
    gbFull.dispose();
    return [ga, gb];
  });
}

/** a + b, broadcasting the smaller operand over leading dims. */
export function add(a: Tensor, b: Tensor): Tensor {
  return binary('add', a, b);
}

/** a - b, broadcasting the smaller operand over leading dims. */
export function sub(a: Tensor, b: Tensor): Tensor {
  return binary('sub', a, b);
}

/** a * b (elementwise), broadcasting the smaller operand over leading dims. */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binary('mul', a, b);
}

/** x + bias with bias [D] over the last dim of x (an alias of add that checks the bias shape). */
export function biasAdd(x: Tensor, bias: Tensor): Tensor {
  checkInputsOneDtype('biasAdd', { x, bias });
  if (bias.shape.length !== 1 || bias.shape[0] !== x.shape[x.shape.length - 1]) {
    throw shapeError('biasAdd', `bias must be [${x.shape[x.shape.length - 1]}] (the last dim of x)`, { x, bias });
  }
  return binary('add', x, bias);
}

/** a + alpha * b without autograd (optimizer updates, gradient accumulation). */
export function axpyNoGrad(a: Tensor, b: Tensor, alpha: number): Tensor {
  checkInputsOneDtype('axpy', { a, b });
  if (a.size !== b.size) throw new Error(`axpy: sizes differ: ${shapeStr(a.shape)} vs ${shapeStr(b.shape)}`);
  return binaryRaw('axpy', a, b, a.shape, alpha);
}

setGradAccumulator((a, b) => axpyNoGrad(a, b, 1));
