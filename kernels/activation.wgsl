// activation.wgsl — elementwise erf, GELU (exact erf form) and QuickGELU, forward and backward.
//
// Bindings (group 0). Forward and backward entry points use different layouts; a binding
// number is reused across entry points, never inside one.
//   forward  (erf_forward, gelu_forward, quick_gelu_forward):
//     0  uniform P { n: u32 }   (padded to 16 bytes)
//     1  x:  array<f32> (read)        n elements
//     2  y:  array<f32> (write)       n elements
//   backward (erf_backward, gelu_backward, quick_gelu_backward):
//     0  uniform P { n: u32 }
//     1  x:  array<f32> (read)        the saved forward input, n elements
//     2  g:  array<f32> (read)        dL/dy, n elements
//     3  dx: array<f32> (write)       dL/dx = g * f'(x), n elements
//
// Math:
//   erf:        y = erf(x)                              f'(x) = 2/sqrt(pi) * exp(-x^2)
//   gelu:       y = x * Phi(x),  Phi(x) = (1 + erf(x/sqrt2)) / 2     (PyTorch nn.GELU() default)
//               f'(x) = Phi(x) + x * phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
//   quick_gelu: y = x * sigmoid(1.702 x)                (OpenAI CLIP)
//               f'(x) = s + 1.702 * x * s * (1 - s),  s = sigmoid(1.702 x)
//
// erf approximation (WGSL has no erf). Coefficients were fitted for genalign (weighted
// least squares iterated towards minimax, Lawson's method, in float64 against mpmath), then
// rounded to f32. With a = |x|:
//   a < 1:        erf(x)  = x + x * A(x^2)                  A: degree 6 in x^2
//                           (the correction A = erf(x)/x - 1 is small, so the final add is
//                            nearly exact: this is what keeps the error near 1 ulp)
//   1 <= a < 3:   erfc(a) = exp(-a^2) * B(1/a)              B: degree 9 in 1/a
//   3 <= a < 10:  erfc(a) = exp(-a^2) * C(1/a)              C: degree 9 in 1/a
//   a >= 10:      erfc(a) = 0 (below the smallest f32)
// Fit error in exact arithmetic: A 1.2e-9 relative, B 2.5e-9, C 1.3e-11 relative (of erfc).
// Evaluated in f32 (emulated with correctly rounded exp over 5M points in [0, 10]) the max abs
// error of erf is 7.9e-8 (1.3 ulp near erf(x) ~ 0.84); test/ops/nn.test.ts checks the GPU
// result against float64 erf at <= 1.2e-7 abs (the GPU's exp may be a few ulp off).
// Phi(x) for x < 0 uses erfc directly, so GELU keeps its relative accuracy in the left tail
// (down to x ~ -13) instead of cancelling 1 + erf(x/sqrt2).
//
// Dispatch: 1-D over n, folded into y past 65535 workgroups: i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (workgroup size, default 256).

override WG: u32 = 256u;

struct P {
  n: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

const INV_SQRT2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;
const TWO_OVER_SQRT_PI: f32 = 1.1283791670955126;
const QUICK_GELU_ALPHA: f32 = 1.702;

// A(t) = erf(x)/x - 1 with t = x^2, |x| < 1.
fn erf_small_correction(t: f32) -> f32 {
  var r = 7.853887655e-05;
  r = r * t - 8.010202437e-04;
  r = r * t + 5.188328680e-03;
  r = r * t - 2.685381286e-02;
  r = r * t + 1.128358543e-01;
  r = r * t - 3.761262596e-01;
  r = r * t + 1.283791661e-01;
  return r;
}

// erfc(a) for a >= 1 (a >= 10 gives 0). B and C share one Horner loop through select().
fn erfc_tail(a: f32) -> f32 {
  if (a >= 10.0) { return 0.0; }
  let v = 1.0 / a;
  let far = a >= 3.0;
  var r = select(1.479702722e-02, -9.094523191e-01, far);
  r = r * v + select(-8.639059961e-02, 1.724779725e+00, far);
  r = r * v + select(1.993069351e-01, -1.010354877e+00, far);
  r = r * v + select(-1.866428703e-01, -2.257211953e-01, far);
  r = r * v + select(-8.550428599e-02, 5.068183541e-01, far);
  r = r * v + select(4.260013700e-01, -1.659851335e-02, far);
  r = r * v + select(-4.530129433e-01, -2.800715864e-01, far);
  r = r * v + select(3.968670219e-02, -1.518576028e-04, far);
  r = r * v + select(5.590538383e-01, 5.641960502e-01, far);
  r = r * v + select(2.884058340e-04, -1.194749899e-07, far);
  return exp(-a * a) * r;
}

fn erf_approx(xv: f32) -> f32 {
  let a = abs(xv);
  if (a < 1.0) {
    return xv + xv * erf_small_correction(xv * xv);
  }
  return sign(xv) * (1.0 - erfc_tail(a));
}

// Standard normal CDF.
fn norm_cdf(xv: f32) -> f32 {
  let z = xv * INV_SQRT2;
  let a = abs(z);
  if (a < 1.0) {
    return 0.5 + 0.5 * (z + z * erf_small_correction(z * z));
  }
  let tail = 0.5 * erfc_tail(a);
  return select(1.0 - tail, tail, z < 0.0);
}

fn sigmoid(z: f32) -> f32 {
  // Never exponentiates a positive number, so it cannot overflow.
  let e = exp(-abs(z));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

fn flat(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn erf_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  y[i] = erf_approx(x[i]);
}

@compute @workgroup_size(WG)
fn erf_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let xv = x[i];
  dx[i] = g[i] * TWO_OVER_SQRT_PI * exp(-xv * xv);
}

@compute @workgroup_size(WG)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let xv = x[i];
  y[i] = xv * norm_cdf(xv);
}

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let xv = x[i];
  let pdf = INV_SQRT_2PI * exp(-0.5 * xv * xv);
  dx[i] = g[i] * (norm_cdf(xv) + xv * pdf);
}

@compute @workgroup_size(WG)
fn quick_gelu_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let xv = x[i];
  y[i] = xv * sigmoid(QUICK_GELU_ALPHA * xv);
}

@compute @workgroup_size(WG)
fn quick_gelu_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let xv = x[i];
  let s = sigmoid(QUICK_GELU_ALPHA * xv);
  dx[i] = g[i] * (s + QUICK_GELU_ALPHA * xv * s * (1.0 - s));
}
