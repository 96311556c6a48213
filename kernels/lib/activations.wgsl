// lib/activations.wgsl — the activation functions and their derivatives, in f32, picked by the
// override ACT: the same code for the activation ops (activation.wgsl) and for the activation
// fused into matmul's epilogue (lib/matmul_epilogue), so both compute the same values.
// uses: lib/erf
//
// Override it declares: ACT (u32): 0 identity, 1 GELU, 2 QuickGELU, 3 erf
//   (ACT_CODE in src/ops/activation.ts).
// Functions (no bindings):
//   act_fwd(x)    f(x)       act_deriv(x)   f'(x)      for the function ACT picks:
//   GELU:         x * Phi(x)                           Phi(x) + x * phi(x)     (PyTorch nn.GELU())
//   QuickGELU:    x * s, s = sigmoid(1.702 x)          s + 1.702 * x * s * (1 - s)   (OpenAI CLIP)
//   erf:          erf(x)                               2/sqrt(pi) * exp(-x^2)
//   with phi(x) = exp(-x^2/2) / sqrt(2 pi); Phi and erf from lib/erf (|error| <= ~1e-7, and
//   Phi keeps its relative accuracy in the left tail). sigmoid(z) exponentiates only -|z|, so it
//   cannot overflow.

override ACT: u32 = 0u;

const INV_SQRT_2PI: f32 = 0.39894228040143268;
const TWO_OVER_SQRT_PI: f32 = 1.1283791670955126;
const QUICK_GELU_ALPHA: f32 = 1.702;

fn sigmoid(z: f32) -> f32 {
  let e = exp(-abs(z));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

fn act_fwd(x: f32) -> f32 {
  switch ACT {
    case 1u: { return x * norm_cdf(x); }
    case 2u: { return x * sigmoid(QUICK_GELU_ALPHA * x); }
    case 3u: { return erf_approx(x); }
    default: { return x; }
  }
}

fn act_deriv(x: f32) -> f32 {
  switch ACT {
    case 1u: { return norm_cdf(x) + x * (INV_SQRT_2PI * exp(-0.5 * x * x)); }
    case 2u: {
      let s = sigmoid(QUICK_GELU_ALPHA * x);
      return s + QUICK_GELU_ALPHA * x * s * (1.0 - s);
    }
    case 3u: { return TWO_OVER_SQRT_PI * exp(-x * x); }
    default: { return 1.0; }
  }
}
