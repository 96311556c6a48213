// activation.wgsl — elementwise erf, GELU (exact erf form) and QuickGELU, forward and backward.
// uses: lib/erf, lib/gelu
// dtypes: f32, f16
//
// Bindings (group 0), elements of the storage type T (f32 or f16; math in f32). Forward and
// backward entry points use different layouts; a binding number is reused across entry points,
// never inside one.
//   forward  (erf_forward, gelu_forward, quick_gelu_forward):
//     0  uniform P { n: u32 }   (padded to 16 bytes)
//     1  x:  array<T> (read)        n elements
//     2  y:  array<T> (write)       n elements
//   backward (erf_backward, gelu_backward, quick_gelu_backward):
//     0  uniform P { n: u32 }
//     1  x:  array<T> (read)        the saved forward input, n elements
//     2  g:  array<T> (read)        dL/dy, n elements
//     3  dx: array<T> (write)       dL/dx = g * f'(x), n elements
// The backward entry points are also the activation backward of matmul's fused epilogue
// (x = the saved pre-activation z; src/ops/activation.ts activationBackward).
//
// Math (erf and Phi from lib/erf, GELU and QuickGELU from lib/gelu):
//   erf:        y = erf(x)                              f'(x) = 2/sqrt(pi) * exp(-x^2)
//   gelu:       y = x * Phi(x)                          f'(x) = Phi(x) + x * phi(x)
//   quick_gelu: y = x * sigmoid(1.702 x)                f'(x) = s + 1.702 * x * s * (1 - s)
//
// Dispatch: 1-D over n, folded into y past 65535 workgroups: i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (workgroup size, default 256).

override WG: u32 = 256u;

struct P {
  n: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<storage, read> g: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;

const TWO_OVER_SQRT_PI: f32 = 1.1283791670955126;

fn flat(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn erf_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  y[i] = T(erf_approx(f32(x[i])));
}

@compute @workgroup_size(WG)
fn erf_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let xv = f32(x[i]);
  dx[i] = T(f32(g[i]) * TWO_OVER_SQRT_PI * exp(-xv * xv));
}

@compute @workgroup_size(WG)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  y[i] = T(gelu(f32(x[i])));
}

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  dx[i] = T(f32(g[i]) * gelu_deriv(f32(x[i])));
}

@compute @workgroup_size(WG)
fn quick_gelu_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  y[i] = T(quick_gelu(f32(x[i])));
}

@compute @workgroup_size(WG)
fn quick_gelu_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  dx[i] = T(f32(g[i]) * quick_gelu_deriv(f32(x[i])));
}
