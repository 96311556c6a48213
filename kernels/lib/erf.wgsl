// lib/erf.wgsl — the error function and the standard normal CDF, in f32 (WGSL has no erf).
// The one erf of genalign: activation.wgsl (erf, GELU) and the matmul epilogue (fused GELU)
// both call these functions, so a fused and an unfused GELU compute the same values.
//
// Functions (no bindings, no overrides):
//   erf_approx(x)   erf(x)
//   norm_cdf(x)     Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF
//   erfc_tail(a)    erfc(a) for a >= 1
//
// Approximation. Coefficients were fitted for genalign (weighted least squares iterated towards
// minimax, Lawson's method, in float64 against mpmath), then rounded to f32. With a = |x|:
//   a < 1:        erf(x)  = x + x * A(x^2)                  A: degree 6 in x^2
//                           (the correction A = erf(x)/x - 1 is small, so the final add is
//                            nearly exact: this is what keeps the error near 1 ulp)
//   1 <= a < 3:   erfc(a) = exp(-a^2) * B(1/a)              B: degree 9 in 1/a
//   3 <= a < 10:  erfc(a) = exp(-a^2) * C(1/a)              C: degree 9 in 1/a
//   a >= 10:      erfc(a) = 0 (below the smallest f32)
// B and C share one Horner loop through select(), so there is no divergent branch between them.
// Fit error in exact arithmetic: A 1.2e-9 relative, B 2.5e-9, C 1.3e-11 relative (of erfc).
// Error bound in f32: |erf_approx(x) - erf(x)| <= 7.9e-8 (1.3 ulp near erf(x) ~ 0.84; numpy
// f32 emulation with a correctly rounded exp over 5M points in [0, 10]); a GPU's exp may be a
// few ulp off, and test/ops/nn.test.ts checks the GPU result against float64 erf at <= 1.2e-7.
// norm_cdf uses erfc directly for x < 0, so Phi (and GELU) keep their relative accuracy in the
// left tail (down to x ~ -13) instead of cancelling 1 + erf(x / sqrt 2).

const INV_SQRT2: f32 = 0.70710678118654752;

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

// erfc(a) for a >= 1 (a >= 10 gives 0).
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

fn erf_approx(x: f32) -> f32 {
  let a = abs(x);
  if (a < 1.0) {
    return x + x * erf_small_correction(x * x);
  }
  return sign(x) * (1.0 - erfc_tail(a));
}

// Standard normal CDF.
fn norm_cdf(x: f32) -> f32 {
  let z = x * INV_SQRT2;
  let a = abs(z);
  if (a < 1.0) {
    return 0.5 + 0.5 * (z + z * erf_small_correction(z * z));
  }
  let tail = 0.5 * erfc_tail(a);
  return select(1.0 - tail, tail, z < 0.0);
}
