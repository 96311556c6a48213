// Elementwise activations (kernels/activation.wgsl), with backward: gelu (exact erf form, as
// PyTorch's default nn.GELU), quickGelu (x * sigmoid(1.702 x), as OpenAI CLIP) and erf.
// Backward uses the saved input x.
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, grid1d, params } from './util.ts';

const WG = 256;

type ActivationKind = 'erf' | 'gelu' | 'quick_gelu';

function dispatchUnary(entry: string, inputs: Tensor[], shape: readonly number[]): Tensor {
  const device = inputs[0].device;
  const out = Tensor.empty(shape, device);
  if (out.size === 0) return out;
  device.batch.dispatch({ file: 'activation', entry }, params([out.size]), inputs.map((t) => t.buffer), [out.buffer], grid1d(device, out.size, WG));
  return out;
}

function activation(op: string, kind: ActivationKind, x: Tensor): Tensor {
  checkInputs(op, { x });
  const y = dispatchUnary(`${kind}_forward`, [x], x.shape);
  return record(op, [x], y, [x], (g, [xs]) => [dispatchUnary(`${kind}_backward`, [xs, g], xs.shape)]);
}

/** GELU, exact form x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)) (PyTorch's nn.GELU() default). */
export function gelu(x: Tensor): Tensor {
  return activation('gelu', 'gelu', x);
}

/** QuickGELU, x * sigmoid(1.702 x), the activation of OpenAI's CLIP checkpoints. */
export function quickGelu(x: Tensor): Tensor {
  return activation('quickGelu', 'quick_gelu', x);
}

/** The error function, elementwise (max abs error ~1e-7; see kernels/activation.wgsl). */
export function erf(x: Tensor): Tensor {
  return activation('erf', 'erf', x);
}
