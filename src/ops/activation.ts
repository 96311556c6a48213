// Elementwise activations (kernels/activation.wgsl), with backward: gelu (exact erf form, as
// PyTorch's default nn.GELU), quickGelu (x * sigmoid(1.702 x), as OpenAI CLIP) and erf.
// Backward uses the saved input x. f32 and f16 tensors (f16 storage, f32 math; f16 needs the
// device's 'shader-f16'); the output has the input's dtype.
// activationBackward is the same backward for ops that fuse an activation into their own
// kernel and save its input (matmul / linear, loraLinear).
import { Tensor } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import { checkInputs, grid1d, params, shapeError, F32_F16 } from './util.ts';

const WG = 256;

/** The activation a fused matmul epilogue applies ('none': the identity). */
export type Activation = 'none' | 'gelu' | 'quick_gelu';

/** Every Activation, for checking a caller's string. */
export const ACTIVATIONS: readonly Activation[] = ['none', 'gelu', 'quick_gelu'];

type ActivationKind = Activation | 'erf';

/** The ACT override of kernels/lib/activations.wgsl (also the matmul epilogue's). */
export const ACT_CODE: Record<ActivationKind, number> = { none: 0, gelu: 1, quick_gelu: 2, erf: 3 };

/** forward: y = f(x) from inputs [x]; backward: dx = g * f'(x) from inputs [x, g]. */
function dispatchUnary(entry: 'forward' | 'backward', kind: ActivationKind, inputs: Tensor[]): Tensor {
  const [x] = inputs;
  const device = x.device;
  const out = Tensor.empty(x.shape, device, x.dtype);
  if (out.size === 0) return out;
  device.batch.dispatch(
    { file: 'activation', entry, dtype: x.dtype, overrides: { ACT: ACT_CODE[kind] } },
    params([out.size]),
    inputs.map((t) => t.buffer),
    [out.buffer],
    grid1d(device, out.size, WG),
  );
  return out;
}

function activation(op: string, kind: ActivationKind, x: Tensor): Tensor {
  checkInputs(op, { x }, F32_F16);
  const y = dispatchUnary('forward', kind, [x]);
  return record(op, [x], y, [x], (g, [xs]) => [dispatchUnary('backward', kind, [xs, g])]);
}

/** GELU, exact form x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)) (PyTorch's nn.GELU() default). */
export function gelu(x: Tensor): Tensor {
  return activation('gelu', 'gelu', x);
}

/** QuickGELU, x * sigmoid(1.702 x), the activation of OpenAI's CLIP checkpoints. */
export function quickGelu(x: Tensor): Tensor {
  return activation('quickGelu', 'quick_gelu', x);
}

/** The error function, elementwise (max abs error ~1e-7; see kernels/lib/erf.wgsl). */
export function erf(x: Tensor): Tensor {
  return activation('erf', 'erf', x);
}

/**
 * dL/dz = dy ⊙ act'(z) for y = act(z), where z is the activation's saved input (a fused
 * matmul's pre-activation). No recording: it is a piece of other ops' backward.
 */
export function activationBackward(dy: Tensor, z: Tensor, act: Exclude<Activation, 'none'>): Tensor {
  if (dy.shape.join(',') !== z.shape.join(',') || dy.dtype !== z.dtype) {
    throw shapeError('activationBackward', `dy and z must have one shape and dtype (got ${dy.dtype} and ${z.dtype})`, { dy, z });
  }
  return dispatchUnary('backward', act, [z, dy]);
}
