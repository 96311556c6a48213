// reshape: a view sharing storage (no kernel); backward reshapes the gradient back.
import type { Tensor } from '../tensor/tensor.ts';
import { shapeStr } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, product, F32_F16 } from './util.ts';

/** Same data, new shape. One dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  checkInputs('reshape', { x }, F32_F16);
  const unknown = shape.filter((d) => d === -1).length;
  if (unknown > 1) throw new Error(`reshape: at most one -1 allowed in ${shapeStr(shape)}`);
  let resolved = [...shape];
  if (unknown === 1) {
    const known = product(shape.filter((d) => d !== -1));
    if (known === 0 || x.size % known !== 0) throw new Error(`reshape: cannot infer -1 in ${shapeStr(shape)} for ${x.describe()}`);
    resolved = shape.map((d) => (d === -1 ? x.size / known : d));
  }
  if (product(resolved) !== x.size) {
    throw new Error(`reshape: ${x.describe()} has ${x.size} elements, target ${shapeStr(shape)} has ${product(resolved)}`);
  }
  const out = x.view(resolved);
  const inShape = x.shape;
  return record('reshape', [x], out, [], (g) => [g.view(inShape)]);
}
