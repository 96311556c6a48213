// lib/gelu.wgsl — GELU (exact erf form) and QuickGELU with their derivatives, in f32.
// uses: lib/erf
//
// Shared by activation.wgsl (the gelu / quickGelu ops) and lib/matmul_epilogue.wgsl (the fused
// activation of matmul / linear), so both compute the same values.
//
// Functions (no bindings, no overrides):
//   gelu(x)             = x * Phi(x)                  (PyTorch nn.GELU() default)
//   gelu_deriv(x)       = Phi(x) + x * phi(x),        phi(x) = exp(-x^2/2) / sqrt(2 pi)
//   quick_gelu(x)       = x * s,                       s = sigmoid(1.702 x)   (OpenAI CLIP)
//   quick_gelu_deriv(x) = s + 1.702 * x * s * (1 - s)
//   sigmoid(z)          exponentiates only -|z|, so it cannot overflow
// Phi is norm_cdf from lib/erf (|error| <= ~1e-7; relative accuracy kept in the left tail).

const INV_SQRT_2PI: f32 = 0.39894228040143268;
const QUICK_GELU_ALPHA: f32 = 1.702;

fn sigmoid(z: f32) -> f32 {
  let e = exp(-abs(z));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

fn gelu(x: f32) -> f32 {
  return x * norm_cdf(x);
}

fn gelu_deriv(x: f32) -> f32 {
  return norm_cdf(x) + x * (INV_SQRT_2PI * exp(-0.5 * x * x));
}

fn quick_gelu(x: f32) -> f32 {
  return x * sigmoid(QUICK_GELU_ALPHA * x);
}

fn quick_gelu_deriv(x: f32) -> f32 {
  let s = sigmoid(QUICK_GELU_ALPHA * x);
  return s + QUICK_GELU_ALPHA * x * s * (1.0 - s);
}
